"""Feedback records: validation against the request log, key ownership, idempotency."""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlite_utils import Database

from common.timeutil import epoch_to_iso
from router.errors import FeedbackConflict, FeedbackForbidden, FeedbackInvalid, RequestNotFound
from router.protocol import FeedbackIn, FeedbackRecord

__all__ = ["Caller", "FeedbackRecord", "record_feedback"]


@dataclass(frozen=True)
class Caller:
    """Who posts feedback: api_key_id None means API keys are off."""

    api_key_id: str | None = None
    is_admin: bool = False


_COLUMNS = ("id, client_id, request_id, kind, value, label, correction, other_request_id, "
            "comment, user, ts")


_FIELDS = ("id", "client_id", "request_id", "kind", "value", "label", "correction",
           "preferred_over", "comment", "user")


def _record(row: tuple) -> FeedbackRecord:
    return FeedbackRecord(**dict(zip(_FIELDS, row[:10], strict=True)),
                          created_at=epoch_to_iso(row[10]))


def _same(record: FeedbackRecord, fb: FeedbackIn, value: float | None) -> bool:
    return (record.request_id, record.kind, record.value, record.label, record.correction,
            record.preferred_over, record.comment) == (
        fb.request_id, fb.kind, value, fb.label, fb.correction, fb.preferred_over, fb.comment)


def _request(db: Database, request_id: str, flush: Callable[[], object]) -> tuple:
    sql = ("SELECT r.id, r.api_key_id, e.score_min, e.score_max, e.labels FROM requests r "
           "LEFT JOIN experiments e ON e.id = r.experiment_id WHERE r.id = ?")
    row = db.execute(sql, [request_id]).fetchone()
    if row is None:
        flush()  # it may still sit in the request log's queue
        row = db.execute(sql, [request_id]).fetchone()
    if row is None:
        raise RequestNotFound(f"unknown request id {request_id!r}", param="request_id")
    return row


def _check_owner(row: tuple, caller: Caller, param: str) -> None:
    if caller.api_key_id is None or caller.is_admin:
        return
    if row[1] != caller.api_key_id:
        raise FeedbackForbidden(
            f"request {row[0]!r} was not made with this API key", param=param
        )


def record_feedback(
    db: Database,
    fb: FeedbackIn,
    caller: Caller,
    *,
    flush: Callable[[], object],
    default_score_range: tuple[float, float] = (1.0, 5.0),
    now: float | None = None,
) -> tuple[FeedbackRecord, bool]:
    """Store one feedback record; (record, created). A retry with the same client id gets
    the stored record back (created False); reusing a client id for different feedback is
    a 409. The caller serialises access to `db`.
    """
    value = None
    if fb.thumb is not None:
        value = 1.0 if fb.thumb == "up" else 0.0
    elif fb.score is not None:
        value = float(fb.score)
    if fb.client_id is not None:
        existing = db.execute(
            f"SELECT {_COLUMNS} FROM feedback WHERE client_id = ?", [fb.client_id]
        ).fetchone()
        if existing is not None:
            record = _record(existing)
            if not _same(record, fb, value):
                raise FeedbackConflict(
                    f"client_id {fb.client_id!r} was already used for different feedback "
                    f"(record {record.id})", param="client_id")
            return record, False
    row = _request(db, fb.request_id, flush)
    _check_owner(row, caller, "request_id")
    if fb.score is not None:
        low, high = (row[2], row[3]) if row[2] is not None else default_score_range
        if not math.isfinite(fb.score) or not low <= fb.score <= high:
            raise FeedbackInvalid(
                f"score {fb.score} is outside the declared range [{low:g}, {high:g}]",
                param="score")
    if fb.label is not None and row[4] is not None:
        allowed = json.loads(row[4])
        if allowed and fb.label not in allowed:
            raise FeedbackInvalid(
                f"label {fb.label!r} is not one of the declared labels {allowed}", param="label")
    if fb.preferred_over is not None:
        if fb.preferred_over == fb.request_id:
            raise FeedbackInvalid("a preference needs two different request ids",
                                  param="preferred_over")
        other = _request(db, fb.preferred_over, flush)
        _check_owner(other, caller, "preferred_over")
    try:
        with db.conn:
            cursor = db.conn.execute(
                "INSERT INTO feedback (client_id, request_id, kind, value, label, correction, "
                "other_request_id, comment, user, api_key_id, ts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [fb.client_id, fb.request_id, fb.kind, value, fb.label, fb.correction,
                 fb.preferred_over, fb.comment, fb.user, caller.api_key_id,
                 time.time() if now is None else now],
            )
    except sqlite3.IntegrityError:  # another process stored the same client id just now
        existing = db.execute(
            f"SELECT {_COLUMNS} FROM feedback WHERE client_id = ?", [fb.client_id]
        ).fetchone()
        if existing is None:
            raise
        record = _record(existing)
        if not _same(record, fb, value):
            raise FeedbackConflict(
                f"client_id {fb.client_id!r} was already used for different feedback",
                param="client_id") from None
        return record, False
    stored = db.execute(f"SELECT {_COLUMNS} FROM feedback WHERE id = ?", [cursor.lastrowid])
    return _record(stored.fetchone()), True
