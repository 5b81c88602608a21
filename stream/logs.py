"""The service's log lines: text or JSON on stderr, and aiokafka's repeated lines held
back to one per kind per interval."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import orjson


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs every retry and rebalance step at INFO; its warnings are enough, and
    # while the broker is away, once per kind of message per interval.
    aiokafka = logging.getLogger("aiokafka")
    aiokafka.setLevel(max(logging.WARNING, root.level))
    handler.addFilter(RepeatFilter(prefix="aiokafka"))
    handler.addFilter(FencedLeftovers())


class FencedLeftovers(logging.Filter):
    """A fenced transactional producer is handled (its partition is reopened by a new
    one), but aiokafka leaves a failed request of it that nobody awaits, and asyncio
    logs that at ERROR with a traceback: "Future exception was never retrieved ...
    ProducerFenced". Said once at DEBUG instead, so the log of a handled fence holds no
    error."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "asyncio" or record.levelno < logging.ERROR:
            return True
        text = record.getMessage()
        if "never retrieved" not in text or "ProducerFenced" not in text:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.msg, record.args, record.exc_info, record.exc_text = (
            "a fenced producer's request failed after the producer was replaced",
            (),
            None,
            None,
        )
        return logging.getLogger().isEnabledFor(logging.DEBUG)


_STARTING = re.compile(r"Coordinator(NotAvailable|LoadInProgress)|NotCoordinator")


class RepeatFilter(logging.Filter):
    """Let one record per (logger, message template) through per interval; say how many
    were held back when the next one passes."""

    def __init__(self, prefix: str, interval: float = 10.0) -> None:
        super().__init__()
        self.prefix = prefix
        self.interval = interval
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefix):
            return True
        if record.levelno >= logging.ERROR and _STARTING.search(record.getMessage()):
            # A broker that is starting its group coordinator says so; that is normal,
            # not an error (aiokafka retries, and the service waits for its assignment).
            record.levelno, record.levelname = logging.INFO, "INFO"
        key = (record.name, str(record.msg))
        if len(self._seen) > 1000:
            self._seen.clear()
        last, held = self._seen.get(key, (0.0, 0))
        if record.created - last < self.interval:
            self._seen[key] = (last, held + 1)
            return False
        if held:
            record.msg = f"{record.msg} (and {held} more like it in the last {self.interval:g}s)"
        self._seen[key] = (record.created, 0)
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()
