"""Page-load timing of the browser pages against a running server, in headless Chromium.

    python -m suggest.web.bench --base http://127.0.0.1:8000 --key "$(cat var/demo-admin.key)"

For each page it measures, over ``--runs`` navigations in one signed-in tab, the browser's own time from
the start of the navigation to the page's "kefu:loaded" mark: the shell loaded and every fragment the
page loads at once answered and swapped in (console: conversation list and service state; kb: the
sign-in; records: today's records and the evaluation panel). Also the first visit in a fresh tab
(nothing cached, the key checked before anything loads), a hit test on /kb, and opening a conversation
in the console (click to its view swapped in, measured in the page, so it includes the driver's click).
``driver_wall_p50_ms`` is the same load timed from Python, with Playwright's own round trips. Needs the dev extra (Playwright) and Debian's Chromium.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

import httpx

CHROMIUM = os.environ.get("KEFU_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: What must be on screen before a page counts as loaded.
READY = {
    "/console": ["#conv-list .side-title", "#autoreply .badge"],
    "/kb": ["#who:not([hidden])"],
    "/records": ["#records-table [data-records]", "#eval [data-eval], #eval .flash"],
}
QUESTIONS = ["请问怎么申请退货？", "运费怎么算？", "发票怎么开？", "支持哪些支付方式？", "几天能到？"]


def _stats(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {
        "n": len(xs),
        "p50_ms": round(statistics.median(xs), 1),
        "p95_ms": round(xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))], 1),
        "max_ms": round(xs[-1], 1),
    }


def _load(page: Any, base: str, path: str) -> tuple[float, float]:
    """(in-page ms from navigation start to the "kefu:loaded" mark, wall-clock ms seen by the driver)."""
    t0 = time.perf_counter()
    page.goto(base + path, wait_until="commit")
    page.wait_for_function("() => performance.getEntriesByName('kefu:loaded').length > 0")
    for sel in READY[path]:
        page.wait_for_selector(sel)
    wall = (time.perf_counter() - t0) * 1000
    loaded = float(page.evaluate("performance.getEntriesByName('kefu:loaded')[0].startTime"))
    return loaded, wall


def _search(page: Any) -> float:
    """Hit testing on /kb: from the click to the results in the page (in-page clock)."""
    page.evaluate("() => document.querySelector('#search-results').replaceChildren()")
    page.locator(".searchbar input[name=query]").fill("东西坏了能退吗")
    t0 = float(page.evaluate("performance.now()"))
    page.locator(".searchbar button[type=submit]").click()
    page.wait_for_selector("#search-results [data-query]")
    return (
        float(
            page.evaluate(
                "performance.getEntriesByType('resource').filter(e => e.name.endsWith('/ui/kb/search')).pop().responseEnd"
            )
        )
        - t0
    )


def run(base: str, key: str, runs: int, conversations: int) -> dict[str, Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sys.exit("需要 Playwright（pip install -e '.[dev]'）/ needs Playwright (pip install -e '.[dev]')")
    if not os.path.exists(CHROMIUM):
        sys.exit(f"找不到 Chromium：{CHROMIUM} / Chromium not found at {CHROMIUM} (apt-get install chromium)")
    headers = {"Authorization": f"Bearer {key}"}
    try:
        who = httpx.get(f"{base}/ui/whoami", headers=headers, timeout=30)
        if who.status_code != 200:
            sys.exit(f"密钥不能用（{who.status_code}）/ the key is not accepted ({who.status_code})")
        for i in range(conversations):
            httpx.post(
                f"{base}/v1/suggestions",
                headers=headers,
                json={"conversation_id": f"bench-web-{i}", "customer_message": QUESTIONS[i % len(QUESTIONS)]},
                timeout=60,
            ).raise_for_status()
    except httpx.HTTPError as e:
        sys.exit(
            f"连不上服务 {base}（先运行 make serve）/ cannot use the service at {base} (run make serve): {e}"
        )
    out: dict[str, Any] = {"base": base, "runs": runs, "conversations_added": conversations, "pages": {}}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            for path in READY:
                cold = browser.new_context(viewport={"width": 1280, "height": 900})
                page = cold.new_page()
                page.goto(f"{base}/console#key={key}")  # sign in (the key goes to this tab's session)
                page.wait_for_selector("#who:not([hidden])")
                first, _ = _load(page, base, path)
                cold.close()
                ctx = browser.new_context(viewport={"width": 1280, "height": 900})
                page = ctx.new_page()
                page.goto(f"{base}/console#key={key}")
                page.wait_for_selector("#who:not([hidden])")
                _load(page, base, path)  # warm-up
                loads = [_load(page, base, path) for _ in range(runs)]
                out["pages"][path] = {
                    "first_visit_ms": round(first, 1),
                    **_stats([x[0] for x in loads]),
                    "driver_wall_p50_ms": round(statistics.median(x[1] for x in loads), 1),
                }
                if path == "/kb":
                    out["pages"]["/kb: hit test"] = _stats([_search(page) for _ in range(runs)])
                if path == "/console" and conversations:
                    clicks = []
                    for i in range(min(runs, conversations)):
                        link = page.locator(f"#conv-list a.conv[data-conv='bench-web-{i}']")
                        link.wait_for()
                        t0 = float(page.evaluate("performance.now()"))
                        link.click()
                        page.wait_for_selector(f"#conv-view .conv-head[data-conversation='bench-web-{i}']")
                        t1 = float(page.evaluate("performance.now()"))
                        clicks.append(t1 - t0)
                    out["pages"]["/console: open a conversation"] = _stats(clicks)
                ctx.close()
        finally:
            browser.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="http://127.0.0.1:8000")
    p.add_argument("--key", default=os.environ.get("KEFU_KEY", ""), help="an admin key (default: $KEFU_KEY)")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--conversations", type=int, default=20, help="suggestions to post first (bench-web-N)")
    args = p.parse_args(argv)
    if not args.key:
        p.error('--key is required (e.g. --key "$(cat var/demo-admin.key)")')
    print(json.dumps(run(args.base, args.key, args.runs, args.conversations), ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
