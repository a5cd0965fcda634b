"""Structured logs: one JSON object per line (``KEFU_LOG_FORMAT=json``) or readable text.

Every request is logged by ``suggest.ops.RequestMetrics`` on the ``kefu.access`` logger with its
method, route, status, duration and the API key's name as fields; any ``extra=`` field of a log call
becomes a key of the JSON object.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

#: Attributes every LogRecord has; anything else was passed with ``extra=`` and is logged as a field.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's coloured copy of the message
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        return base + ("  " + " ".join(f"{k}={v}" for k, v in extra.items()) if extra else "")


def log_config(level: str, fmt: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the service and uvicorn (also in worker processes)."""
    formatter = (
        {"()": JsonFormatter}
        if fmt == "json"
        else {"()": TextFormatter, "format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            "uvicorn": {"level": level.upper(), "handlers": ["stderr"], "propagate": False},
            "uvicorn.error": {"level": level.upper(), "handlers": ["stderr"], "propagate": False},
            # kefu.access logs every request with its fields; uvicorn's own access log would repeat it
            "uvicorn.access": {"level": "WARNING", "handlers": ["stderr"], "propagate": False},
            "bm25s": {"level": "WARNING"},
            "alembic.runtime.migration": {"level": "WARNING"},
            "sentence_transformers": {"level": "WARNING"},
            "httpx": {"level": "WARNING"},
        },
    }
