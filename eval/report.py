"""Reports of an evaluation run: ``report.json`` (everything), ``report.md`` (the summary table) and a
self-contained ``report.html`` (inline SVG charts, no script, no network).

Every evaluator hands over the same shape (``build``): the aggregated metrics, the figures (per-rule
compliance, a latency histogram, the intent confusion matrix), the cases and the failing cases with
their violating spans. ``compare`` adds a baseline (an older ``report.json``): every metric and every
figure then shows its change. ``check_bars`` implements ``--fail-under METRIC=VALUE``.
"""

from __future__ import annotations

import html
import json
import math
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eval.metrics import MetricRun, json_number

REPORT_FILES = ("report.json", "report.md", "report.html")


# -- building ----------------------------------------------------------------------------------------


def machine() -> str:
    import os

    return f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"


def metrics_dict(runs: dict[str, MetricRun]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, run in runs.items():
        m = run.metric
        d = run.total.to_dict()
        d.update(description=m.description, higher_is_better=m.higher_is_better, group=m.group)
        out[name] = d
    return out


def build(
    kind: str,
    title: str,
    *,
    setup: dict[str, Any],
    runs: dict[str, MetricRun],
    figures: dict[str, Any],
    cases: list[dict[str, Any]],
    failing: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "title": title,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "setup": setup,
        "metrics": metrics_dict(runs),
        "figures": figures,
        **(extra or {}),
        "failing": failing,
        "cases": cases,
    }


def rule_figure(runs: dict[str, MetricRun], severities: dict[str, str]) -> list[dict[str, Any]]:
    """Per-rule compliance bars from the ``norms.<rule>`` metrics."""
    out = []
    for name, run in runs.items():
        if not name.startswith("norms."):
            continue
        rule = name.removeprefix("norms.")
        out.append(
            {"rule": rule, "severity": severities.get(rule, ""), "value": json_number(run.total.value)}
        )
    return out


def spans_of(text: str, violations: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The violations of a text as spans to highlight (zero-length ones mark where text is missing)."""
    return [
        {
            "start": v["span"][0],
            "end": v["span"][1],
            "rule": v["rule_id"],
            "severity": v["severity"],
            "message": v["message"],
        }
        for v in violations
        if 0 <= v["span"][0] <= v["span"][1] <= len(text)
    ]


# -- baseline ----------------------------------------------------------------------------------------


class BaselineError(ValueError):
    pass


def load_baseline(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError:
        raise BaselineError(f"基线文件不存在：{path} / baseline file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BaselineError(f"无法读取基线 {path}：{e} / cannot read the baseline {path}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise BaselineError(
            f"{path} 不是评估报告（缺少 metrics）/ {path} is not an evaluation report.json (no metrics)"
        )
    return data


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def compare(report: dict[str, Any], baseline: dict[str, Any], path: str) -> None:
    """Attach the baseline's figures and every metric's change (``delta``; None where either is NaN)."""
    if baseline.get("kind") not in (None, report["kind"]):
        raise BaselineError(
            f"基线是 {baseline.get('kind')} 报告，不能和 {report['kind']} 比较 / "
            f"the baseline is a {baseline.get('kind')} report, not {report['kind']}"
        )
    metrics: dict[str, Any] = {}
    for name, m in report["metrics"].items():
        old = baseline["metrics"].get(name)
        ov = _num(old.get("value")) if isinstance(old, dict) else None
        nv = _num(m.get("value"))
        delta = None if ov is None or nv is None else round(nv - ov, 6)
        m["baseline"] = ov
        m["delta"] = delta
        metrics[name] = {"value": ov, "delta": delta}
    report["baseline"] = {
        "path": path,
        "created_at": baseline.get("created_at"),
        "metrics": metrics,
        "figures": baseline.get("figures", {}),
    }


# -- fail-under --------------------------------------------------------------------------------------


def parse_bars(specs: Sequence[str]) -> list[tuple[str, float]]:
    bars = []
    for spec in specs:
        name, sep, value = spec.partition("=")
        try:
            bar = float(value)
        except ValueError:
            bar = math.nan
        if not sep or not name.strip() or math.isnan(bar):
            raise ValueError(
                f"--fail-under 应写成 METRIC=VALUE，例如 groundedness=1.0：{spec!r} / "
                f"--fail-under takes METRIC=VALUE, e.g. groundedness=1.0: {spec!r}"
            )
        bars.append((name.strip(), bar))
    return bars


def check_bars(report: dict[str, Any], bars: Sequence[tuple[str, float]]) -> list[str]:
    """A message for every metric below its bar (or not measured); unknown metrics raise ValueError."""
    known = report["metrics"]
    unknown = [n for n, _ in bars if n not in known]
    if unknown:
        raise ValueError(
            f"未知指标：{', '.join(unknown)}；可用：{', '.join(known)} / "
            f"unknown metric(s): {', '.join(unknown)}; known: {', '.join(known)}"
        )
    failures = []
    for name, bar in bars:
        value = _num(known[name].get("value"))
        if value is None:
            failures.append(
                f"{name} 未测得（不适用于任何用例），要求 >= {bar:g} / {name} was not measured "
                f"(applies to no case); the bar is {bar:g}"
            )
        elif value < bar - 1e-12:
            failures.append(
                f"{name} = {value:.4f}，低于要求 {bar:g} / {name} = {value:.4f} is below its bar {bar:g} "
                f"({known[name].get('reason', '')})"
            )
    return failures


# -- writing -----------------------------------------------------------------------------------------


def write(report: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f for f in REPORT_FILES]
    paths[0].write_text(json.dumps(report, ensure_ascii=False, indent=1, default=str) + "\n", "utf-8")
    paths[1].write_text(render_markdown(report), "utf-8")
    paths[2].write_text(render_html(report), "utf-8")
    return paths


def fmt(v: Any, name: str = "") -> str:
    x = _num(v)
    if x is None:
        return "n/a"
    if name.endswith("_ms") or name.endswith("_s"):
        return f"{x:.1f}"
    return f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"


def fmt_delta(m: dict[str, Any], name: str = "") -> str:
    d = m.get("delta")
    if d is None:
        return "n/a" if "baseline" in m else ""
    if abs(d) < 1e-9:
        return "±0"
    return ("+" if d > 0 else "−") + fmt(abs(d), name)


def _better(m: dict[str, Any]) -> int:
    d = m.get("delta")
    if d is None or abs(d) < 1e-9:
        return 0
    return 1 if (d > 0) == bool(m.get("higher_is_better", True)) else -1


def render_markdown(report: dict[str, Any]) -> str:
    has_base = "baseline" in report
    lines = [f"# {report['title']}", ""]
    lines.append(f"{report['created_at']} · {report['machine']}")
    lines += ["", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["setup"].items() if v is not None]
    if has_base:
        lines += ["", f"Baseline: `{report['baseline']['path']}` ({report['baseline'].get('created_at')})"]
    head = "| metric | value | baseline | change | reason |" if has_base else "| metric | value | reason |"
    lines += ["", "## Metrics", "", head, "|---|---|---|---|---|" if has_base else "|---|---|---|"]
    for name, m in report["metrics"].items():
        reason = str(m.get("reason", "")).replace("|", "\\|")
        if has_base:
            lines.append(
                f"| {name} | {fmt(m['value'], name)} | {fmt(m.get('baseline'), name)} | "
                f"{fmt_delta(m, name)} | {reason} |"
            )
        else:
            lines.append(f"| {name} | {fmt(m['value'], name)} | {reason} |")
    agents = report.get("per_agent")
    if agents:
        rules = [r["rule"] for r in report["figures"].get("rules", [])]
        lines += [
            "",
            "## Per agent (violation rate)",
            "",
            "| agent | replies | clean | " + " | ".join(rules) + " |",
        ]
        lines.append("|---" * (len(rules) + 3) + "|")
        for agent, a in list(agents.items())[:30]:
            rates = " | ".join(f"{a['violation_rate'].get(r, 0):.3f}" for r in rules)
            lines.append(f"| {agent} | {a['replies']} | {a['clean']:.3f} | {rates} |")
    failing = report.get("failing", [])
    lines += ["", f"## Failing cases ({len(failing)})", ""]
    if not failing:
        lines.append("None.")
    for f in failing[:30]:
        lines.append(f"- **{f['id']}** — {'; '.join(f['reasons'])}")
        for t in f.get("texts", []):
            if t.get("spans"):
                lines.append(f"  - {_mark_md(t['text'], t['spans'])}")
    if len(failing) > 30:
        lines.append(f"- … {len(failing) - 30} more in report.json / report.html")
    return "\n".join(lines) + "\n"


def _mark_md(text: str, spans: list[dict[str, Any]]) -> str:
    marks, whole = choose_spans(text, spans)
    out, pos = [], 0
    for s in marks:
        out.append(text[pos : s["start"]])
        seg = text[s["start"] : s["end"]]
        out.append(f"**【{seg}】**" if seg else f"**【⟂{s['rule']}】**")
        pos = s["end"]
    out.append(text[pos:])
    out += [f" `{s['rule']}`" for s in whole]
    return "".join(out).replace("\n", " ")


# -- HTML and SVG ------------------------------------------------------------------------------------

_CSS = """
body{font-family:"WenQuanYi Micro Hei","Noto Sans CJK SC","PingFang SC","Microsoft YaHei",sans-serif;
margin:24px auto;max-width:1100px;color:#1f2933;line-height:1.5}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #d9e2ec}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #d9e2ec;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f0f4f8}.num{text-align:right;font-variant-numeric:tabular-nums}
.better{color:#0a7a32}.worse{color:#c81e1e}.muted{color:#7b8794}
mark{background:#ffe3e3;border-bottom:2px solid #c81e1e;padding:0 1px}mark.warning{background:#fff3c4;
border-bottom-color:#b7791f}mark.gap{background:#c81e1e;color:#fff;font-size:11px;padding:0 3px}
.case{border:1px solid #d9e2ec;border-radius:4px;padding:8px 12px;margin:8px 0}.case p{margin:4px 0}
.badge{font-size:11px;border-radius:3px;padding:0 4px;background:#fff3c4;color:#8d5b00}
.badge.error{background:#ffe3e3;color:#c81e1e}.turn{margin:2px 0}.role{display:inline-block;width:44px;color:#7b8794}
figure{margin:12px 0}figcaption{font-size:13px;color:#52606d}
"""


def _e(s: Any) -> str:
    return html.escape(str(s))


def bars_svg(rows: list[dict[str, Any]], base: dict[str, float | None]) -> str:
    """Horizontal compliance bars (0-1), with the baseline as a dark tick and the change as text."""
    width, label_w, bar_w, row_h = 760, 190, 440, 26
    height = row_h * len(rows) + 30
    parts = [
        f'<svg class="chart" id="rules-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="per-rule compliance">'
    ]
    for x in (0, 0.25, 0.5, 0.75, 1.0):
        gx = label_w + bar_w * x
        parts.append(f'<line x1="{gx}" y1="0" x2="{gx}" y2="{height - 20}" stroke="#e4e7eb"/>')
        parts.append(f'<text x="{gx}" y="{height - 6}" font-size="11" text-anchor="middle">{x:.0%}</text>')
    for i, r in enumerate(rows):
        y = i * row_h + 4
        v = _num(r.get("value"))
        color = "#c81e1e" if r.get("severity") == "error" else "#d69e2e"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 15}" font-size="12" text-anchor="end">{_e(r["rule"])}'
            f"{' (error)' if r.get('severity') == 'error' else ''}</text>"
        )
        parts.append(f'<rect x="{label_w}" y="{y}" width="{bar_w}" height="18" fill="#f0f4f8"/>')
        if v is not None:
            parts.append(
                f'<rect class="bar" x="{label_w}" y="{y}" width="{bar_w * v:.1f}" height="18" '
                f'fill="{"#2f855a" if v >= 0.9999 else color}"><title>{_e(r["rule"])}: {v:.3f}</title></rect>'
            )
        label = "n/a" if v is None else f"{v:.1%}"
        b = _num(base.get(r["rule"])) if base else None
        if b is not None:
            bx = label_w + bar_w * b
            parts.append(
                f'<line x1="{bx:.1f}" y1="{y - 2}" x2="{bx:.1f}" y2="{y + 20}" stroke="#1f2933" stroke-width="2"/>'
            )
            if v is not None:
                d = v - b
                label += (
                    f"  ({'+' if d >= 0 else '−'}{abs(d):.1%} vs baseline)" if abs(d) > 1e-9 else "  (±0)"
                )
        parts.append(f'<text x="{label_w + bar_w + 8}" y="{y + 14}" font-size="12">{_e(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram_svg(hist: dict[str, Any], base: dict[str, Any] | None, unit: str, chart_id: str) -> str:
    """Vertical histogram bars; the baseline's counts as outlined bars beside them."""
    edges, counts = hist["edges"], hist["counts"]
    base_counts = base["counts"] if base and base.get("edges") == edges else None
    n = len(counts)
    width, height, left, bottom = 760, 250, 40, 40
    slot = (width - left - 10) / max(n, 1)
    top = max([*counts, *(base_counts or []), 1])
    parts = [
        f'<svg class="chart" id="{chart_id}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="histogram">'
    ]
    plot_h = height - bottom - 24  # room for the count above the tallest bar
    parts.append(
        f'<line x1="{left}" y1="{24 + plot_h}" x2="{width - 10}" y2="{24 + plot_h}" stroke="#9aa5b1"/>'
    )
    for i, c in enumerate(counts):
        x = left + i * slot
        w = slot * (0.42 if base_counts else 0.8)
        h = plot_h * c / top
        parts.append(
            f'<rect class="bar" x="{x + slot * 0.08:.1f}" y="{24 + plot_h - h:.1f}" width="{w:.1f}" '
            f'height="{max(h, 0.5):.1f}" fill="#3e7cb1"><title>{c}</title></rect>'
        )
        parts.append(
            f'<text x="{x + slot * 0.08 + w / 2:.1f}" y="{20 + plot_h - h:.1f}" font-size="10" text-anchor="middle">{c}</text>'
        )
        if base_counts:
            bh = plot_h * base_counts[i] / top
            bx = x + slot * 0.52
            parts.append(
                f'<rect class="baseline" x="{bx:.1f}" y="{24 + plot_h - bh:.1f}" width="{w:.1f}" '
                f'height="{max(bh, 0.5):.1f}" fill="none" stroke="#52606d" stroke-dasharray="3,2">'
                f"<title>baseline {base_counts[i]}</title></rect>"
            )
        hi = "+" if i == n - 1 else f"{edges[i + 1]:g}"
        parts.append(
            f'<text x="{x + slot / 2:.1f}" y="{height - 22}" font-size="10" text-anchor="middle">'
            f"{edges[i]:g}–{hi}</text>"
        )
    parts.append(
        f'<text x="{width / 2}" y="{height - 6}" font-size="11" text-anchor="middle">{_e(unit)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def confusion_svg(conf: dict[str, Any], base: dict[str, Any] | None) -> str:
    labels, matrix = conf["labels"], conf["matrix"]
    old: dict[tuple[str, str], int] = {}
    if base:
        for i, row in enumerate(base.get("matrix", [])):
            for j, c in enumerate(row):
                old[(base["labels"][i], base["labels"][j])] = c
    n = len(labels)
    cell, left, top = 52, 110, 110
    size_w, size_h = left + cell * n + 10, top + cell * n + 30
    peak = max([max(r) for r in matrix] + [1])
    parts = [
        f'<svg class="chart" id="confusion-chart" xmlns="http://www.w3.org/2000/svg" width="{size_w}" '
        f'height="{size_h}" viewBox="0 0 {size_w} {size_h}" role="img" aria-label="intent confusion matrix">'
    ]
    for j, lab in enumerate(labels):
        x = left + j * cell + cell / 2
        parts.append(
            f'<text x="{x}" y="{top - 8}" font-size="11" transform="rotate(-40 {x} {top - 8})">{_e(lab)}</text>'
        )
    for i, row_label in enumerate(labels):
        y = top + i * cell
        parts.append(
            f'<text x="{left - 6}" y="{y + cell / 2 + 4}" font-size="11" text-anchor="end">{_e(row_label)}</text>'
        )
        for j, c in enumerate(matrix[i]):
            x = left + j * cell
            diag = i == j
            alpha = 0.08 + 0.85 * c / peak if c else 0.0
            color = f"rgba(47,133,90,{alpha:.2f})" if diag else f"rgba(200,30,30,{alpha:.2f})"
            parts.append(
                f'<rect class="cell" x="{x}" y="{y}" width="{cell - 2}" height="{cell - 2}" fill="{color}" '
                f'stroke="#d9e2ec"><title>expected {_e(row_label)}, predicted {_e(labels[j])}: {c}</title></rect>'
            )
            parts.append(
                f'<text x="{x + cell / 2 - 1}" y="{y + cell / 2}" font-size="13" text-anchor="middle">{c}</text>'
            )
            if base:
                d = c - old.get((row_label, labels[j]), 0)
                if d:
                    parts.append(
                        f'<text x="{x + cell / 2 - 1}" y="{y + cell / 2 + 15}" font-size="10" '
                        f'text-anchor="middle" fill="#52606d">{"+" if d > 0 else "−"}{abs(d)}</text>'
                    )
    parts.append(
        f'<text x="{left}" y="{size_h - 8}" font-size="11">rows: expected intent · columns: predicted</text></svg>'
    )
    return "".join(parts)


def choose_spans(text: str, spans: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Spans to mark inside the text (no overlaps; error-level ones win) and the rules that concern the
    whole reply (impolite, too_short), shown as badges so that they do not hide a narrower span."""
    whole = [s for s in spans if text and s["start"] == 0 and s["end"] == len(text)]
    kept: list[dict[str, Any]] = []
    for s in sorted(
        (s for s in spans if s not in whole), key=lambda s: (s["severity"] != "error", s["start"])
    ):
        if all(s["end"] <= k["start"] or s["start"] >= k["end"] or s["start"] == s["end"] for k in kept):
            kept.append(s)
    return sorted(kept, key=lambda s: (s["start"], s["end"])), whole


def highlight(text: str, spans: list[dict[str, Any]]) -> str:
    marks, whole = choose_spans(text, spans)
    out, pos = [], 0
    for s in marks:
        out.append(_e(text[pos : s["start"]]))
        title = _e(f"{s['rule']} ({s['severity']}): {s['message']}")
        cls = "warning" if s["severity"] != "error" else ""
        seg = text[s["start"] : s["end"]]
        if seg:
            out.append(f'<mark class="{cls}" title="{title}">{_e(seg)}</mark>')
        else:
            out.append(f'<mark class="gap" title="{title}">⟂ {_e(s["rule"])}</mark>')
        pos = s["end"]
    out.append(_e(text[pos:]))
    for s in whole:
        title = _e(f"{s['rule']} ({s['severity']}): {s['message']}")
        out.append(f' <span class="badge {s["severity"]}" title="{title}">{_e(s["rule"])}</span>')
    return "".join(out)


def _metric_rows(report: dict[str, Any]) -> str:
    has_base = "baseline" in report
    head = "<tr><th>metric</th><th>value</th>" + ("<th>baseline</th><th>change</th>" if has_base else "")
    rows = [head + "<th>reason</th></tr>"]
    for name, m in report["metrics"].items():
        cells = f'<td title="{_e(m.get("description", ""))}">{_e(name)}</td><td class="num">{fmt(m["value"], name)}</td>'
        if has_base:
            cls = {1: "better", -1: "worse", 0: "muted"}[_better(m)]
            cells += (
                f'<td class="num">{fmt(m.get("baseline"), name)}</td>'
                f'<td class="num {cls}">{_e(fmt_delta(m, name))}</td>'
            )
        rows.append(f"<tr>{cells}<td>{_e(m.get('reason', ''))}</td></tr>")
    return "<table id='metrics'>" + "".join(rows) + "</table>"


def _caption_delta(report: dict[str, Any], name: str) -> str:
    m = report["metrics"].get(name)
    if not m:
        return ""
    text = f"{name}: {fmt(m['value'], name)}"
    if "baseline" in report:
        text += f" (baseline {fmt(m.get('baseline'), name)}, change {fmt_delta(m, name)})"
    return text


def render_html(report: dict[str, Any]) -> str:
    figs = report.get("figures", {})
    base = report.get("baseline", {}).get("figures", {}) if "baseline" in report else {}
    body = [f"<h1>{_e(report['title'])}</h1>"]
    body.append(f"<p class='muted'>{_e(report['created_at'])} · {_e(report['machine'])}</p>")
    body.append(
        "<table>"
        + "".join(
            f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in report["setup"].items() if v is not None
        )
        + "</table>"
    )
    if "baseline" in report:
        b = report["baseline"]
        body.append(f"<p>Baseline: <code>{_e(b['path'])}</code> ({_e(b.get('created_at'))})</p>")
    body.append("<h2>Metrics</h2>" + _metric_rows(report))
    if figs.get("rules"):
        base_rules = {r["rule"]: r.get("value") for r in base.get("rules", [])}
        body.append(
            "<h2>Norm compliance per rule</h2><figure>"
            + bars_svg(figs["rules"], base_rules)
            + "<figcaption>Share of "
            + ("drafts" if report["kind"] == "drafts" else "agent replies")
            + " keeping each rule"
            + (" (black tick: baseline)" if base_rules else "")
            + ".</figcaption></figure>"
        )
    lat = figs.get("latency")
    if lat:
        body.append(
            f"<h2>{_e(lat['title'])}</h2><figure>"
            + histogram_svg(lat, base.get("latency"), lat["unit"], "latency-chart")
            + f"<figcaption>{_e(_caption_delta(report, lat['metric']))}"
            + (" · dashed: baseline" if base.get("latency") else "")
            + "</figcaption></figure>"
        )
    elif report["kind"] == "transcripts":
        body.append(
            "<h2>Response times</h2><p class='muted'>No timestamps in this file: response times are not measured.</p>"
        )
    conf = figs.get("confusion")
    if conf and conf.get("labels"):
        body.append(
            "<h2>Intent confusion matrix</h2><figure>"
            + confusion_svg(conf, base.get("confusion"))
            + f"<figcaption>{_e(_caption_delta(report, 'intent_accuracy'))}"
            + (" · small numbers: change against the baseline" if base.get("confusion") else "")
            + "</figcaption></figure>"
        )
    agents = report.get("per_agent")
    if agents:
        rules = [r["rule"] for r in figs.get("rules", [])]
        rows = [
            "<tr><th>agent</th><th>replies</th><th>clean</th>"
            + "".join(f"<th>{_e(r)}</th>" for r in rules)
            + "</tr>"
        ]
        for agent, a in list(agents.items())[:50]:
            rows.append(
                f"<tr><td>{_e(agent)}</td><td class='num'>{a['replies']}</td><td class='num'>{a['clean']:.3f}</td>"
                + "".join(f"<td class='num'>{a['violation_rate'].get(r, 0):.3f}</td>" for r in rules)
                + "</tr>"
            )
        body.append("<h2>Violation rate per agent</h2><table id='per-agent'>" + "".join(rows) + "</table>")
    failing = report.get("failing", [])
    body.append(f"<h2>Failing cases ({len(failing)})</h2>")
    if not failing:
        body.append("<p>None: every case passed.</p>")
    for f in failing[:100]:
        parts = [f"<div class='case failing'><p><b>{_e(f['id'])}</b> — {_e('; '.join(f['reasons']))}</p>"]
        if f.get("context"):
            parts.append(f"<p class='muted'>{_e(f['context'])}</p>")
        for t in f.get("texts", []):
            role = _e(t.get("role", ""))
            parts.append(
                f"<p class='turn'><span class='role'>{role}</span>{highlight(t['text'], t.get('spans', []))}</p>"
            )
        parts.append("</div>")
        body.append("".join(parts))
    if len(failing) > 100:
        body.append(f"<p class='muted'>… {len(failing) - 100} more in report.json.</p>")
    return (
        "<!DOCTYPE html><html lang='zh-CN'><head><meta charset='utf-8'>"
        f"<title>{_e(report['title'])}</title><style>{_CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )
