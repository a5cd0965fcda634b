"""Tuned embedding models kept in the shared database.

Replicas need nothing but the database (DESIGN): a model trained by ``kefu kb tune`` on one machine
is stored whole in ``kb_models`` (a gzipped tar of its sentence-transformers directory, with a
checksum), and the KB's active model is a reference ``db:<id>`` in ``kb_meta``. Each process unpacks
a model once into its local cache directory (``KEFU_MODELS_DIR``), checks the checksum, and loads it
from there. Switching the active model bumps the KB revision, which every replica already follows,
so each one notices the switch at its next search and swaps the model in.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from knowledge import schema as t
from knowledge.errors import KefuError, NotFoundError
from knowledge.store import Store, writing

DB_PREFIX = "db:"
ACTIVE_MODEL_KEY = "embedding_model"
PREVIOUS_MODEL_KEY = "embedding_model_previous"
_CHECK_FILE = ".kefu-sha256"


class ModelStoreError(KefuError):
    code = "model_store_error"


@dataclass(frozen=True)
class StoredModel:
    id: str
    created_at: datetime
    meta: dict[str, Any]
    sha256: str
    size: int

    @property
    def ref(self) -> str:
        return DB_PREFIX + self.id

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ref": self.ref,
            "created_at": self.created_at.isoformat(),
            "size": self.size,
            "sha256": self.sha256,
            "meta": self.meta,
        }


def _pack(model_dir: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for f in sorted(p for p in model_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
            info = tar.gettarinfo(str(f), arcname=str(f.relative_to(model_dir)))
            # Reproducible archives: the same model gives the same bytes (and checksum).
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with f.open("rb") as fh:
                tar.addfile(info, fh)
    return buf.getvalue()


def _unpack(data: bytes, dest: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            target = (dest / member.name).resolve()
            if not member.isfile() or dest.resolve() not in target.parents:
                raise ModelStoreError(
                    f"模型文件包含不安全的路径 {member.name}",
                    f"unsafe path in the model archive: {member.name}",
                )
        tar.extractall(dest, filter="data")


class ModelStore:
    """The ``kb_models`` table and the active/previous model pointers of one KB."""

    def __init__(self, store: Store, cache_dir: Path) -> None:
        self.store = store
        self.cache_dir = Path(cache_dir)

    def save(self, model_dir: Path, model_id: str, meta: dict[str, Any]) -> StoredModel:
        data = _pack(Path(model_dir))
        digest = hashlib.sha256(data).hexdigest()
        at = datetime.now(UTC)
        with writing(self.store.engine) as conn:
            conn.execute(
                t.kb_models.insert().values(
                    id=model_id,
                    created_at=at,
                    meta=json.dumps(meta, ensure_ascii=False, default=str),
                    sha256=digest,
                    size=len(data),
                    archive=data,
                )
            )
        return StoredModel(model_id, at, meta, digest, len(data))

    def list(self) -> list[StoredModel]:
        cols = [t.kb_models.c[n] for n in ("id", "created_at", "meta", "sha256", "size")]
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(*cols).order_by(t.kb_models.c.created_at)).all()
        return [_stored(r) for r in rows]

    def get(self, model_id: str) -> StoredModel:
        cols = [t.kb_models.c[n] for n in ("id", "created_at", "meta", "sha256", "size")]
        with self.store.engine.connect() as conn:
            row = conn.execute(select(*cols).where(t.kb_models.c.id == model_id)).first()
        if row is None:
            raise NotFoundError(f"模型 {model_id} 不在数据库中", f"model {model_id!r} is not in the database")
        return _stored(row)

    def local_path(self, model_id: str) -> Path:
        """The model unpacked under the cache directory (from the database the first time)."""
        info = self.get(model_id)
        path = self.cache_dir / model_id
        check = path / _CHECK_FILE
        if check.exists() and check.read_text().strip() == info.sha256:
            return path
        with self.store.engine.connect() as conn:
            data = conn.execute(
                select(t.kb_models.c.archive).where(t.kb_models.c.id == model_id)
            ).scalar_one()
        data = bytes(data)
        if hashlib.sha256(data).hexdigest() != info.sha256:
            raise ModelStoreError(
                f"数据库中的模型 {model_id} 校验和不符；请重新运行 kefu kb tune",
                f"model {model_id!r} in the database fails its checksum; run kefu kb tune again",
            )
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{model_id}-", dir=self.cache_dir))
        try:
            _unpack(data, tmp)
            (tmp / _CHECK_FILE).write_text(info.sha256)
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
            try:
                tmp.rename(path)
            except OSError:  # another process of this machine unpacked it at the same moment
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    # -- which model is active -------------------------------------------------------------------

    def active_ref(self) -> str | None:
        return self.store.get_meta(ACTIVE_MODEL_KEY)

    def previous_ref(self) -> str | None:
        return self.store.get_meta(PREVIOUS_MODEL_KEY)

    def activate(self, ref: str) -> None:
        """Make ``ref`` the active model, remember the one it replaces, and bump the KB revision."""
        current = self.active_ref()
        values = {ACTIVE_MODEL_KEY: ref}
        if current and current != ref:
            values[PREVIOUS_MODEL_KEY] = current
        self.store.set_meta_many(values, bump_revision=True)

    def rollback(self) -> str:
        """Switch back to the previous model (the current one becomes the previous)."""
        prev = self.previous_ref()
        if not prev:
            raise ModelStoreError("没有可以回退的上一个模型", "there is no previous model to roll back to")
        if prev.startswith(DB_PREFIX):
            self.get(prev[len(DB_PREFIX) :])  # still stored
        self.activate(prev)
        return prev


def _stored(row: Any) -> StoredModel:
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    return StoredModel(row.id, created, json.loads(row.meta), row.sha256, int(row.size))
