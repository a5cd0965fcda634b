"""One set of rules for a snippet's values, whether it comes from a file, the CLI or the API.

The rules live in :mod:`knowledge.io` (where every problem gets a file location); here they are
applied to a single Snippet and reported as a :class:`ValidationError` that names each field.
"""

from __future__ import annotations

from knowledge.errors import ImportFailed, ValidationError
from knowledge.io import snippet_from_dict
from knowledge.model import Snippet


def clean_snippet(s: Snippet) -> Snippet:
    """``s`` with its content checked and tidied by the import rules; raises ValidationError."""
    try:
        clean = snippet_from_dict(
            s.content(), source="snippet", location=s.id or "?", default_status=s.status
        )
    except ImportFailed as e:
        raise ValidationError(
            "；".join(f"{p.field or ''}: {p.message_zh}" for p in e.problems),
            "; ".join(f"{p.field or ''}: {p.message_en}" for p in e.problems),
            details=[p.to_dict() for p in e.problems],
        ) from e
    return clean.with_changes(version=s.version, updated_at=s.updated_at, updated_by=s.updated_by)
