"""Guardrails: a variant that breaches a limit loses its traffic without waiting for a person.

An experiment may set limits on any of:
- `latency_p95_ms`: p95 end-to-end latency of the variant's requests;
- `error_rate`: share of its requests that failed on our side (status >= 500);
- `negative_rate`: share of thumbs down among its thumbs (latest per request);
- `tokens_per_request`: mean completion tokens (a variant that rambles costs money);
and `min_requests` (default 20): no verdict on fewer requests (or thumbs, for
`negative_rate`). The server's reconcile loop checks running experiments every few seconds;
a breaching variant other than the control gets weight 0 (new users go elsewhere, and a
bandit stops assigning it), its users are reassigned, the alias keeps serving, and the cut
is recorded in `experiment_events` with the reason. The control is never cut: it is what
the others are judged against, and what the alias falls back to.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from sqlite_utils import Database

from common.stats import quantile
from router.errors import InvalidExperiment

__all__ = ["LIMITS", "breach", "check_guardrails_spec", "thumb_counts"]

# limit -> (description, upper bound on its value or None)
LIMITS = {
    "latency_p95_ms": ("p95 latency in ms", None),
    "error_rate": ("share of requests failed with status >= 500", 1.0),
    "negative_rate": ("share of thumbs down", 1.0),
    "tokens_per_request": ("mean completion tokens", None),
    "min_requests": ("requests (or thumbs) needed before a verdict", None),
}
DEFAULT_MIN_REQUESTS = 20


def check_guardrails_spec(spec: Mapping[str, object]) -> dict[str, float]:
    """The limits, validated; raises InvalidExperiment naming the bad one."""
    out: dict[str, float] = {}
    for key, value in spec.items():
        if key not in LIMITS:
            raise InvalidExperiment(
                f"unknown guardrail {key!r}; known: {', '.join(LIMITS)}", param="guardrails")
        if (isinstance(value, bool) or not isinstance(value, int | float) or not value > 0
                or not math.isfinite(value)):
            raise InvalidExperiment(f"guardrail {key} must be a positive number", param="guardrails")
        upper = LIMITS[key][1]
        if upper is not None and value > upper:
            raise InvalidExperiment(f"guardrail {key} must be at most {upper}", param="guardrails")
        out[key] = float(value)
    return out


def thumb_counts(events: Sequence[tuple]) -> dict[str, tuple[int, int]]:
    """(up, down) per variant from `router.results.latest_feedback` rows."""
    counts: dict[str, list[int]] = {}
    for variant, kind, value, _ts in events:
        if kind == "thumb":
            counts.setdefault(variant, [0, 0])[0 if value else 1] += 1
    return {variant: (up, down) for variant, (up, down) in counts.items()}


def breach(db: Database, experiment_id: int, variant: str, limits: Mapping[str, float],
           thumbs: tuple[int, int]) -> str | None:
    """Why `variant` breaches a limit now, or None. `thumbs`: its (up, down), latest per request."""
    minimum = int(limits.get("min_requests", DEFAULT_MIN_REQUESTS))
    n, errors, tokens = db.execute(
        "SELECT COUNT(*), SUM(status_code >= 500), AVG(completion_tokens) FROM requests "
        "WHERE experiment_id = ? AND exposed = 1 AND variant = ?", [experiment_id, variant],
    ).fetchone()
    if n >= minimum:
        if "error_rate" in limits and errors / n > limits["error_rate"]:
            return f"error rate {errors / n:.3f} > {limits['error_rate']:g} over {n} requests"
        if "tokens_per_request" in limits and tokens is not None and tokens > limits["tokens_per_request"]:
            return (f"mean completion tokens {tokens:.1f} > {limits['tokens_per_request']:g} "
                    f"over {n} requests")
        if "latency_p95_ms" in limits:
            latencies = [r[0] for r in db.execute(
                "SELECT latency_ms FROM requests WHERE experiment_id = ? AND exposed = 1 "
                "AND variant = ? AND latency_ms IS NOT NULL", [experiment_id, variant])]
            p95 = quantile(latencies, 0.95) if latencies else None
            if p95 is not None and p95 > limits["latency_p95_ms"]:
                return f"p95 latency {p95:.0f} ms > {limits['latency_p95_ms']:g} ms over {n} requests"
    up, down = thumbs
    if "negative_rate" in limits and up + down >= minimum and down / (up + down) > limits["negative_rate"]:
        return (f"thumbs-down rate {down / (up + down):.3f} > {limits['negative_rate']:g} "
                f"over {up + down} thumbs")
    return None
