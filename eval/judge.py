"""An optional LLM judge: politeness, helpfulness and faithfulness of a draft, 1 to 5 each.

Off unless configured (``--judge-model`` and ``--judge-base-url``, or ``KEFU_JUDGE_BASE_URL`` and
``KEFU_JUDGE_MODEL``; ``KEFU_JUDGE_API_KEY`` for the key): any OpenAI-compatible chat endpoint through
the ``openai`` package. The rubric is rendered from the norms: ``eval/judge_<language>.toml`` holds the
prompt templates, filled with the norm variables (``{rules}`` are the norms' own rule instructions).

A judge never fails a run: a timeout, an error status or an answer that is not the expected JSON
scores NaN with the reason, and the run goes on.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.metrics import Score, na
from prompts import Norms
from prompts.templates import Template

JUDGE_CRITERIA = ("politeness", "helpfulness", "faithfulness")
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)\s*```", re.DOTALL)


@dataclass(frozen=True)
class JudgeSettings:
    base_url: str = ""
    model: str = ""
    api_key: str = ""
    timeout_s: float = 30.0

    @property
    def enabled(self) -> bool:
        return bool(self.base_url and self.model)

    @classmethod
    def from_env(cls, base_url: str | None = None, model: str | None = None) -> JudgeSettings:
        return cls(
            base_url=base_url or os.environ.get("KEFU_JUDGE_BASE_URL", ""),
            model=model or os.environ.get("KEFU_JUDGE_MODEL", ""),
            api_key=os.environ.get("KEFU_JUDGE_API_KEY", ""),
            timeout_s=float(os.environ.get("KEFU_JUDGE_TIMEOUT_S", "30")),
        )


def load_templates(language: str) -> dict[str, Template]:
    path = Path(__file__).resolve().parent / f"judge_{language}.toml"
    if not path.is_file():
        path = Path(__file__).resolve().parent / "judge_zh.toml"
    data = tomllib.loads(path.read_text("utf-8"))
    return {
        name: Template(
            name=name,
            text=t["text"],
            used_by=t["used_by"],
            placeholders=tuple(t.get("placeholders", ())),
            output=t.get("output", ""),
        )
        for name, t in data["templates"].items()
    }


class Judge:
    """Scores one reply; built once per run (one client)."""

    def __init__(self, settings: JudgeSettings, norms: Norms) -> None:
        import openai

        self.settings = settings
        self.norms = norms
        self.templates = load_templates(norms.language)
        self.variables = {**norms.variables, "escalation": norms.routing.escalation_responsible}
        self.client = openai.OpenAI(
            base_url=settings.base_url,
            api_key=settings.api_key or "unused",
            timeout=settings.timeout_s,
            max_retries=0,
        )

    def render(self, name: str, **values: object) -> str:
        return self.templates[name].render(values, self.variables)

    def messages(
        self, customer_message: str, reply: str, snippets: list[tuple[str, str, str]]
    ) -> list[dict[str, str]]:
        lines = "\n".join(f"[{sid}] {q}: {a}" for sid, q, a in snippets) or self.render("judge_no_snippets")
        return [
            {"role": "system", "content": self.render("judge_system")},
            {
                "role": "user",
                "content": self.render(
                    "judge_user", customer_message=customer_message, snippets=lines, reply=reply
                ),
            },
        ]

    def score(
        self, customer_message: str, reply: str, snippets: list[tuple[str, str, str]]
    ) -> dict[str, Score]:
        """One score per criterion; NaN with the reason on any failure (never raises)."""
        try:
            resp = self.client.chat.completions.create(
                model=self.settings.model,
                messages=self.messages(customer_message, reply, snippets),  # type: ignore[arg-type]
                temperature=0,
            )
            content = resp.choices[0].message.content or ""
            return parse_verdict(content)
        except Exception as e:  # a judge never fails the run
            why = f"judge failed: {type(e).__name__}: {str(e)[:160]}"
            return {c: na(why) for c in JUDGE_CRITERIA}


def parse_verdict(content: str) -> dict[str, Score]:
    m = _FENCE.search(content)
    raw = m.group(1) if m else content.strip()
    try:
        obj: Any = json.loads(raw)
    except json.JSONDecodeError:
        return {c: na(f"judge answer is not JSON: {content[:80]!r}") for c in JUDGE_CRITERIA}
    if not isinstance(obj, dict):
        return {c: na("judge answer is not a JSON object") for c in JUDGE_CRITERIA}
    reason = str(obj.get("reason", ""))[:300]
    out = {}
    for c in JUDGE_CRITERIA:
        v = obj.get(c)
        if isinstance(v, bool) or not isinstance(v, int | float) or not 1 <= v <= 5:
            out[c] = na(f"judge gave no 1-5 score for {c}: {v!r}")
        else:
            out[c] = Score(float(v), reason or f"{c} {v}")
    return out
