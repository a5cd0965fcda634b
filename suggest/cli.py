"""The ``kefu`` command: knowledge base, evaluation and the service."""

from __future__ import annotations

import argparse
import sys

from eval.bench import add_bench_parser, run_bench
from eval.cli import add_eval_parser, run_eval
from knowledge.cli import add_kb_parser, handle_error, run_kb
from knowledge.errors import KefuError
from suggest.keys_cli import add_keys_parser, run_keys
from suggest.records_cli import add_records_parser, run_records


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kefu", description="kefu-assist: 在线客服回复建议 / reply suggestions"
    )
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    p = sub.add_parser("serve", help="serve the HTTP API (默认 http://127.0.0.1:8000)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    add_kb_parser(sub)
    add_eval_parser(sub)
    add_keys_parser(sub)
    add_records_parser(sub)
    add_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "serve":
            from suggest.server import serve

            return serve(args.host, args.port, args.workers)
        if args.cmd == "kb":
            return run_kb(args)
        if args.cmd == "eval":
            return run_eval(args)
        if args.cmd == "keys":
            return run_keys(args)
        if args.cmd == "records":
            return run_records(args)
        if args.cmd == "bench":
            return run_bench(args)
    except KefuError as e:
        return handle_error(e)
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
