"""Per-variant results of one experiment: SQL gathers counts, `analysis` does the statistics.

Only exposed requests count (requests served while the experiment was running, not while
paused). Feedback of one kind on one request counts once: the latest record wins.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import defaultdict

from sqlite_utils import Database

from common.stats import quantile
from common.timeutil import epoch_to_iso
from router import analysis as st
from router.experiments import Experiment
from router.sequential import sequential_test
from router.sequential_path import MIN_USERS, RunningTest, replay
from router.unit_stats import RatioEstimate, ratio_difference

__all__ = ["BIN_CHOICES", "compute_results", "latest_feedback"]

BIN_CHOICES = [(60, "minute"), (300, "5 minutes"), (900, "15 minutes"), (3600, "hour"),
               (6 * 3600, "6 hours"), (86400, "day"), (7 * 86400, "week")]
MAX_BINS = 48
ALPHA = 0.05
# The sequential test's mixture scale and smallest effect worth acting on, as fractions of
# the metric's range (thumbs: 0..1, scores: score_min..score_max). docs/router.md#decisions.
TAU_SHARE = 0.1
MIN_EFFECT_SHARE = 0.02


def _round(x: float | None, digits: int = 12) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, digits)


def _pair(x: tuple[float, float] | None) -> list[float] | None:
    return None if x is None else [_round(x[0]), _round(x[1])]


def latest_feedback(db: Database, exp_id: int) -> list[tuple]:
    """(variant, kind, value, ts) of the latest thumb/score per request and kind."""
    return db.execute(
        "SELECT r.variant, f.kind, f.value, f.ts FROM feedback f "
        "JOIN requests r ON r.id = f.request_id "
        "WHERE r.experiment_id = ? AND r.exposed = 1 AND f.kind IN ('thumb', 'score') "
        "AND f.id = (SELECT MAX(g.id) FROM feedback g "
        "            WHERE g.request_id = f.request_id AND g.kind = f.kind) "
        "ORDER BY f.ts",
        [exp_id],
    ).fetchall()


def _thumb_stats(pos: int, n: int) -> dict:
    return {"n": n, "positive": pos, "rate": _round(pos / n) if n else None,
            "ci95": _pair(st.wilson_interval(pos, n))}


def _score_stats(values: list[float]) -> dict:
    n = len(values)
    mean = statistics.fmean(values) if n else None
    sd = statistics.stdev(values) if n > 1 else None
    ci = st.mean_interval(mean, sd, n) if sd is not None else None
    return {"n": n, "mean": _round(mean), "sd": _round(sd), "ci95": _pair(ci)}


def _ratings(db: Database, exp_id: int, kind: str) -> list[tuple[str, str, int, float]]:
    """(variant, user, request id, value) of every rating, in the order given; a request
    without a user is its own user."""
    return db.execute(
        "SELECT r.variant, COALESCE('u:' || r.unit, 'r:' || r.id), f.request_id, f.value "
        "FROM feedback f JOIN requests r ON r.id = f.request_id "
        "WHERE r.experiment_id = ? AND r.exposed = 1 AND f.kind = ? ORDER BY f.id",
        [exp_id, kind],
    ).fetchall()


def _unit_stats(est: RatioEstimate) -> dict:
    return {"users": est.users, "ratings": int(est.denominator), "value": _round(est.ratio),
            "se": _round(est.se), "ci95": _pair(est.ci95())}


def _unit_lift(exp: Experiment, control: RatioEstimate, variant: RatioEstimate,
               running: RunningTest) -> dict:
    """The lift at the latest look; the sequential p-value, interval and decision over all
    looks (router/sequential_path.py)."""
    diff = ratio_difference(control, variant)
    scale = _scale(exp)
    seq = None
    if diff["variance"] is not None:
        seq = sequential_test(diff["absolute"], diff["variance"], tau=TAU_SHARE * scale,
                              min_effect=MIN_EFFECT_SHARE * scale, alpha=ALPHA)
    decision = running.decision(alpha=ALPHA, min_effect=MIN_EFFECT_SHARE * scale)
    sequential = None
    if seq is not None:
        sequential = {k: _round(v) if isinstance(v, float) else v for k, v in seq.as_dict().items()}
        sequential.update(
            p_value=_round(running.p_value), decision=decision, looks=running.looks,
            confidence_sequence=_pair(running.cs) if running.looks else None,
            min_users=MIN_USERS)
    return {
        "test": "delta method over users (z)", "absolute": _round(diff["absolute"]),
        "absolute_ci95": _pair(diff["ci95"]), "z": _round(diff["z"]), "p_value": _round(diff["p_value"]),
        "sequential": sequential, "decision": decision,
    }


def _scale(exp: Experiment) -> float:
    return 1.0 if exp.metric == "thumbs" else exp.score_max - exp.score_min


def _lift(metric: str, control: dict, variant: dict) -> dict:
    if metric == "thumbs":
        kc, nc, kv, nv = control["positive"], control["n"], variant["positive"], variant["n"]
        out: dict = {"test": "two-proportion z-test (pooled)", "absolute": None,
                     "absolute_ci95": None, "relative": None, "p_value": None,
                     "chance_to_win": None}
        if nc and nv:
            pc, pv = kc / nc, kv / nv
            out["absolute"] = _round(pv - pc)
            out["absolute_ci95"] = _pair(st.diff_interval(kc, nc, kv, nv))
            out["relative"] = _round((pv - pc) / pc) if pc else None
            z = st.two_proportion_ztest(kc, nc, kv, nv)
            out["z"] = _round(z[0]) if z else None
            out["p_value"] = _round(z[1]) if z else None
            out["chance_to_win"] = _round(st.beta_chance_to_win(kc, nc - kc, kv, nv - kv))
        return out
    out = {"test": "Welch t-test", "absolute": None, "absolute_ci95": None, "relative": None,
           "p_value": None, "chance_to_win": None}
    if control["n"] and variant["n"]:
        mc, mv = control["mean"], variant["mean"]
        out["absolute"] = _round(mv - mc)
        out["relative"] = _round((mv - mc) / mc) if mc else None
        if control["sd"] is not None and variant["sd"] is not None:
            args = (mc, control["sd"], control["n"], mv, variant["sd"], variant["n"])
            t = st.welch_ttest(*args)
            out["t"], out["df"] = (_round(t[0]), _round(t[1])) if t else (None, None)
            out["p_value"] = _round(t[2]) if t else None
            out["absolute_ci95"] = _pair(st.welch_interval(*args))
    return out


def _series(events: list[tuple], refs: list[str], metric: str, low: float, high: float) -> dict:
    """Cumulative metric per variant at the end of each time bin, with 95% intervals."""
    kind = "thumb" if metric == "thumbs" else "score"
    events = [e for e in events if e[1] == kind]
    if not events:
        return {"bin_seconds": None, "bin": None, "variants": {r: [] for r in refs}}
    start, end = events[0][3], events[-1][3]
    span = max(end - start, 1.0)
    width, label = next(((w, lbl) for w, lbl in BIN_CHOICES if span / w <= MAX_BINS),
                        BIN_CHOICES[-1])
    first_bin = math.floor(start / width) * width
    n_bins = int((end - first_bin) // width) + 1
    values: dict[str, list[list[float]]] = {r: [[] for _ in range(n_bins)] for r in refs}
    for variant, _kind, value, ts in events:
        if variant in values:
            values[variant][int((ts - first_bin) // width)].append(value)
    out: dict[str, list[dict]] = {}
    for ref in refs:
        seen: list[float] = []
        points = []
        for i, chunk in enumerate(values[ref]):
            seen.extend(chunk)
            if not seen:
                continue
            if kind == "thumb":
                stats = _thumb_stats(int(sum(seen)), len(seen))
                y = stats["rate"]
            else:
                stats = _score_stats(seen)
                y = stats["mean"]
            points.append({"t": epoch_to_iso(first_bin + (i + 1) * width), "n": len(seen), "value": y,
                           "ci95": stats["ci95"]})
        out[ref] = points
    return {"bin_seconds": width, "bin": label, "variants": out,
            "y_range": [0.0, 1.0] if kind == "thumb" else [low, high]}


def unit_lifts(db: Database, exp: Experiment) -> tuple[dict[str, RatioEstimate], dict[str, dict]]:
    """Per-user estimates of every variant, and each non-control variant's lift with its
    sequential decision: all that promotion reads, without the rest of the results."""
    refs = [v.ref for v in exp.variants]
    ratings = _ratings(db, exp.id, "thumb" if exp.metric == "thumbs" else "score")
    others = [ref for ref in refs if ref != exp.control]
    estimates, running = replay(ratings, exp.control, others, tau=TAU_SHARE * _scale(exp),
                                alpha=ALPHA)
    lifts = {ref: _unit_lift(exp, estimates[exp.control], estimates[ref], running[ref])
             for ref in others}
    return estimates, lifts


def compute_results(db: Database, exp: Experiment) -> dict:
    refs = [v.ref for v in exp.variants]
    weights = {v.ref: v.weight for v in exp.variants}
    base: dict[str, dict] = {}
    for ref in refs:
        row = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT unit) + SUM(unit IS NULL), "
            "SUM(prompt_tokens), SUM(completion_tokens), AVG(completion_tokens), "
            "SUM(status_code >= 400) FROM requests "
            "WHERE experiment_id = ? AND exposed = 1 AND variant = ?",
            [exp.id, ref],
        ).fetchone()
        latencies = [r[0] for r in db.execute(
            "SELECT latency_ms FROM requests WHERE experiment_id = ? AND exposed = 1 "
            "AND variant = ? AND latency_ms IS NOT NULL", [exp.id, ref])]
        finish = dict(db.execute(
            "SELECT COALESCE(finish_reason, 'none'), COUNT(*) FROM requests "
            "WHERE experiment_id = ? AND exposed = 1 AND variant = ? GROUP BY 1",
            [exp.id, ref]).fetchall())
        fb = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT f.request_id) FROM feedback f "
            "JOIN requests r ON r.id = f.request_id "
            "WHERE r.experiment_id = ? AND r.exposed = 1 AND r.variant = ?",
            [exp.id, ref]).fetchone()
        requests = row[0]
        base[ref] = {
            "variant": ref, "is_control": ref == exp.control, "weight": weights[ref],
            "requests": requests, "users": row[1] or 0, "errors": row[5] or 0,
            "feedback": fb[0], "requests_with_feedback": fb[1],
            "feedback_rate": _round(fb[1] / requests) if requests else None,
            "latency_ms": {"p50": _round(quantile(latencies, 0.5), 6),
                           "p95": _round(quantile(latencies, 0.95), 6)},
            "tokens": {"prompt": row[2] or 0, "completion": row[3] or 0,
                       "completion_mean": _round(row[4], 6)},
            "finish_reasons": finish,
        }
    events = latest_feedback(db, exp.id)
    thumbs: dict[str, list[float]] = defaultdict(list)
    scores: dict[str, list[float]] = defaultdict(list)
    for variant, kind, value, _ts in events:
        (thumbs if kind == "thumb" else scores)[variant].append(value)
    for ref in refs:
        base[ref]["thumbs"] = _thumb_stats(int(sum(thumbs[ref])), len(thumbs[ref]))
        base[ref]["score"] = _score_stats(scores[ref])
    key = "thumbs" if exp.metric == "thumbs" else "score"
    control = base[exp.control]
    for ref in refs:
        base[ref]["lift"] = None if ref == exp.control else _lift(
            exp.metric, control[key], base[ref][key])
    estimates, lifts = unit_lifts(db, exp)
    for ref in refs:
        base[ref]["per_user"] = _unit_stats(estimates[ref])
        base[ref]["per_user_lift"] = lifts.get(ref)
    decisions = {ref: base[ref]["per_user_lift"]["decision"] for ref in refs if ref != exp.control}
    return {
        "experiment": exp.as_dict(),
        "metric": exp.metric,
        "control": exp.control,
        "generated_at": epoch_to_iso(time.time()),
        "conventions": {
            "proportion_interval": "Wilson score, 95%",
            "mean_interval": "Student t, 95%",
            "lift_test": "two-proportion z-test (pooled)" if exp.metric == "thumbs"
            else "Welch t-test",
            "chance_to_win": "P(variant > control), Beta(1+pos, 1+neg) posteriors, exact",
            "srm": f"chi-square goodness of fit on units vs weights, flagged at p < {st.SRM_THRESHOLD}",
            "counting": "exposed requests only; latest thumb/score per request",
            "per_user": "ratio of per-user sums; delta-method variance over users (the randomisation "
                        "unit); a request without a user id is a user of its own",
            "sequential": f"mixture SPRT on the per-user difference, alpha {ALPHA}, tau "
                          f"{TAU_SHARE} and min_effect {MIN_EFFECT_SHARE} of the metric's range, "
                          f"replayed over every rating once each arm has {MIN_USERS} users: "
                          "p-value the running minimum, confidence sequence the running "
                          "intersection; valid however often it is read",
        },
        "variants": [base[ref] for ref in refs],
        "decisions": decisions,
        "srm": _srm(db, exp),
        "series": _series(events, refs, exp.metric, exp.score_min, exp.score_max),
    }


def _srm(db: Database, exp: Experiment) -> dict:
    """Units by the variant of their first exposure since the last weight change."""
    since = exp.weights_changed_at or 0.0
    rows = db.execute(
        "SELECT variant, COUNT(*) FROM ("
        "  SELECT unit, variant, MIN(ts) AS first FROM requests "
        "  WHERE experiment_id = ? AND exposed = 1 AND unit IS NOT NULL GROUP BY unit"
        ") WHERE first >= ? GROUP BY variant",
        [exp.id, since],
    ).fetchall()
    observed = defaultdict(int, dict(rows))
    for variant, count in db.execute(
        "SELECT variant, COUNT(*) FROM requests WHERE experiment_id = ? AND exposed = 1 "
        "AND unit IS NULL AND ts >= ? GROUP BY variant", [exp.id, since]
    ).fetchall():
        observed[variant] += count
    refs = [v.ref for v in exp.variants]
    counts = [observed[r] for r in refs]
    weights = [v.weight for v in exp.variants]
    total_w = sum(weights)
    n = sum(counts)
    test = st.srm_test(counts, weights)
    return {
        "units": dict(zip(refs, counts, strict=True)),
        "expected": {r: _round(n * w / total_w, 6) for r, w in zip(refs, weights, strict=True)},
        "chi2": _round(test[0]) if test and math.isfinite(test[0]) else (None if not test else "inf"),
        "df": test[1] if test else None,
        "p_value": _round(test[2]) if test else None,
        "flagged": bool(test and test[2] < st.SRM_THRESHOLD),
        "threshold": st.SRM_THRESHOLD,
        "since": epoch_to_iso(exp.weights_changed_at),
    }
