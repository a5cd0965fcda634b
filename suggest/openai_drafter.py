"""The LLM drafter: any OpenAI-compatible chat endpoint writes the drafts, as JSON with citations.

One chat completion per suggestion. The system message is the norms' system prompt plus their JSON
output format (``llm_output_format``); the user message is the norms' ``llm_user`` template filled with
the customer's message and the plan's snippets, plus the conversation so far and what the plan asks
for (the other ``llm_*`` templates: all prompt text is data in ``prompts/norms_*.toml``). The model's
output is validated strictly (it is never trusted): unknown citations are dropped, and when no usable
draft is left the drafter raises ``DrafterError`` so that the pipeline falls back to the templates.

Every ``DrafterError`` reason starts with a stable word (``timeout``, ``error status``,
``connection``, ``malformed output``) followed by ``:``; the fallback metric is labelled by it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import openai

from knowledge.retriever import Hit
from prompts.templates import LLM_TASK_KINDS
from suggest.drafting import Citation, DraftCandidate, DrafterError, DraftJob
from suggest.settings import LLMSettings

log = logging.getLogger(__name__)

#: The last turns of the history sent to the model, and the characters kept of each.
HISTORY_TURNS = 10
HISTORY_CHARS = 500
#: Longest reason kept in a DrafterError (they end up in responses and logs).
REASON_CHARS = 200

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)\s*```", re.DOTALL)
_SPACE = re.compile(r"\s+")


def _one_line(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def _short(text: object) -> str:
    s = _one_line(str(text))
    return s if len(s) <= REASON_CHARS else s[: REASON_CHARS - 1] + "…"


def citation_text(hit: Hit) -> str:
    """What a citation shows: the answer, or the question of a restricted snippet (never quoted)."""
    s = hit.snippet
    if s.kind == "restricted" or not s.answer.strip():
        return s.question
    return s.answer


def _snippet_line(job: DraftJob, hit: Hit) -> str:
    """One ``[id] question: answer`` line; a restricted snippet's answer is marked as a guideline."""
    s = hit.snippet
    question, answer = _one_line(s.question), _one_line(s.answer)
    if not answer:
        return job.norms.render("llm_snippet_title", id=s.id, question=question)
    name = "llm_guideline_snippet" if s.kind == "restricted" else "llm_snippet"
    return job.norms.render(name, id=s.id, question=question, answer=answer)


def _task(job: DraftJob) -> str:
    """What the plan asks for; an unknown kind, or clarify without two close snippets, is an answer."""
    kind = job.plan.kind if job.plan.kind in LLM_TASK_KINDS else "answer"
    if kind == "clarify":
        if len(job.plan.alternatives) < 2:
            return job.norms.render("llm_task_answer")
        a, b = job.plan.alternatives[:2]
        return job.norms.render(
            "llm_task_clarify", a=_one_line(a.snippet.question), b=_one_line(b.snippet.question)
        )
    return job.norms.render(f"llm_task_{kind}")


def build_messages(job: DraftJob) -> list[dict[str, str]]:
    """The chat messages of one drafting request (system: norms + JSON format; user: the task).

    Every phrase comes from the norms' ``llm_*`` templates (see ``prompts.templates.LLM_TEMPLATES``).
    """
    norms = job.norms
    system = norms.system_prompt() + "\n\n" + norms.render("llm_output_format", n=job.n)

    lines = [_snippet_line(job, hit) for hit in job.plan.hits]
    user = norms.render(
        "llm_user",
        customer_message=job.customer_message,
        snippets="\n".join(lines) or norms.render("llm_no_snippets"),
    )

    extra: list[str] = []
    turns = []
    for turn in job.history[-HISTORY_TURNS:]:
        text = _one_line(turn.text)[:HISTORY_CHARS]
        if text:  # an empty turn says nothing (and a template never renders a gap)
            name = "llm_turn_agent" if turn.role == "agent" else "llm_turn_customer"
            turns.append(norms.render(name, text=text))
    if turns:
        extra += [norms.render("llm_history_header"), *turns, ""]
    extra.append(_task(job))
    if job.first_reply:
        extra.append(norms.render("llm_first_reply"))
    else:
        extra.append(norms.render("llm_later_reply"))
    if job.apology_given:
        # the service opens each draft with its apology for the late reply: one apology, not two
        extra.append(norms.render("llm_apology_given"))
    elif job.customer_waited_s is not None and job.customer_waited_s > norms.wait_limit_s:
        extra.append(norms.render("llm_waited", seconds=round(job.customer_waited_s)))
    if job.traditional:
        extra.append(norms.render("llm_traditional"))
    extra.append(norms.render("llm_ask", n=job.n))
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": user + "\n\n" + "\n".join(extra)},
    ]


def _loads_object(content: str) -> Any:
    text = content.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    fenced = _FENCE.search(text)
    if fenced is not None:
        try:
            return json.loads(fenced.group(1))
        except ValueError as e:
            raise DrafterError(f"malformed output: the fenced block is not JSON ({e})") from None
    raise DrafterError(f"malformed output: not JSON: {_short(text) or '(empty)'}")


def parse_drafts(
    content: str | None, job: DraftJob, finish_reason: str | None = None
) -> list[DraftCandidate]:
    """The model's JSON as candidates; raises ``DrafterError("malformed output: ...")`` when none is usable."""
    if content is None or not content.strip():
        raise DrafterError("malformed output: empty message")
    try:
        data = _loads_object(content)
    except DrafterError:
        if finish_reason == "length":
            raise DrafterError("malformed output: cut off at the token limit") from None
        raise
    if not isinstance(data, dict) or not isinstance(data.get("drafts"), list):
        raise DrafterError('malformed output: expected an object {"drafts": [...]}')

    hits = {h.snippet_id: h for h in job.plan.hits}
    kind = "answer" if job.plan.kind in ("answer", "clarify") else job.plan.kind
    out: list[DraftCandidate] = []
    seen: set[str] = set()
    dropped: list[str] = []
    for i, item in enumerate(data["drafts"]):
        if not isinstance(item, dict) or not isinstance(item.get("text"), str) or not item["text"].strip():
            dropped.append(f"drafts[{i}] has no text")
            continue
        text = item["text"].strip()
        ids = item.get("citations", [])
        if ids is None:
            ids = []
        if not isinstance(ids, list):
            dropped.append(f"drafts[{i}].citations is not a list")
            continue
        if text in seen:
            dropped.append(f"drafts[{i}] repeats an earlier draft")
            continue
        seen.add(text)
        citations: list[Citation] = []
        for sid in ids:
            hit = hits.get(sid) if isinstance(sid, str) else None
            if hit is None:
                log.info("LLM draft cites %r, which is not among the plan's snippets: dropped", sid)
                continue
            if all(c.snippet_id != sid for c in citations):
                citations.append(Citation(sid, citation_text(hit), hit.score))
        style = item.get("style")
        out.append(
            DraftCandidate(
                text,
                kind,
                citations,
                style=style[:32] if isinstance(style, str) else "",
                source="llm",
            )
        )
    if dropped:
        log.info("LLM drafts dropped: %s", "; ".join(dropped))
    if not out:
        why = "; ".join(dropped) if dropped else "no drafts"
        raise DrafterError(f"malformed output: {_short(why)}")
    return out[: job.n]


def _api_error(e: Exception, timeout_s: float) -> DrafterError:
    """An ``openai`` exception as a DrafterError whose reason starts with a stable word."""
    if isinstance(e, openai.APITimeoutError):
        return DrafterError(f"timeout: no answer within {timeout_s:g}s")
    if isinstance(e, openai.APIStatusError):
        message = re.sub(r"^Error code: \d+ - ", "", e.message)
        return DrafterError(f"error status {e.status_code}: {_short(message)}")
    if isinstance(e, openai.APIConnectionError):
        cause = e.__cause__ or e
        return DrafterError(f"connection: {_short(cause) or type(cause).__name__}")
    if isinstance(e, openai.APIResponseValidationError):
        return DrafterError(f"malformed output: {_short(e.message)}")
    if isinstance(e, openai.APIError):  # e.g. an error event inside a stream
        return DrafterError(f"error status: {_short(e.message)}")
    return DrafterError(f"error: {_short(e) or type(e).__name__}")


class _DraftTextScanner:
    """Follows the model's JSON as it streams and returns the new characters of each draft's text.

    Only the strings at ``{"drafts": [{"text": ...}]}`` are reported, by draft index; everything
    else (keys, citations, code fences) is skipped. Validation happens on the whole text at the end.
    """

    _ESCAPES: ClassVar[dict[str, str]] = {
        '"': '"',
        "\\": "\\",
        "/": "/",
        "b": "\b",
        "f": "\f",
        "n": "\n",
        "r": "\r",
        "t": "\t",
    }

    def __init__(self) -> None:
        self.stack: list[str] = []  # "{" or "["
        self.keys: list[str | None] = []  # the current key of each open object
        self.expect_key = False
        self.in_string = False
        self.string_is_key = False
        self.capture = False
        self.key_buf: list[str] = []
        self.escape = False
        self.hex: str | None = None
        self.high_surrogate: int | None = None
        self.draft = -1

    def _at_draft_text(self) -> bool:
        return self.stack == ["{", "[", "{"] and self.keys[0] == "drafts" and self.keys[2] == "text"

    def feed(self, chunk: str) -> list[tuple[int, str]]:
        out: dict[int, list[str]] = {}

        def emit(s: str) -> None:
            if self.string_is_key:
                self.key_buf.append(s)
            elif self.capture:
                out.setdefault(self.draft, []).append(s)

        for ch in chunk:
            if self.in_string:
                if self.hex is not None:
                    self.hex += ch
                    if len(self.hex) == 4:
                        try:
                            code = int(self.hex, 16)
                        except ValueError:
                            code = 0xFFFD
                        self.hex = None
                        if 0xD800 <= code < 0xDC00:
                            self.high_surrogate = code
                        elif 0xDC00 <= code < 0xE000 and self.high_surrogate is not None:
                            emit(chr(0x10000 + ((self.high_surrogate - 0xD800) << 10) + (code - 0xDC00)))
                            self.high_surrogate = None
                        else:
                            emit(chr(code))
                elif self.escape:
                    self.escape = False
                    if ch == "u":
                        self.hex = ""
                    else:
                        emit(self._ESCAPES.get(ch, ch))
                elif ch == "\\":
                    self.escape = True
                elif ch == '"':
                    self.in_string = False
                    if self.string_is_key and self.keys:
                        self.keys[-1] = "".join(self.key_buf)
                    self.string_is_key = self.capture = False
                else:
                    emit(ch)
                continue
            if ch == '"':
                self.in_string = True
                self.string_is_key = bool(self.stack) and self.stack[-1] == "{" and self.expect_key
                self.key_buf = []
                self.capture = not self.string_is_key and self._at_draft_text()
            elif ch in "{[":
                if ch == "{" and self.stack == ["{", "["] and self.keys[0] == "drafts":
                    self.draft += 1
                self.stack.append(ch)
                self.keys.append(None)
                self.expect_key = ch == "{"
            elif ch in "}]":
                if self.stack:
                    self.stack.pop()
                    self.keys.pop()
                self.expect_key = False
            elif ch == ":":
                self.expect_key = False
            elif ch == ",":
                self.expect_key = bool(self.stack) and self.stack[-1] == "{"
        return [(i, "".join(parts)) for i, parts in out.items()]


class OpenAIDrafter:
    """Drafts with an OpenAI-compatible chat endpoint (``Drafter`` and ``StreamingDrafter``).

    The clients are made once; the async client is bound to the event loop that first streams (a new
    loop, as in tests, gets its own client). ``timeout_s`` bounds each network wait (connecting, and
    each read: the whole answer of an ordinary request, the gap between chunks of a stream); retries
    (``max_retries``) apply to the request before any output, with the ``openai`` package's backoff.
    """

    name = "llm"

    def __init__(self, settings: LLMSettings) -> None:
        self.settings = settings
        self._client_args: dict[str, Any] = {
            "base_url": settings.base_url,
            "api_key": str(settings.api_key) or "unused",
            "timeout": settings.timeout_s,
            "max_retries": settings.max_retries,
        }
        self.client = openai.OpenAI(**self._client_args)
        self._async: tuple[asyncio.AbstractEventLoop, openai.AsyncOpenAI] | None = None

    def _async_client(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            self._async = (loop, openai.AsyncOpenAI(**self._client_args))
        return self._async[1]

    def _request(self, job: DraftJob) -> dict[str, Any]:
        return {
            "model": self.settings.model,
            "messages": build_messages(job),
            "temperature": self.settings.temperature,
            "response_format": {"type": "json_object"},
        }

    def draft(self, job: DraftJob) -> list[DraftCandidate]:
        try:
            completion = self.client.chat.completions.create(**self._request(job))
        except openai.OpenAIError as e:
            raise _api_error(e, self.settings.timeout_s) from e
        if not completion.choices:
            raise DrafterError("malformed output: no choices in the response")
        choice = completion.choices[0]
        return parse_drafts(choice.message.content, job, choice.finish_reason)

    async def stream(self, job: DraftJob) -> AsyncIterator[dict[str, Any]]:
        """Yields ``{"type": "delta", "index": i, "text": chunk}`` as the text of draft ``i`` grows,
        then ``{"type": "drafts", "drafts": [DraftCandidate, ...]}`` (validated like ``draft``).

        A delta's index is the draft's position in the model's output; drafts dropped by validation
        are not in the final list, which is what counts.
        """
        scanner = _DraftTextScanner()
        parts: list[str] = []
        finish_reason: str | None = None
        try:
            response = await self._async_client().chat.completions.create(**self._request(job), stream=True)
            try:
                async for chunk in response:
                    if not chunk.choices:
                        continue
                    choice = chunk.choices[0]
                    finish_reason = choice.finish_reason or finish_reason
                    piece = choice.delta.content if choice.delta is not None else None
                    if not piece:
                        continue
                    parts.append(piece)
                    for index, text in scanner.feed(piece):
                        yield {"type": "delta", "index": index, "text": text}
            finally:
                await response.close()
        except openai.OpenAIError as e:
            raise _api_error(e, self.settings.timeout_s) from e
        drafts = parse_drafts("".join(parts), job, finish_reason)
        yield {"type": "drafts", "drafts": drafts}
