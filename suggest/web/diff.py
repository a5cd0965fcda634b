"""A revision's changes as a readable diff: text fields character by character (Chinese has no
spaces to split on), lists as removed and added items, other fields as old -> new."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FieldDiff:
    name: str
    kind: str  # "text", "list" or "value"
    segments: list[tuple[str, str]] = field(default_factory=list)  # ("equal"|"delete"|"insert", text)
    removed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    old: Any = None
    new: Any = None


def text_segments(old: str, new: str, *, min_equal: int = 2) -> list[tuple[str, str]]:
    """Character diff with short common runs (a shared 费 in 免费 -> 收费5元) folded into the change
    around them, so that a change reads as whole words deleted and inserted."""
    ops = difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes()
    out: list[tuple[str, str]] = []
    deleted, inserted = "", ""

    def flush() -> None:
        nonlocal deleted, inserted
        if deleted:
            out.append(("delete", deleted))
        if inserted:
            out.append(("insert", inserted))
        deleted, inserted = "", ""

    for n, (op, i1, i2, j1, j2) in enumerate(ops):
        between_changes = 0 < n < len(ops) - 1
        if op == "equal" and not (between_changes and i2 - i1 < min_equal):
            flush()
            out.append(("equal", old[i1:i2]))
        else:
            deleted += old[i1:i2]
            inserted += new[j1:j2]
    flush()
    return out


def field_diffs(changes: dict[str, list[Any]]) -> list[FieldDiff]:
    out = []
    for name, (old, new) in changes.items():
        if isinstance(old, list) or isinstance(new, list):
            before, after = list(old or []), list(new or [])
            out.append(
                FieldDiff(
                    name,
                    "list",
                    removed=[x for x in before if x not in after],
                    added=[x for x in after if x not in before],
                    old=old,
                    new=new,
                )
            )
        elif isinstance(old, str) and isinstance(new, str) and name in ("question", "answer"):
            out.append(FieldDiff(name, "text", segments=text_segments(old, new), old=old, new=new))
        else:
            out.append(FieldDiff(name, "value", old=old, new=new))
    return out
