"""The documents stay true to the code: the configuration reference is what the option
declarations make, the metrics page names every metric with its type and labels, the
README's example code is the real files, its `make help` list is the Makefile's, its
tutorial is well formed (the broker test runs it), and every link resolves."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

from stream.cli_args import build_parser
from stream.config import (
    BenchSettings,
    DbSettings,
    LagSettings,
    ProduceSettings,
    RunSettings,
    TopicsSettings,
    TrySettings,
    flag_name,
    option_fields,
)
from stream.config.reference import anchor, commands, render
from stream.metrics import Metrics, WindowMetrics
from tests.readme_tutorial import long_running, tutorial

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
REFERENCE = ROOT / "stream" / "config" / "REFERENCE.md"
METRICS = ROOT / "stream" / "METRICS.md"
DOCUMENTS = (
    ROOT / "README.md",
    ROOT / "deploy" / "README.md",
    ROOT / "tests" / "bench" / "README.md",
    METRICS,
    REFERENCE,
    ROOT / "stream" / "enrich" / "README.md",
)
# <!-- file: PATH --> right before a fenced block: the block is that file, verbatim.
EMBEDDED = re.compile(r"<!-- file: (\S+) -->\n```[a-z]*\n(.*?)```", re.DOTALL)


def test_the_configuration_reference_is_what_the_declarations_make() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == render(), (
        "run: python -m stream.config.reference > stream/config/REFERENCE.md"
    )


@pytest.mark.parametrize(
    "cls",
    [
        RunSettings,
        ProduceSettings,
        TopicsSettings,
        LagSettings,
        BenchSettings,
        TrySettings,
        DbSettings,
    ],
)
def test_every_option_of_every_command_is_in_the_reference(cls: type) -> None:
    name = next(n for n, c in commands() if c is cls)
    text = REFERENCE.read_text(encoding="utf-8")
    section = text.split(f"\n## stream {name}\n", 1)[1].split("\n## ", 1)[0]
    shared = "".join(text.split("\n## ")[1:])  # sections it refers to ("as in ...")
    for f in option_fields(cls):
        assert f"`{flag_name(f.name)}`" in section + shared, f"stream {name} {flag_name(f.name)}"


def test_the_reference_has_every_command_of_the_cli_with_exactly_its_flags() -> None:
    subparsers = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    flags = {
        name: {a.dest for a in parser._actions if a.option_strings} - {"help", "config"}
        for name, parser in subparsers.choices.items()
    }
    documented = {name: {f.name for f in option_fields(cls)} for name, cls in commands()}
    assert documented == {name: dests for name, dests in flags.items() if dests}
    assert {"run", "produce", "topics", "lag", "bench", "try", "db"} <= set(documented)


def _documented_metrics() -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (type, labels), from the table of stream/METRICS.md."""
    documented: dict[str, tuple[str, frozenset[str]]] = {}
    for row in METRICS.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in row.strip("|").split("|")]
        if not row.startswith("| `stream_") or len(cells) < 3:
            continue
        for name, labels in re.findall(r"`(stream_\w+)(?:\{([\w,]*)\})?`", cells[0]):
            documented[name] = (cells[1], frozenset(filter(None, labels.split(","))))
    return documented


def test_the_metrics_page_names_every_metric_with_its_type_and_labels() -> None:
    metrics = Metrics("identity", "in", "out", "in.dlq", sinks=("postgres",))
    WindowMetrics(metrics.registry)  # --window's, registered when it is on
    declared: dict[str, tuple[str, frozenset[str]]] = {}
    for collector in metrics.registry._collector_to_names:
        if not isinstance(collector, MetricWrapperBase):
            continue
        kind = str(collector._type)
        suffix = {"counter": "_total", "info": "_info"}.get(kind, "")
        labels = frozenset(collector._labelnames)
        if kind == "info":  # its labels are its values
            (sample,) = next(iter(collector.collect())).samples
            labels = frozenset(sample.labels)
        declared[collector._name + suffix] = (kind, labels)
    documented = _documented_metrics()
    assert len(declared) > 20
    assert {n: declared[n] for n in declared if documented.get(n) != declared[n]} == {}
    assert sorted(set(documented) - set(declared)) == []  # nothing documented that is gone


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


def test_the_make_targets_the_readme_lists_are_the_makefiles() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = re.findall(r"^([a-zA-Z_-]+):.*## ", makefile, re.MULTILINE)
    listed = README.split("`make help` lists\nevery target: ", 1)[1].split(".\n", 1)[0]
    assert re.findall(r"`([\w-]+)`", listed) == targets


def _headings(text: str) -> set[str]:
    """The anchors of a Markdown document's headings (outside fenced blocks)."""
    outside = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    return {anchor(h) for h in re.findall(r"^#+ (.+)$", outside, re.MULTILINE)}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_to_a_file_and_its_heading_resolves(document: Path) -> None:
    text = document.read_text(encoding="utf-8")
    for target, heading in re.findall(r"\]\(([^)#:\s]*)(#[^)\s]*)?\)", text):
        path = (document.parent / target) if target else document
        assert path.exists(), f"{document.name}: {target}"
        if heading and path.suffix == ".md":
            assert heading in _headings(path.read_text(encoding="utf-8")), (
                f"{document.name}: {target}{heading}"
            )


def test_the_readme_is_a_guide_with_contents_and_the_notes_live_beside_their_subject() -> None:
    assert len(README.encode()) < 27_000
    contents = README.split("## Contents\n", 1)[1].split("\n## ", 1)[0]
    sections = re.findall(r"^## (.+)$", README.split("## Contents\n", 1)[1], re.MULTILINE)
    assert [anchor(s) for s in sections] == re.findall(r"\]\((#[\w-]+)\)", contents)
    for link in ("(deploy/README.md", "(tests/bench/README.md)", "(stream/METRICS.md)"):
        assert link in README
    assert "(stream/config/REFERENCE.md)" in README
    bench = (ROOT / "tests" / "bench" / "README.md").read_text(encoding="utf-8")
    assert "Why the misses" in bench
    assert "Why the misses" not in README
    assert "24,000" in bench  # the sink's figures
    assert "24,000" not in README
    deploy = (ROOT / "deploy" / "README.md").read_text(encoding="utf-8")
    assert "## Kubernetes" in deploy
    assert "## What each failure does" in deploy
    assert "stream.source.offset" in deploy  # the dead letters' headers, in full
    assert "no SASL/TLS options" not in deploy + README


def test_the_tutorial_is_complete_commands_in_order() -> None:
    blocks = tutorial()
    sections = [b.section for b in blocks]
    order = list(dict.fromkeys(sections))
    assert order == [
        "setup",
        "service",
        "transform",
        "enrichment",
        "postgres",
        "registry",
        "windows",
    ]
    assert sections == sorted(sections, key=order.index)  # a section's blocks are together
    commands = [c for b in blocks for c in b.commands]
    assert commands[:2] == ["make install", "source .venv/bin/activate"]
    for needed in ("stream read ", "stream lookup-demo", "--avro-file ", "stream db init"):
        assert any(needed in c for c in commands), needed
    assert any(long_running(c) for c in commands)
    made: set[str] = set()
    for command in commands:
        for name in re.findall(r"--(?:file|avro-file) (\S+)", command):
            if name != "-" and "--avro-file" not in command.split(name)[0][-12:]:
                assert name in made, f"{command!r} names {name}, which no earlier command made"
        made.update(re.findall(r"(?:> |--avro-file |cp \S+ )(\S+)", command))
