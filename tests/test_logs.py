"""Structured logs: JSON lines carry the request's fields."""

from __future__ import annotations

import json
import logging

from suggest.logs import JsonFormatter, TextFormatter, log_config


def _record(**extra: object) -> logging.LogRecord:
    rec = logging.LogRecord(
        "kefu.access", logging.INFO, __file__, 1, "%s %s", ("POST", "/v1/suggestions"), None
    )
    rec.__dict__.update(extra)
    return rec


def test_json_lines_carry_extra_fields() -> None:
    line = JsonFormatter().format(_record(status=201, duration_ms=12.5, key="agent 7"))
    obj = json.loads(line)
    assert obj["msg"] == "POST /v1/suggestions" and obj["logger"] == "kefu.access" and obj["level"] == "info"
    assert obj["status"] == 201 and obj["duration_ms"] == 12.5 and obj["key"] == "agent 7"
    assert "args" not in obj and "pathname" not in obj


def test_text_lines_append_fields_and_config_picks_the_format() -> None:
    text = TextFormatter("%(message)s").format(_record(status=404))
    assert text == "POST /v1/suggestions  status=404"
    assert log_config("info", "json")["formatters"]["default"]["()"] is JsonFormatter
    assert log_config("info", "text")["formatters"]["default"]["()"] is TextFormatter
