"""The results page: one self-contained HTML document (inline CSS and SVG, no scripts, no
network), so it renders anywhere, including a headless browser in tests.
"""

from __future__ import annotations

from datetime import datetime
from html import escape

from common.timeutil import iso_to_epoch

__all__ = ["COLOURS", "DECISION_WORDS", "render_results_page"]

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"]
_W, _H = 960, 380
_ML, _MR, _MT, _MB = 64, 24, 20, 48


def _fmt(x: object, pct: bool = False, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x * 100:.1f}%" if pct else f"{x:.{digits}g}"
    return escape(str(x))


def _ci(pair: list[float] | None, pct: bool = False) -> str:
    if not pair:
        return "–"
    return f"[{_fmt(pair[0], pct)}, {_fmt(pair[1], pct)}]"


def _chart(series: dict, refs: list[str], pct: bool) -> str:
    variants = series.get("variants") or {}
    points = [p for r in refs for p in variants.get(r, [])]
    if not points:
        return '<p class="empty">No feedback yet: the chart appears with the first thumbs or scores.</p>'
    lo_y, hi_y = series.get("y_range") or [0.0, 1.0]
    times = [iso_to_epoch(p["t"]) for p in points]
    t0, t1 = min(times), max(times)
    if t1 - t0 < 1:
        t0, t1 = t0 - (series.get("bin_seconds") or 60), t1 + (series.get("bin_seconds") or 60)
    pw, ph = _W - _ML - _MR, _H - _MT - _MB

    def x(t: float) -> float:
        return _ML + (t - t0) / (t1 - t0) * pw

    def y(v: float) -> float:
        v = min(max(v, lo_y), hi_y)
        return _MT + (1 - (v - lo_y) / (hi_y - lo_y)) * ph

    parts = [f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
             f'viewBox="0 0 {_W} {_H}" role="img" aria-label="metric over time per variant">',
             f'<rect x="{_ML}" y="{_MT}" width="{pw}" height="{ph}" fill="#fff" stroke="#ccc"/>']
    for i in range(5):
        v = lo_y + (hi_y - lo_y) * i / 4
        label = f"{v * 100:.0f}%" if pct else f"{v:g}"
        parts.append(f'<line x1="{_ML}" x2="{_ML + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                     f'stroke="#eee"/><text x="{_ML - 8}" y="{y(v) + 4:.1f}" '
                     f'text-anchor="end" class="axis">{label}</text>')
    for i in range(5):
        t = t0 + (t1 - t0) * i / 4
        label = datetime.fromtimestamp(t).strftime("%m-%d %H:%M")
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        parts.append(f'<text x="{x(t):.1f}" y="{_H - _MB + 18}" text-anchor="{anchor}" '
                     f'class="axis">{escape(label)}</text>')
    for k, ref in enumerate(refs):
        colour = COLOURS[k % len(COLOURS)]
        pts = [p for p in variants.get(ref, []) if p["value"] is not None]
        if not pts:
            continue
        xs = [x(iso_to_epoch(p["t"])) for p in pts]
        with_ci = [(xx, p) for xx, p in zip(xs, pts, strict=True) if p["ci95"]]
        if len(with_ci) > 1:
            upper = " ".join(f"{xx:.1f},{y(p['ci95'][1]):.1f}" for xx, p in with_ci)
            lower = " ".join(f"{xx:.1f},{y(p['ci95'][0]):.1f}" for xx, p in reversed(with_ci))
            parts.append(f'<polygon points="{upper} {lower}" fill="{colour}" '
                         f'fill-opacity="0.15" stroke="none"/>')
        for xx, p in with_ci:  # interval whiskers, visible even with a single bin
            parts.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{y(p["ci95"][0]):.1f}" '
                         f'y2="{y(p["ci95"][1]):.1f}" stroke="{colour}" stroke-width="1.5" '
                         f'stroke-opacity="0.6"/>')
        line = " ".join(f"{xx:.1f},{y(p['value']):.1f}" for xx, p in zip(xs, pts, strict=True))
        parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" '
                     f'stroke-width="3" stroke-linejoin="round"/>')
        for xx, p in zip(xs, pts, strict=True):
            parts.append(f'<circle cx="{xx:.1f}" cy="{y(p["value"]):.1f}" r="4" fill="{colour}">'
                         f'<title>{escape(ref)} {escape(p["t"])}: {_fmt(p["value"], pct)} '
                         f'(n={p["n"]}) 95% {_ci(p["ci95"], pct)}</title></circle>')
    parts.append("</svg>")
    legend = "".join(
        f'<span class="key"><span class="swatch" style="background:{COLOURS[k % len(COLOURS)]}">'
        f"</span>{escape(ref)}</span>" for k, ref in enumerate(refs))
    return f'<div class="legend">{legend}</div>' + "".join(parts)


DECISION_WORDS = {
    "keep-running": "keep running: no decision yet",
    "variant-wins": "variant wins",
    "control-wins": "control wins",
    "no-difference": "no difference that matters: the whole confidence sequence is within ±min effect",
}


def _decisions(results: dict, pct: bool) -> str:
    """The decision table: per-user values and the sequential test, valid however often read."""
    rows = []
    for v in results["variants"]:
        u, lift = v["per_user"], v["per_user_lift"] or {}
        seq = lift.get("sequential") or {}
        decision = lift.get("decision")
        cls = {"variant-wins": "wins", "control-wins": "loses"}.get(decision or "", "")
        rows.append(
            "<tr>"
            f"<td>{escape(v['variant'])}{' <em>(control)</em>' if v['is_control'] else ''}</td>"
            f"<td>{u['users']}</td><td>{u['ratings']}</td><td>{_fmt(u['value'], pct)}</td>"
            f"<td>{_ci(u['ci95'], pct)}</td><td>{_fmt(lift.get('absolute'), pct)}</td>"
            f"<td>{_ci(seq.get('confidence_sequence'), pct)}</td>"
            f"<td>{_fmt(seq.get('p_value'), digits=3)}</td><td>{_fmt(seq.get('mde'), pct)}</td>"
            f'<td class="decision {cls}">'
            f"{escape(DECISION_WORDS.get(decision, '–') if decision else '–')}</td></tr>")
    cuts = "".join(
        f'<p class="srm bad">Guardrail cut {escape(c["variant"])} at {escape(c["at"])}: '
        f'{escape(c["reason"])}; it gets no new users.</p>' for c in results["experiment"]["cut"])
    return f"""{cuts}<h2>Decision (per user, sequential test)</h2>
<table><thead><tr><th>variant</th><th>users rated</th><th>ratings</th><th>per-user value</th>
<th>95% interval (users)</th><th>abs. lift</th><th>95% confidence sequence</th>
<th>always-valid p</th><th>MDE now</th><th>decision</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table>"""


def render_results_page(results: dict) -> str:
    exp = results["experiment"]
    metric = results["metric"]
    pct = metric == "thumbs"
    refs = [v["variant"] for v in results["variants"]]
    key = "thumbs" if pct else "score"
    rows = []
    for v in results["variants"]:
        m = v[key]
        value = m["rate"] if pct else m["mean"]
        lift = v["lift"] or {}
        rows.append(
            "<tr>"
            f"<td>{escape(v['variant'])}{' <em>(control)</em>' if v['is_control'] else ''}</td>"
            f"<td>{v['weight']}</td><td>{v['requests']}</td><td>{v['users']}</td>"
            f"<td>{v['feedback']}</td><td>{_fmt(v['feedback_rate'], True)}</td>"
            f"<td>{m['n']}</td><td>{_fmt(value, pct)}</td><td>{_ci(m['ci95'], pct)}</td>"
            f"<td>{_fmt(lift.get('absolute'), pct)}</td>"
            f"<td>{_fmt(lift.get('relative'), True)}</td>"
            f"<td>{_fmt(lift.get('p_value'), digits=3)}</td>"
            f"<td>{_fmt(lift.get('chance_to_win'), True)}</td>"
            f"<td>{_fmt(v['latency_ms']['p50'])} / {_fmt(v['latency_ms']['p95'])}</td>"
            f"<td>{v['tokens']['prompt']} / {v['tokens']['completion']}</td>"
            "</tr>")
    decision_html = _decisions(results, pct)
    srm = results["srm"]
    if srm["p_value"] is None:
        srm_html = '<p class="srm">Sample-ratio check: not enough units yet.</p>'
    else:
        cls = "srm bad" if srm["flagged"] else "srm ok"
        verdict = ("MISMATCH: assignment does not follow the weights; do not trust the lift "
                   "until the cause is found" if srm["flagged"] else "assignment matches the weights")
        srm_html = (f'<p class="{cls}">Sample-ratio check: {verdict} (chi² = {_fmt(srm["chi2"])}, '
                    f'p = {_fmt(srm["p_value"])}; units {escape(str(srm["units"]))}).</p>')
    value_name = "positive rate" if pct else "mean score"
    conv = "".join(f"<li>{escape(k)}: {escape(str(v))}</li>"
                   for k, v in results["conventions"].items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Experiment {escape(exp['name'])}: results</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }}
table {{ border-collapse: collapse; margin: 12px 0; }}
th, td {{ border: 1px solid #ddd; padding: 4px 8px; text-align: right; }}
th {{ background: #f5f5f5; }} td:first-child {{ text-align: left; }}
.axis {{ font-size: 11px; fill: #555; }}
.srm.bad {{ color: #fff; background: #b00020; padding: 6px; }}
.srm.ok {{ color: #1b5e20; }}
.legend .key {{ margin-right: 16px; }}
.swatch {{ display: inline-block; width: 12px; height: 12px; margin-right: 4px; }}
.meta {{ color: #555; }}
.decision {{ font-weight: bold; }} .wins {{ color: #1b5e20; }} .loses {{ color: #b00020; }}
</style></head><body>
<h1>Experiment {escape(exp['name'])}</h1>
<p class="meta">alias <b>{escape(exp['alias'])}</b> · status {escape(exp['status'])} ·
metric {escape(metric)} · started {escape(str(exp['started_at'] or '–'))} ·
generated {escape(results['generated_at'])}</p>
{srm_html}
<h2>{value_name.capitalize()} over time (cumulative, 95% interval)</h2>
{_chart(results['series'], refs, pct)}
{decision_html}
<h2>Per variant</h2>
<table><thead><tr><th>variant</th><th>weight</th><th>requests</th><th>users</th>
<th>feedback</th><th>feedback rate</th><th>n ({escape(key)})</th><th>{value_name}</th>
<th>95% interval</th><th>abs. lift</th><th>rel. lift</th><th>p-value</th>
<th>chance to win</th><th>latency p50 / p95 ms</th><th>tokens in / out</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table>
<ul class="meta">{conv}</ul>
</body></html>
"""
