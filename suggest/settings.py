"""Service settings: small groups, one ``KEFU_*`` environment variable per field."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from knowledge.settings import KnowledgeSettings


@dataclass(frozen=True)
class AppSettings:
    #: Address ``kefu serve`` binds to.
    host: str = field(default_factory=lambda: os.environ.get("KEFU_HOST", "127.0.0.1"))
    port: int = field(default_factory=lambda: int(os.environ.get("KEFU_PORT", "8000")))
    #: Log level of the service (DEBUG, INFO, WARNING).
    log_level: str = field(default_factory=lambda: os.environ.get("KEFU_LOG_LEVEL", "INFO"))


@dataclass(frozen=True)
class Settings:
    app: AppSettings = field(default_factory=AppSettings)
    knowledge: KnowledgeSettings = field(default_factory=KnowledgeSettings)
