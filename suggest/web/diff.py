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


def text_segments(old: str, new: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            out.append(("equal", old[i1:i2]))
            continue
        if op in ("delete", "replace"):
            out.append(("delete", old[i1:i2]))
        if op in ("insert", "replace"):
            out.append(("insert", new[j1:j2]))
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
