"""Two server processes sharing one PostgreSQL database: an edit through one is used by the other."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from knowledge.model import Snippet
from knowledge.store import Store
from suggest.storage import SuggestStore
from tests.helpers_server import free_port

pytestmark = pytest.mark.postgres


def _start(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "suggest.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def _wait_healthy(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"server did not become healthy: {log.read_text(errors='replace')[-2000:]}")


@pytest.fixture
def two_servers(pg_url: str, demo_snippets: list[Snippet], tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    store = Store(pg_url)
    store.import_snippets(demo_snippets, actor="t")
    key, _ = SuggestStore(store.engine).create_key("admin", "multiprocess test")
    store.close()
    procs = []
    bases = []
    for name in ("a", "b"):
        port = free_port()
        env = {
            **os.environ,
            "KEFU_DATABASE_URL": pg_url,
            "KEFU_INDEX_DIR": str(tmp_path / f"index-{name}"),
            "KEFU_MODELS_DIR": str(tmp_path / "models"),
            "KEFU_LOG_LEVEL": "WARNING",
        }
        env.pop("KEFU_EMBEDDING_MODEL", None)
        log = tmp_path / f"server-{name}.log"
        procs.append((_start(env, port, log), log))
        bases.append(f"http://127.0.0.1:{port}")
    try:
        for base, (proc, log) in zip(bases, procs, strict=True):
            _wait_healthy(base, proc, log)
        yield bases[0], bases[1], key
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_edit_through_one_process_is_used_by_the_other(two_servers: tuple[str, str, str]) -> None:
    a, b, key = two_servers
    auth = {"Authorization": f"Bearer {key}"}
    before = httpx.post(
        f"{b}/v1/suggestions",
        headers=auth,
        json={"conversation_id": "mp-1", "customer_message": "能用数字人民币付款吗"},
    ).json()
    assert (
        before["escalate"] is True
        or before["drafts"][0]["citations"][0]["snippet_id"] != "faq-payment-methods"
    )

    current = httpx.get(f"{a}/v1/knowledge/snippets/faq-payment-methods", headers=auth)
    etag = current.headers["etag"]
    similar = [*current.json()["similar_questions"], "能用数字人民币付款吗"]
    answer = "支持微信支付、支付宝、银行卡和数字人民币，结算时选择即可。"
    r = httpx.put(
        f"{a}/v1/knowledge/snippets/faq-payment-methods",
        headers={**auth, "If-Match": etag},
        json={"similar_questions": similar, "answer": answer},
    )
    assert r.status_code == 200

    after = httpx.post(
        f"{b}/v1/suggestions",
        headers=auth,
        json={"conversation_id": "mp-2", "customer_message": "能用数字人民币付款吗"},
    ).json()
    top = after["drafts"][0]
    assert top["citations"][0]["snippet_id"] == "faq-payment-methods"
    assert "数字人民币" in top["text"]
    health_b = httpx.get(f"{b}/health").json()
    assert (
        health_b["checks"]["database"]["dialect"] == "postgresql"
        and health_b["checks"]["index"]["behind"] == 0
    )
