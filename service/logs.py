"""Structured logs: `serve --log-json` writes one JSON object per line (to stderr), one line per
event, for a log shipper (Loki, Elasticsearch, journald's JSON export) to index.

Each line has `time` (ISO 8601, UTC, milliseconds), `level`, `logger` and `message`, `exc` when
a traceback was logged, and any fields a call passed in `extra=` that are plain JSON values.
What must hold: a line is always valid JSON, whatever the message holds (non-ASCII, quotes,
newlines, objects that are not JSON: those are written as their `str`).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

# What every LogRecord has: not "extra" fields.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
               "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        for k, v in vars(record).items():
            if k not in _STANDARD and not k.startswith("_"):
                out[k] = v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class _Worker(logging.Filter):
    """Tags every record of a front's worker process with its index (`worker`)."""

    def __init__(self, index: int):
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


def configure(level: int, as_json: bool, worker: int | None = None) -> None:
    """The process's logging: human-readable lines, or JSON lines with `as_json`. `worker`: this
    process is that worker of a multi-worker front; its lines say so (a `worker` field in JSON)."""
    handler = logging.StreamHandler()
    name = "%(name)s" if worker is None else f"%(name)s[worker {worker}]"
    handler.setFormatter(JsonFormatter() if as_json else
                         logging.Formatter(f"%(asctime)s {name} %(levelname)s %(message)s"))
    if worker is not None:
        handler.addFilter(_Worker(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
