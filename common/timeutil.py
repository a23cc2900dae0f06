"""Timestamps as the project stores and shows them: UTC ISO 8601 with milliseconds and a Z.

Why one format: registry rows, experiment JSON and the results page compare and sort these
strings; two spellings of the same instant ("+00:00" vs "Z", seconds vs milliseconds) would
sort and diff wrongly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload

__all__ = ["epoch_to_iso", "iso_to_epoch", "utc_now_iso"]


def utc_now_iso() -> str:
    """Now, e.g. "2025-01-31T12:00:00.123Z"."""
    return _format(datetime.now(UTC))


@overload
def epoch_to_iso(ts: float) -> str: ...
@overload
def epoch_to_iso(ts: None) -> None: ...
def epoch_to_iso(ts: float | None) -> str | None:
    """A Unix time (seconds) in the same format; None stays None (a time not reached yet)."""
    return None if ts is None else _format(datetime.fromtimestamp(ts, UTC))


def iso_to_epoch(iso: str | None, default: float | None = None) -> float | None:
    """Seconds since the epoch; `default` for None or a string that is not ISO 8601.

    Accepts the trailing Z (Python 3.11's parser does too, but older rows may carry
    "+00:00") and treats a time without an offset as UTC, as we never write local times.
    """
    if not iso:
        return default
    try:
        parsed = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return default
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _format(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
