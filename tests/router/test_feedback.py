from __future__ import annotations

import pytest
from pydantic import ValidationError

from router import (
    Caller,
    FeedbackConflict,
    FeedbackForbidden,
    FeedbackIn,
    FeedbackInvalid,
    RequestNotFound,
    RequestRecord,
    Router,
)


@pytest.fixture
def logged(router: Router) -> Router:
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)],
                  metric="score", score_min=0, score_max=10, labels=["rude", "wrong"])
    router.start("bot")
    for rid, key in (("r1", "key-a"), ("r2", "key-a"), ("r3", "key-b")):
        route = router.route("bot", rid)
        router.log_request(RequestRecord(request_id=rid, model="bot", served=route.target,
                                         route=route, api_key_id=key))
    return router  # not flushed: feedback must find requests still in the queue


def test_each_kind_is_stored(logged: Router):
    cases = [
        (FeedbackIn(request_id="r1", thumb="up"), ("thumb", 1.0)),
        (FeedbackIn(request_id="r1", thumb="down", comment="meh"), ("thumb", 0.0)),
        (FeedbackIn(request_id="r1", score=7.5), ("score", 7.5)),
        (FeedbackIn(request_id="r1", label="rude"), ("label", None)),
        (FeedbackIn(request_id="r1", correction="the right answer"), ("correction", None)),
        (FeedbackIn(request_id="r1", preferred_over="r2"), ("preference", None)),
    ]
    for fb, (kind, value) in cases:
        record, created = logged.record_feedback(fb)
        assert created and record.kind == kind and record.value == value
        assert record.request_id == "r1" and record.created_at.endswith("Z")
    assert record.preferred_over == "r2"


def test_refusals_name_the_reason(logged: Router):
    with pytest.raises(RequestNotFound, match="unknown request id 'nope'"):
        logged.record_feedback(FeedbackIn(request_id="nope", thumb="up"))
    with pytest.raises(FeedbackInvalid, match=r"outside the declared range \[0, 10\]"):
        logged.record_feedback(FeedbackIn(request_id="r1", score=11))
    with pytest.raises(FeedbackInvalid, match="not one of the declared labels"):
        logged.record_feedback(FeedbackIn(request_id="r1", label="great"))
    with pytest.raises(FeedbackInvalid, match="two different request ids"):
        logged.record_feedback(FeedbackIn(request_id="r1", preferred_over="r1"))
    with pytest.raises(RequestNotFound, match="'ghost'"):
        logged.record_feedback(FeedbackIn(request_id="r1", preferred_over="ghost"))
    with pytest.raises(ValidationError, match="exactly one"):
        FeedbackIn(request_id="r1", thumb="up", score=3)
    with pytest.raises(ValidationError, match="exactly one"):
        FeedbackIn(request_id="r1")
    with pytest.raises(ValidationError):
        FeedbackIn(request_id="r1", thumbs="up")  # misspelt field


def test_score_range_defaults_outside_experiments(tmp_path, registry):
    r = Router(tmp_path / "x.db", registry, log_all=True)
    try:
        r.log_request(RequestRecord(request_id="d1", model="support@1", served="support@1"))
        assert r.record_feedback(FeedbackIn(request_id="d1", score=5))[1]
        with pytest.raises(FeedbackInvalid, match=r"\[1, 5\]"):
            r.record_feedback(FeedbackIn(request_id="d1", score=0))
    finally:
        r.close()


def test_client_id_makes_retries_idempotent(logged: Router):
    fb = FeedbackIn(request_id="r1", thumb="up", client_id="c-1")
    first, created = logged.record_feedback(fb)
    again, created_again = logged.record_feedback(fb)
    assert created and not created_again and again == first
    with pytest.raises(FeedbackConflict, match="already used for different feedback"):
        logged.record_feedback(FeedbackIn(request_id="r1", thumb="down", client_id="c-1"))
    count = logged._db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0]
    assert count == 1


def test_api_keys_may_only_judge_their_own_requests(logged: Router):
    a, b, admin = Caller("key-a"), Caller("key-b"), Caller("key-admin", is_admin=True)
    assert logged.record_feedback(FeedbackIn(request_id="r1", thumb="up"), a)[1]
    with pytest.raises(FeedbackForbidden, match="not made with this API key"):
        logged.record_feedback(FeedbackIn(request_id="r1", thumb="up"), b)
    with pytest.raises(FeedbackForbidden):
        logged.record_feedback(FeedbackIn(request_id="r1", preferred_over="r3"), a)
    assert logged.record_feedback(FeedbackIn(request_id="r3", preferred_over="r1"), admin)[1]
    assert logged.record_feedback(FeedbackIn(request_id="r2", thumb="down"), Caller())[1]
