"""``stream lookup-demo``'s settings: where the demo lookup service listens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from stream.options import opt, port


@dataclass(frozen=True, slots=True)
class LookupDemoSettings:
    """Options of ``stream lookup-demo``."""

    COMMAND: ClassVar[str] = "lookup_demo"

    host: str = opt("127.0.0.1", "address to listen on", metavar="HOST")
    port: int = opt(8080, "port to listen on (0: any free port)", port, "PORT")
