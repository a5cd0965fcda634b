"""Run the real app under uvicorn on a free local port, for end-to-end tests over HTTP."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import uvicorn

from knowledge.service import KnowledgeBase
from suggest.app import create_app
from suggest.clock import Clock
from suggest.settings import Settings

#: A Thursday morning in the service's time zone: inside working hours (tests inject this clock).
WORKING_HOURS = datetime(2026, 11, 26, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Running:
    base: str
    kb: KnowledgeBase
    settings: Settings


@contextmanager
def serve(settings: Settings, kb: KnowledgeBase, clock: Clock | None = None) -> Iterator[Running]:
    port = free_port()
    app = create_app(settings, kb=kb, clock=clock)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield Running(f"http://127.0.0.1:{port}", kb, settings)
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
