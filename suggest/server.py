"""``kefu serve``: run the app under uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from suggest.settings import Settings


def serve(host: str, port: int, workers: int = 1) -> int:
    settings = Settings()
    logging.basicConfig(
        level=settings.app.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    print(f"kefu-assist: http://{host}:{port}  (API docs: http://{host}:{port}/schema)", flush=True)
    uvicorn.run(
        "suggest.asgi:app", host=host, port=port, workers=workers, log_level=settings.app.log_level.lower()
    )
    return 0
