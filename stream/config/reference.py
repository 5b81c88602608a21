"""The configuration reference (``stream/config/REFERENCE.md``), made from the option
declarations: each command's settings class, each option's ``opt()`` metadata (help,
default, --help section), its flag and its environment variable.

    python -m stream.config.reference > stream/config/REFERENCE.md

The commands are the settings classes of :mod:`stream.config` (a new command or
option shows up here without a list to keep); a test checks that they are the CLI's
commands with exactly their flags, and that the committed file is what this module
makes.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
import sys
from typing import Any

import stream.config
from stream.config.groups import GROUPS
from stream.options import flag_name, option_env, option_fields, shown_default

HEADER = """\
# Configuration reference

<!-- Made by `python -m stream.config.reference > stream/config/REFERENCE.md` from the
option declarations in this folder; tests/unit/test_readme.py checks it. Do not edit. -->

Every option is a flag, an environment variable, or a key in a TOML file given with
`--config` (or `STREAM_CONFIG`): keys as the flags without `--`, optionally under
`[stream]`. Precedence: flag > environment > config file > default. The service's
options and the connection options read `STREAM_<OPTION>`; an option of one other
command carries that command's name (`STREAM_PRODUCE_COUNT`), so two commands never
read each other's settings. On/off options also have a `--no-` form. Sizes take
`512KiB`, `4MiB` or bytes. Secrets are never printed: prefer their `*-file` forms or
the environment. `stream COMMAND --help` shows the same, section by section.
"""


def _settings_classes() -> list[type[Any]]:
    """Every settings class declared in the modules of :mod:`stream.config`."""
    found: list[type[Any]] = []
    for module in pkgutil.iter_modules(stream.config.__path__):
        loaded = importlib.import_module(f"stream.config.{module.name}")
        for value in vars(loaded).values():
            if (
                isinstance(value, type)
                and dataclasses.is_dataclass(value)
                and option_fields(value)
                and value not in found
            ):
                found.append(value)
    return found


def _command_name(cls: type[Any]) -> str:
    """``stream COMMAND`` of a settings class: its ``COMMAND``, else its name
    (``RunSettings``: run, ``LookupDemoSettings``: lookup-demo)."""
    command: str = getattr(cls, "COMMAND", "")
    if not command:
        stem = cls.__name__.removesuffix("Settings")
        command = re.sub(r"(?<!^)(?=[A-Z])", "-", stem)
    return command.replace("_", "-").lower()


def commands() -> list[tuple[str, type[Any]]]:
    """Each command of ``stream`` that has options, with its settings class: the classes
    of :mod:`stream.config` no other one builds on (the layers of ``stream run`` and the
    shared Kafka connection are bases of the commands' classes). ``stream run`` first."""
    classes = _settings_classes()
    leaves = [c for c in classes if not any(o is not c and issubclass(o, c) for o in classes)]
    named = [(_command_name(c), c) for c in leaves]
    return sorted(named, key=lambda pair: (pair[0] != "run", pair[0]))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(cls: type[Any], f: dataclasses.Field[Any]) -> str:
    meta = f.metadata
    flag = flag_name(f.name)
    if f.type == "bool":
        flag += f"`, `--no-{flag[2:]}"
    default = shown_default(f)
    shown = f"`{default}`" if default else ""
    return f"| `{flag}` | `{option_env(cls, f.name)}` | {_cell(shown)} | {_cell(meta['help'])} |"


def anchor(title: str) -> str:
    """GitHub's anchor of a heading."""
    kept = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return "#" + kept.replace(" ", "-")


def render() -> str:
    """The whole reference, as Markdown."""
    out = [HEADER]
    found = commands()
    listed = ", ".join(f"[`{name}`]({anchor('stream ' + name)})" for name, _ in found)
    out.append(f"Commands: {listed}.\n")
    seen: dict[tuple[str, ...], str] = {}
    for name, cls in found:
        title = f"stream {name}"
        out.append(f"## {title}\n")
        fields = option_fields(cls)
        for group in ("", *GROUPS):
            rows = tuple(_row(cls, f) for f in fields if f.metadata["group"] == group)
            if not rows:
                continue
            heading = group or f"options of {title}"
            if rows in seen:
                out.append(f"**{heading}**: as in [{seen[rows]}]({anchor(seen[rows])}).\n")
                continue
            seen.setdefault(rows, title)
            out.append(f"**{heading}**\n")
            out.append("| option | environment | default | meaning |")
            out.append("|---|---|---|---|")
            out.extend(rows)
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
