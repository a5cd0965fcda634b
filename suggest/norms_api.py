"""``POST /v1/norms/check``: a reply checked against the service norms before it is sent.

The agent console calls the same check while the agent edits a draft, so the badge the agent sees is
the one the decision endpoint will record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from knowledge.errors import ValidationError
from prompts import CheckContext
from suggest.auth import READERS, allow
from suggest.pipeline import SuggestionPipeline

MAX_CHECK_CHARS = 4000


@dataclass
class NormsCheckBody:
    text: str
    #: The agent's first reply in the conversation must greet.
    first_reply: bool = False
    #: How long the customer has waited; past the norms' limit the reply must apologise.
    customer_waited_s: float | None = None
    #: Take first_reply and customer_waited_s from this suggestion (what the decision will use).
    suggestion_id: str | None = None


def check_text(pipeline: SuggestionPipeline, text: str, ctx: CheckContext) -> dict[str, Any]:
    if len(text) > MAX_CHECK_CHARS:
        raise ValidationError(
            f"文字太长（最多 {MAX_CHECK_CHARS} 个字符）",
            f"text too long (at most {MAX_CHECK_CHARS} characters)",
        )
    found = [v.to_dict() for v in pipeline.norms.check(text, ctx)] if text.strip() else []
    return {
        "ok": not found,
        "errors": sum(1 for v in found if v["severity"] == "error"),
        "warnings": sum(1 for v in found if v["severity"] != "error"),
        "violations": found,
    }


def suggestion_context(pipeline: SuggestionPipeline, suggestion_id: str) -> CheckContext:
    sug = pipeline.store.suggestion(suggestion_id)
    return CheckContext(
        first_reply=bool(sug.get("first_reply")),
        customer_waited_s=sug.get("customer_waited_s"),
        greeted=not sug.get("first_reply", True),  # a later reply must not greet again (issue 19)
    )


@post("/v1/norms/check", sync_to_thread=True, status_code=200, guards=[allow(*READERS)], tags=["norms"])
def check_norms(
    data: JSONBody[NormsCheckBody], pipeline: NamedDependency[SuggestionPipeline]
) -> dict[str, Any]:
    """The norms' violations of a reply (nothing is stored): ``ok``, counts and each violation with its span."""
    if data.customer_waited_s is not None and not 0 <= data.customer_waited_s < 10**7:
        raise ValidationError(
            "customer_waited_s 必须是非负的秒数", "customer_waited_s must be a non-negative number of seconds"
        )
    ctx = (
        suggestion_context(pipeline, data.suggestion_id)
        if data.suggestion_id
        else CheckContext(first_reply=data.first_reply, customer_waited_s=data.customer_waited_s)
    )
    return check_text(pipeline, data.text, ctx)
