"""The README's tutorial as data: its command blocks and the output lines it promises.

A block to run is a fenced ``bash`` block right after a ``<!-- run: SECTION -->``
comment (invisible on GitHub). Blocks run in the README's order; the blocks of one
section share the services started in them, which stop when the section ends (as a
reader stops them before the next part). A plain fenced block (no language) right
after a run block holds lines the block's last command prints; ``...`` in such a line
stands for anything (pids, timings, offsets).

A reader runs a long-running command (``make run``, ``stream run``, ``stream
lookup-demo``) in a terminal of its own; the harness starts it in the background and
waits for the line that says it is up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

_BLOCK = re.compile(
    r"<!-- run: (?P<section>[\w-]+) -->\n```bash\n(?P<body>.*?)```\n"
    r"(?:\n```\n(?P<expected>.*?)```\n)?",
    re.DOTALL,
)

# A long-running command (its first words) and the line that says it is ready.
LONG_RUNNING = {
    "make run": " started: ",
    "stream run": " started: ",
    "stream lookup-demo": "lookup-demo: serving ",
}


@dataclass(frozen=True)
class Block:
    section: str
    line: int  # of the README, for messages
    commands: tuple[str, ...]
    expected: tuple[str, ...]  # lines the last command prints


def strip_comment(line: str) -> str:
    """The line without a trailing ``# comment`` (a ``#`` outside quotes, after a blank)."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def commands_of(body: str) -> tuple[str, ...]:
    """A block's commands: comments dropped, ``\\``-continued lines joined."""
    commands: list[str] = []
    pending = ""
    for raw in body.splitlines():
        line = strip_comment(raw)
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            commands.append(line)
    return tuple(commands)


def tutorial(text: str | None = None) -> list[Block]:
    """The blocks to run, in order."""
    text = README.read_text(encoding="utf-8") if text is None else text
    return [
        Block(
            section=found["section"],
            line=text.count("\n", 0, found.start()) + 1,
            commands=commands_of(found["body"]),
            expected=tuple(x for x in (found["expected"] or "").splitlines() if x.strip()),
        )
        for found in _BLOCK.finditer(text)
    ]


def long_running(command: str) -> str | None:
    """The ready line of a long-running command, None for one that finishes."""
    for start, ready in LONG_RUNNING.items():
        if command == start or command.startswith(start + " "):
            return ready
    return None


def pattern(expected: str) -> re.Pattern[str]:
    """An expected output line as a regular expression: ``...`` matches anything."""
    return re.compile(".*".join(re.escape(part) for part in expected.split("...")))
