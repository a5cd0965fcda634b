"""ASGI entry point (``uvicorn suggest.asgi:app``); one app per worker process."""

from __future__ import annotations

from suggest.app import create_app

app = create_app()
