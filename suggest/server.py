"""``kefu serve``: run the app under uvicorn."""

from __future__ import annotations

import logging.config

import uvicorn

from suggest.logs import log_config
from suggest.settings import Settings


def serve(host: str, port: int, workers: int = 1) -> int:
    settings = Settings()
    config = log_config(settings.app.log_level, settings.app.log_format)
    logging.config.dictConfig(config)
    print(f"kefu-assist: http://{host}:{port}  (API docs: http://{host}:{port}/schema)", flush=True)
    uvicorn.run(
        "suggest.asgi:app",
        host=host,
        port=port,
        workers=workers,
        log_config=config,
        access_log=False,  # kefu.access logs every request, with fields
    )
    return 0
