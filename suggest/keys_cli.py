"""``kefu keys ...``: API keys for agents, editors, evaluators and admins."""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from sqlalchemy.engine import make_url

from knowledge.settings import KnowledgeSettings
from knowledge.store import create_db_engine
from suggest.storage import ROLES, SuggestStore

DEMO_KEY_NAME = "demo-admin.key"


def demo_key_file(database_url: str) -> Path:
    """Where ``kefu keys demo`` keeps the demo key of a database: ``KEFU_DEMO_KEY_FILE`` if set; beside
    a SQLite database file (``var/kefu.db`` -> ``var/demo-admin.key``); else under ``var/`` with the
    server and database in its name. One file per database: a key is only valid in its own."""
    explicit = os.environ.get("KEFU_DEMO_KEY_FILE", "").strip()
    if explicit:
        return Path(explicit)
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).parent / DEMO_KEY_NAME
    where = "-".join(str(x) for x in (url.host, url.port, url.database) if x) or url.get_backend_name()
    return Path("var") / f"demo-admin-{re.sub(r'[^A-Za-z0-9_.-]+', '_', where)}.key"


def add_keys_parser(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="API keys (密钥管理)")
    ks = keys.add_subparsers(dest="keys_cmd", required=True, metavar="COMMAND")
    p = ks.add_parser("create", help="create a key; it is printed once, on the last line")
    p.add_argument("--role", choices=ROLES, required=True)
    p.add_argument("--name", default="", help="who or what uses it (shown in logs and records)")
    p = ks.add_parser("list", help="list keys (never their secrets)")
    p.add_argument("--json", action="store_true")
    p = ks.add_parser("revoke", help="revoke a key by its id")
    p.add_argument("id")
    p = ks.add_parser("demo", help="create (once) the demo admin key of `make serve` and print how to use it")
    p.add_argument("--port", type=int, default=int(os.environ.get("KEFU_PORT", "8000")))


def run_keys(args: argparse.Namespace) -> int:
    engine = create_db_engine(KnowledgeSettings().database_url)
    try:
        store = SuggestStore(engine)
        if args.keys_cmd == "create":
            key, info = store.create_key(args.role, args.name)
            print(
                f"已创建 {info.role} 密钥 {info.id}（只显示这一次，请妥善保存）/ created {info.role} key {info.id} (shown once):"
            )
            print(key)
        elif args.keys_cmd == "list":
            keys = store.list_keys()
            if args.json:
                print(json.dumps([k.to_dict() for k in keys], ensure_ascii=False, indent=2))
            for k in [] if args.json else keys:
                state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
                print(f"{k.id}  {k.role:<9} {state:<18} {k.name}")
        elif args.keys_cmd == "revoke":
            store.revoke_key(args.id)
            print(f"已吊销 / revoked {args.id}")
        else:
            return _demo(store, args.port, demo_key_file(KnowledgeSettings().database_url))
    finally:
        engine.dispose()
    return 0


def _demo(store: SuggestStore, port: int, key_file: Path) -> int:
    key = key_file.read_text("utf-8").strip() if key_file.exists() else ""
    if not key or store.verify_key(key) is None:
        key, _ = store.create_key("admin", "demo admin (make serve)")
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(key + "\n", "utf-8")
        key_file.chmod(0o600)
    base = f"http://127.0.0.1:{port}"
    body = '{"conversation_id": "demo-1", "customer_message": "请问怎么申请退货？"}'
    print(
        f"\n演示管理员密钥 / demo admin key (saved in {key_file}):\n"
        f"  {key}\n"
        "浏览器里打开坐席工作台（一键登录，密钥只留在该标签页）/ open the agent console (signs you in; the key\n"
        "stays in that browser tab only):\n"
        f"  {base}/console#key={key}\n"
        f"  或打开 {base}/console 粘贴上面的密钥 / or open {base}/console and paste the key above\n"
        f"  知识库 / knowledge base: {base}/kb    受理记录 / records: {base}/records\n"
        "试一试 API / try the API:\n"
        f"  curl -s {base}/v1/suggestions -H 'Authorization: Bearer {key}' "
        f"-H 'content-type: application/json' -d '{body}'\n"
    )
    return 0
