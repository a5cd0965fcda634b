"""Service settings: small groups, one ``KEFU_*`` environment variable per field."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from knowledge.settings import KnowledgeSettings


def _env(name: str, default: str) -> str:
    v = os.environ.get(name)
    return v if v not in (None, "") else default


def _flag(name: str, default: bool) -> bool:
    return _env(name, "true" if default else "false").lower() in ("1", "true", "yes", "on")


class Secret(str):
    """A string that does not show itself in logs or reprs."""

    def __repr__(self) -> str:
        return "Secret('********')" if self else "Secret('')"


@dataclass(frozen=True)
class AppSettings:
    #: Address ``kefu serve`` binds to.
    host: str = field(default_factory=lambda: _env("KEFU_HOST", "127.0.0.1"))
    port: int = field(default_factory=lambda: int(_env("KEFU_PORT", "8000")))
    #: Log level of the service (DEBUG, INFO, WARNING).
    log_level: str = field(default_factory=lambda: _env("KEFU_LOG_LEVEL", "INFO"))
    #: Log lines as ``json`` (one object per line, for log collectors) or ``text``.
    log_format: str = field(default_factory=lambda: _env("KEFU_LOG_FORMAT", "text"))
    #: Require an API key (``Authorization: Bearer ...``) on every /v1 endpoint.
    require_keys: bool = field(default_factory=lambda: _flag("KEFU_REQUIRE_KEYS", True))
    #: Seconds a verified key is trusted without asking the database (a revoked key works that long).
    key_cache_s: float = field(default_factory=lambda: float(_env("KEFU_KEY_CACHE_S", "5")))


@dataclass(frozen=True)
class SuggestSettings:
    #: Longest customer message accepted, in characters.
    max_message_chars: int = field(default_factory=lambda: int(_env("KEFU_MAX_MESSAGE_CHARS", "4000")))
    #: Drafts per suggestion when the request does not say (1-5).
    default_n: int = field(default_factory=lambda: int(_env("KEFU_DEFAULT_DRAFTS", "3")))
    #: Two hits whose fused scores are closer than this (and both at least medium) make a clarify draft.
    clarify_margin: float = field(default_factory=lambda: float(_env("KEFU_CLARIFY_MARGIN", "0.04")))
    #: Refuse to record an approved/edited reply that breaks an error-level norm (else: record and report).
    refuse_error_level: bool = field(default_factory=lambda: _flag("KEFU_REFUSE_ERROR_LEVEL", False))


@dataclass(frozen=True)
class LLMSettings:
    #: An OpenAI-compatible endpoint (e.g. http://127.0.0.1:8080/v1); empty: the offline template drafter.
    base_url: str = field(default_factory=lambda: _env("KEFU_LLM_BASE_URL", ""))
    #: The model name sent to the endpoint.
    model: str = field(default_factory=lambda: _env("KEFU_LLM_MODEL", ""))
    #: The endpoint's API key.
    api_key: Secret = field(default_factory=lambda: Secret(_env("KEFU_LLM_API_KEY", "")))
    #: Seconds before a request counts as failed (then the template drafter answers).
    timeout_s: float = field(default_factory=lambda: float(_env("KEFU_LLM_TIMEOUT_S", "20")))
    #: Retries after a failed request.
    max_retries: int = field(default_factory=lambda: int(_env("KEFU_LLM_MAX_RETRIES", "1")))
    #: Sampling temperature.
    temperature: float = field(default_factory=lambda: float(_env("KEFU_LLM_TEMPERATURE", "0.3")))

    @property
    def enabled(self) -> bool:
        return bool(self.base_url and self.model)


@dataclass(frozen=True)
class NormsSettings:
    #: Language of the packaged norms (zh, en) or a path to a norms TOML file.
    norms: str = field(default_factory=lambda: _env("KEFU_NORMS", "zh"))
    #: Language of the packaged intent rules or a path to an intents TOML file.
    intents: str = field(default_factory=lambda: _env("KEFU_INTENTS", "zh"))


@dataclass(frozen=True)
class WorkflowSettings:
    #: More waiting conversations than this: agents are busy and the auto-reply is due.
    busy_waiting: int = field(default_factory=lambda: int(_env("KEFU_BUSY_WAITING", "5")))
    #: An open escalation older than this many hours is flagged overdue.
    escalation_overdue_h: float = field(
        default_factory=lambda: float(_env("KEFU_ESCALATION_OVERDUE_H", "24"))
    )


@dataclass(frozen=True)
class Settings:
    app: AppSettings = field(default_factory=AppSettings)
    knowledge: KnowledgeSettings = field(default_factory=KnowledgeSettings)
    suggest: SuggestSettings = field(default_factory=SuggestSettings)
    llm: LLMSettings = field(default_factory=LLMSettings)
    norms: NormsSettings = field(default_factory=NormsSettings)
    workflow: WorkflowSettings = field(default_factory=WorkflowSettings)
