"""A local HTTP server that speaks the OpenAI chat completions API, for tests of the LLM drafter.

No LLM can be reached from the test machine, so this is the one fake of the project. It is a real
server on 127.0.0.1 (a free port, a background thread) and answers ``POST /v1/chat/completions``
in the wire format the ``openai`` package parses: an ordinary JSON completion, or with
``"stream": true`` server-sent ``chat.completion.chunk`` events over chunked transfer encoding,
ending with ``data: [DONE]``. Errors use the API's ``{"error": {...}}`` body.

    with FakeLLM() as llm:                      # or the ``fake_llm`` fixture
        llm.behave(delay=2.0)                   # slow; or status=500, content="not json", drafts=[]
        settings = LLMSettings(base_url=llm.base_url, model="fake", ...)
        llm.last.system                         # what the drafter sent

By default the reply is canned from the request itself: the snippet lines ``[id] question: answer``
of the user message become drafts that quote the answer and cite the id.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

_SNIPPET_LINE = re.compile(r"^\[([^\]\s]+)\] (.*?): (.*)$", re.MULTILINE)

#: The answer of a canned reply when the request holds no snippet (it cites nothing).
NO_SNIPPET_TEXT = "您好，这个问题我已经记录下来，会请相关负责人核实后尽快回复您，请您稍等。"


@dataclass
class Behaviour:
    """What the server does with the next requests (set with ``FakeLLM.behave``)."""

    #: The drafts to return; None: canned from the request's snippets (``n`` of them).
    drafts: list[dict[str, Any]] | None = None
    #: The raw message content, instead of JSON built from ``drafts`` (e.g. malformed JSON).
    content: str | None = None
    #: How many canned drafts.
    n: int = 3
    #: Wrap the JSON in a ```json fence, as some models do.
    fenced: bool = False
    #: HTTP status of the answer; anything but 200 sends the API's error body.
    status: int = 200
    #: With an error status: how many requests get it before the server answers normally (None: all).
    error_times: int | None = None
    #: Seconds to wait before the response starts.
    delay: float = 0.0
    #: Seconds to wait between streamed chunks.
    chunk_delay: float = 0.0
    #: Characters of content per streamed chunk.
    chunk_chars: int = 8
    #: The completion's finish_reason ("length" for a reply cut off at the token limit).
    finish_reason: str = "stop"


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    def message(self, role: str) -> str:
        return "\n".join(
            str(m.get("content", "")) for m in self.body.get("messages", []) if m.get("role") == role
        )

    @property
    def system(self) -> str:
        return self.message("system")

    @property
    def user(self) -> str:
        return self.message("user")

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))


def snippets_in(user_message: str) -> list[tuple[str, str, str]]:
    """The ``[id] question: answer`` lines of a user message, as (id, question, answer)."""
    return [(m.group(1), m.group(2), m.group(3)) for m in _SNIPPET_LINE.finditer(user_message)]


def canned_drafts(user_message: str, n: int) -> list[dict[str, Any]]:
    """``n`` different drafts that quote the request's snippets and cite their ids."""
    found = snippets_in(user_message)
    if not found:
        variants = [NO_SNIPPET_TEXT, NO_SNIPPET_TEXT + "感谢您的耐心。", "非常抱歉，" + NO_SNIPPET_TEXT]
        return [{"text": variants[i % len(variants)], "citations": []} for i in range(n)]
    out = []
    for i in range(n):
        sid, question, answer = found[i % len(found)]
        answer = answer.removeprefix("您好，").removeprefix("您好")  # the snippet's own greeting
        text = [
            f"您好，{answer}",
            f"您好，{answer}请问还有其他可以帮到您的吗？",
            f"您好，关于“{question}”：{answer}",
        ][i % 3]
        if i >= 3:
            text += f"（{i + 1}）"
        out.append({"text": text, "citations": [sid]})
    return out


class FakeLLM:
    """The server; ``base_url`` ends in ``/v1`` as the ``openai`` client expects."""

    def __init__(self, model: str = "fake-llm") -> None:
        self.model = model
        self.requests: list[RecordedRequest] = []
        self._behaviour = Behaviour()
        self._errors_sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openai", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def last(self) -> RecordedRequest:
        with self._lock:
            if not self.requests:
                raise AssertionError("the fake LLM has received no request")
            return self.requests[-1]

    def behave(self, **kwargs: Any) -> None:
        """Set the behaviour for the next requests (see ``Behaviour``); unset fields get defaults."""
        with self._lock:
            self._behaviour = Behaviour(**kwargs)
            self._errors_sent = 0

    def start(self) -> FakeLLM:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # ends pending delays
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- used by the handler --------------------------------------------------------------------

    def _record(self, req: RecordedRequest) -> tuple[Behaviour, bool]:
        """Records the request; returns the behaviour and whether this request gets the error status."""
        with self._lock:
            self.requests.append(req)
            b = self._behaviour
            fail = b.status != 200 and (b.error_times is None or self._errors_sent < b.error_times)
            if fail:
                self._errors_sent += 1
            return b, fail

    def _sleep(self, seconds: float) -> bool:
        """Waits; False when the server is stopping."""
        return seconds <= 0 or not self._stop.wait(seconds)


def _handler_for(fake: FakeLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send_json(
            self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
        ) -> None:
            raw = json.dumps(payload, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)

        def _error(self, status: int, message: str, kind: str) -> None:
            self._send_json(
                status,
                {"error": {"message": message, "type": kind, "param": None, "code": None}},
                # how the API asks to retry; keeps retries in tests short
                {"retry-after-ms": "20"} if status in (429, 500, 502, 503) else None,
            )

        def do_GET(self) -> None:
            self._error(404, f"unknown path {self.path}", "invalid_request_error")

        def do_POST(self) -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._post()  # (the client may give up first: a timeout test)

        def _post(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._error(404, f"unknown path {self.path}", "invalid_request_error")
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._error(400, "the request body is not JSON", "invalid_request_error")
                return
            req = RecordedRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            b, fail = fake._record(req)
            if not fake._sleep(b.delay):
                return
            if fail:
                kind = "rate_limit_exceeded" if b.status == 429 else "server_error"
                self._error(b.status, f"fake error status {b.status}", kind)
                return
            content = _content(b, req.user)
            if req.stream:
                self._stream(req, b, content)
            else:
                self._send_json(200, _completion(fake.model, content, b.finish_reason))

        def _chunk(self, data: str) -> None:
            raw = data.encode()
            self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
            self.wfile.flush()

        def _stream(self, req: RecordedRequest, b: Behaviour, content: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            cid, created = f"chatcmpl-fake-{len(fake.requests)}", int(time.time())

            def event(delta: dict[str, Any], finish: str | None = None) -> str:
                chunk = {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": fake.model,
                    "system_fingerprint": None,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                }
                return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

            self._chunk(event({"role": "assistant", "content": ""}))
            step = max(1, b.chunk_chars)
            for i in range(0, len(content), step):
                if not fake._sleep(b.chunk_delay):
                    return
                self._chunk(event({"content": content[i : i + step]}))
            self._chunk(event({}, b.finish_reason))
            self._chunk("data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


def _content(b: Behaviour, user_message: str) -> str:
    if b.content is not None:
        return b.content
    drafts = b.drafts if b.drafts is not None else canned_drafts(user_message, b.n)
    text = json.dumps({"drafts": drafts}, ensure_ascii=False)
    return f"```json\n{text}\n```" if b.fenced else text


def _completion(model: str, content: str, finish_reason: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": len(content), "total_tokens": len(content)},
    }


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    """A running fake OpenAI server for one test: ``.base_url``, ``.behave(...)``, ``.requests``."""
    with FakeLLM() as server:
        yield server
