"""Errors of the suggestion service; all are KefuErrors, mapped to HTTP in suggest/app.py."""

from __future__ import annotations

from knowledge.errors import KefuError


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
