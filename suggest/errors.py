"""Errors of the suggestion service; all are KefuErrors, mapped to HTTP in suggest/app.py."""

from __future__ import annotations

from knowledge.errors import ConflictError, KefuError


class PreconditionFailed(KefuError):
    """If-Match did not match the current version (someone else changed it): 412."""

    code = "precondition_failed"


class PreconditionRequired(PreconditionFailed):
    """A write came without If-Match: 428."""

    code = "precondition_required"


class Unauthorized(KefuError):
    code = "unauthorized"


class Forbidden(KefuError):
    code = "forbidden"


class AlreadyDecided(KefuError):
    code = "already_decided"


class NormsRefused(KefuError):
    """The final text breaks an error-level norm and the service is configured to refuse it."""

    code = "norms_refused"


class StaleSuggestion(ConflictError):
    """The customer wrote again after the suggestion was made: its drafts answer an older message (409)."""

    code = "stale_suggestion"


class ClaimedByOther(ConflictError):
    """Another agent has claimed the conversation (409); the caller may take it over explicitly."""

    code = "claimed_by_other"


class ConversationClosed(ConflictError):
    code = "conversation_closed"
