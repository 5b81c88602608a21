"""The README documents every option and every metric the service has; its example code
is the real files, and the documents it links to exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stream.config import (
    BenchSettings,
    LagSettings,
    ProduceSettings,
    RunSettings,
    TopicsSettings,
    TrySettings,
    flag_name,
    option_fields,
)
from stream.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# <!-- file: PATH --> right before a fenced block: the block is that file, verbatim.
EMBEDDED = re.compile(r"<!-- file: (\S+) -->\n```[a-z]*\n(.*?)```", re.DOTALL)


@pytest.mark.parametrize(
    "cls", [RunSettings, ProduceSettings, TopicsSettings, LagSettings, BenchSettings, TrySettings]
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


def test_the_readme_example_code_is_the_real_files() -> None:
    blocks = EMBEDDED.findall(README)
    paths = [path for path, _ in blocks]
    assert {
        "transforms/examples/celsius.py",
        "tests/example_transform/test_celsius.py",
        "deploy/examples/Dockerfile.transform",
    } <= set(paths)
    for path, block in blocks:
        assert block == (ROOT / path).read_text(encoding="utf-8"), f"README's copy of {path}"


def test_every_markdown_link_to_a_file_of_the_repository_resolves() -> None:
    for document in (ROOT / "README.md", ROOT / "deploy" / "README.md"):
        text = document.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            assert (document.parent / target).exists(), f"{document.name}: {target}"
    assert "(deploy/README.md" in README
    assert "(tests/bench/README.md)" in README


def test_the_readme_is_a_guide_and_the_lab_notes_live_beside_their_subject() -> None:
    assert len(README.encode()) < 45_000  # a guide; long notes live beside their subject
    bench = (ROOT / "tests" / "bench" / "README.md").read_text(encoding="utf-8")
    assert "Why the misses" in bench
    assert "Why the misses" not in README
    deploy = (ROOT / "deploy" / "README.md").read_text(encoding="utf-8")
    assert "## Kubernetes" in deploy
    assert "no SASL/TLS options" not in deploy + README
