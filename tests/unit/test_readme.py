"""The README documents every option and every metric the service has."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.config import (
    BenchSettings,
    LagSettings,
    ProduceSettings,
    RunSettings,
    TopicsSettings,
    flag_name,
    option_fields,
)
from stream.metrics import Metrics

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "cls", [RunSettings, ProduceSettings, TopicsSettings, LagSettings, BenchSettings]
)
def test_every_option_is_in_the_readme(cls: type) -> None:
    missing = [
        flag_name(f.name) for f in option_fields(cls) if f"`{flag_name(f.name)}" not in README
    ]
    assert missing == []


def test_every_metric_is_in_the_readme() -> None:
    metrics = Metrics("identity", "in", "out", "in.dlq")
    names = set()
    for family in metrics.registry.collect():
        if not family.name.startswith("stream_"):
            continue
        suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
        names.add(family.name + suffix)
    assert names
    assert sorted(n for n in names if f"`{n}" not in README) == []
