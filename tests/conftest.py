"""Shared fixtures: real databases (SQLite file and PostgreSQL), real embedders, the demo KB."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The tiers run on the tuned static model and the bundled one: e5 on every test's KB and intents would
# cost about a minute a test server (its examples and KB texts encoded anew in each temporary store).
# The tests about e5 (tests/test_e5.py, tests/test_intent_semantic.py) ask for it explicitly; a run
# with KEFU_ENCODER set in the environment keeps that choice.
os.environ.setdefault("KEFU_ENCODER", "none")
# pytest runs one test at a time: the e5 tests' batch encodings may use both cores of a 2-core CI
# machine (65.7 texts/s instead of 39.7 on one thread; the service keeps one per worker).
os.environ.setdefault("KEFU_ENCODER_THREADS", "2")

from knowledge.embedding import SentenceTransformerEmbedder
from knowledge.io import read_snippets
from knowledge.model import Snippet
from knowledge.store import Store

pytest_plugins = ["tests.fake_openai", "tests.browser"]

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
PG_ADMIN_URL = os.environ.get("KEFU_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _pg_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", connect_timeout=3):
            return None
    except Exception as e:
        return str(e)


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[str]:
    why = _pg_available()
    if why is not None:
        if IN_CI:
            pytest.fail(f"PostgreSQL must run in CI (CI=true) but is not reachable on 127.0.0.1:5432: {why}")
        pytest.skip(f"PostgreSQL not reachable on 127.0.0.1:5432 ({why}); start it to run these tests")
    yield PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_admin: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    name = f"kefu_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kefu.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.close()


@pytest.fixture(scope="session")
def minilm() -> SentenceTransformerEmbedder:
    """The bundled all-MiniLM-L6-v2, loaded once (a real model, from site-packages)."""
    return SentenceTransformerEmbedder()


@pytest.fixture(scope="session")
def demo_snippets() -> list[Snippet]:
    return read_snippets(REPO / "knowledge" / "data" / "demo_kb.jsonl")


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory, demo_snippets: list[Snippet]) -> Path:
    """A KB static model trained on the demo KB (about a second), shared by the tests."""
    from knowledge.tuning import TuneParams, kb_pairs, train_static_model

    out = tmp_path_factory.mktemp("models") / "demo-static"
    texts = [t for s in demo_snippets for _, t in s.texts()]
    return train_static_model(texts, kb_pairs(demo_snippets), out, params=TuneParams(dim=64, epochs=3))


def snippet(id: str, question: str, answer: str = "答案", **kw: object) -> Snippet:
    return Snippet(id=id, question=question, answer=answer, **kw)  # type: ignore[arg-type]
