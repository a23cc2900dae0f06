"""The response models in router/protocol.py against what the router really returns.

Each body is validated and dumped back: the JSON must come out identical (keys, order,
values, int vs float), so the models can be declared on the routes without changing a byte,
and a key added to `compute_results()` or an `as_dict()` without its model fails here.
"""

from __future__ import annotations

import copy
import json
import random

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError
from test_results import _send

from router import FeedbackIn, Router
from router.protocol import (
    ExperimentDeleted,
    ExperimentList,
    ExperimentResults,
    ExperimentView,
    FeedbackView,
    MeanLift,
    ProportionLift,
)


def _round_trip(model: type[BaseModel], body: dict) -> dict:
    """Validate `body` and check the dump is the same JSON, byte for byte; the dump."""
    dumped = model.model_validate(body).model_dump(mode="json", exclude_unset=True)
    assert json.dumps(dumped) == json.dumps(body)
    return dumped


def _view(exp) -> dict:
    return {"object": "experiment", **exp.as_dict()}


def test_thumbs_results_match_the_model(router: Router):
    rng = random.Random(3)
    router.create(alias="bot", variants=[("support@1", 2), ("support@2", 1), ("base", 1)],
                  labels=["good", "meh"], description="three arms")
    router.start("bot")
    a = _send(router, "bot", "support@1", 30, "a", rng)
    b = _send(router, "bot", "support@2", 20, "b", rng, status_code=500)
    _send(router, "bot", "base", 5, "c", rng)  # no feedback: its lift has no z
    for ids, p in ((a, 0.5), (b, 0.8)):
        for rid in ids[:15]:
            thumb = "up" if rng.random() < p else "down"
            router.record_feedback(FeedbackIn(request_id=rid, thumb=thumb))
    router.record_feedback(FeedbackIn(request_id=a[0], label="meh"))
    res = router.results("bot")
    parsed = ExperimentResults.model_validate(res)
    _round_trip(ExperimentResults, res)
    control, variant, base = parsed.variants
    assert control.lift is None
    assert isinstance(variant.lift, ProportionLift) and variant.lift.z is not None
    assert "z" in res["variants"][1]["lift"] and "z" not in res["variants"][2]["lift"]
    assert variant.errors == 20 and res["series"]["y_range"] == [0.0, 1.0]


def test_score_results_match_the_model(router: Router):
    rng = random.Random(4)
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1), ("support@3", 1)],
                  metric="score", score_min=0, score_max=10)
    router.start("bot")
    a = _send(router, "bot", "support@1", 12, "a", rng)
    b = _send(router, "bot", "support@2", 12, "b", rng)
    c = _send(router, "bot", "support@3", 4, "c", rng)
    for ids, scores in ((a, [3, 4, 5, 6, 7]), (b, [6, 7, 8, 9]), (c, [5])):
        for rid, score in zip(ids, scores, strict=False):
            router.record_feedback(FeedbackIn(request_id=rid, score=score))
    res = router.results("bot")
    parsed = _round_trip(ExperimentResults, res)
    with_t, one_score = parsed["variants"][1]["lift"], parsed["variants"][2]["lift"]
    assert isinstance(ExperimentResults.model_validate(res).variants[1].lift, MeanLift)
    assert with_t["t"] is not None and with_t["df"] is not None
    assert "t" not in one_score and "df" not in one_score  # one score: no sd, no test
    assert parsed["series"]["y_range"] == [0.0, 10.0]


def test_results_before_any_request_match_the_model(router: Router):
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)])
    res = router.results("bot")
    _round_trip(ExperimentResults, res)
    assert res["series"]["bin"] is None and "y_range" not in res["series"]
    assert res["srm"]["chi2"] is None and res["srm"]["since"] is None


def test_srm_infinite_chi2_matches_the_model(router: Router):
    """Units on a variant of weight 0 give chi2 'inf', a string in the JSON."""
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1), ("support@3", 1)])
    router.start("bot")
    router.set_weights("bot", [("support@1", 1), ("support@2", 1), ("support@3", 0)])
    rng = random.Random(5)
    for variant, prefix in (("support@1", "a"), ("support@2", "b"), ("support@3", "c")):
        _send(router, "bot", variant, 3, prefix, rng)
    res = router.results("bot")
    _round_trip(ExperimentResults, res)
    assert res["srm"]["chi2"] == "inf" and res["srm"]["flagged"] is True


def test_results_drift_fails_loudly(router: Router):
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)])
    res = router.results("bot")
    for path in (("variants", 0), ("srm",), ("series",), ("experiment",), ()):
        drifted = copy.deepcopy(res)
        target = drifted
        for key in path:
            target = target[key]
        target["new_stat"] = 1
        with pytest.raises(ValidationError, match="new_stat"):
            ExperimentResults.model_validate(drifted)
    wrong = copy.deepcopy(res)
    wrong["variants"][1]["lift"]["test"] = "Mann-Whitney U"
    with pytest.raises(ValidationError):
        ExperimentResults.model_validate(wrong)


def test_experiment_views_match_the_model(router: Router):
    exp = router.create(alias="bot", variants=[("support@1", 1), ("base", 3)],
                        metric="score", retention=True, labels=["x"])
    seen = [exp, router.start("bot"), router.pause("bot"),
            router.set_weights("bot", [("support@1", 1), ("base", 1)]), router.stop("bot")]
    for one in seen:
        _round_trip(ExperimentView, _view(one))
    assert [e["status"] for e in (_view(x) for x in seen)] == [
        "draft", "running", "paused", "paused", "stopped"]
    _round_trip(ExperimentList, {"object": "list", "data": [_view(e) for e in router.list()]})
    _round_trip(ExperimentDeleted, {"object": "experiment.deleted", "name": "x", "deleted": True})
    with pytest.raises(ValidationError, match="salt"):
        ExperimentView.model_validate({**_view(exp), "salt": "secret"})


def test_feedback_records_match_the_model(router: Router, routed):
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)])
    router.start("bot")
    routed(router, "bot", range(2))
    posts = [FeedbackIn(request_id="r0", thumb="up", client_id="c1", user="ann"),
             FeedbackIn(request_id="r0", score=4.5, comment="fine"),
             FeedbackIn(request_id="r0", label="good"),
             FeedbackIn(request_id="r1", correction="better text"),
             FeedbackIn(request_id="r1", preferred_over="r0"),
             FeedbackIn(request_id="r0", thumb="up", client_id="c1", user="ann")]  # a retry
    kinds = []
    for post in posts:
        record, _created = router.record_feedback(post)
        dumped = _round_trip(FeedbackView, {"object": "feedback", **record.as_dict()})
        kinds.append(dumped["kind"])
    assert kinds == ["thumb", "score", "label", "correction", "preference", "thumb"]


def _schema_ref(spec: dict, path: str, method: str, status: str) -> str:
    return spec["paths"][path][method]["responses"][status]["content"]["application/json"][
        "schema"]["$ref"].rsplit("/", 1)[-1]


def test_app_documents_and_sends_the_models(inprocess, tiny_loras):
    parts = inprocess()
    with TestClient(parts.app) as http:
        spec = http.get("/openapi.json").json()
        assert _schema_ref(spec, "/admin/experiments/{name}/results", "get", "200") == (
            "ExperimentResults")
        assert _schema_ref(spec, "/v1/feedback", "post", "201") == "FeedbackView"
        assert _schema_ref(spec, "/v1/feedback", "post", "200") == "FeedbackView"
        assert _schema_ref(spec, "/admin/experiments", "get", "200") == "ExperimentList"
        assert _schema_ref(spec, "/admin/experiments", "post", "201") == "ExperimentView"
        assert _schema_ref(spec, "/admin/experiments/{name}", "delete", "200") == (
            "ExperimentDeleted")
        for action in ("start", "pause", "stop"):
            assert _schema_ref(spec, f"/admin/experiments/{{name}}/{action}", "post",
                               "200") == "ExperimentView"
        assert _schema_ref(spec, "/admin/experiments/{name}/weights", "put", "200") == (
            "ExperimentView")
        schemas = spec["components"]["schemas"]
        assert set(schemas["ExperimentResults"]["properties"]) == set(
            ExperimentResults.model_fields)
        assert schemas["VariantResults"]["properties"]["lift"]  # the discriminated union

        for lora in tiny_loras[:2]:  # support@1, support@2, through the app so it serves them
            r = http.post("/admin/adapters", json={"name": "support", "path": str(lora)})
            assert r.status_code == 201, r.text
        r = http.post("/admin/experiments", json={
            "alias": "bot", "variants": [{"ref": "support", "weight": 1},
                                         {"ref": "support@1", "weight": 1}]})
        assert r.status_code == 201, r.text
        assert r.json() == _view(parts.router.get("bot"))
        assert list(r.json())[:2] == ["object", "id"]
        assert http.post("/admin/experiments/bot/start").status_code == 200
        rids = []
        for user in ("ann", "bob", "cid", "dan"):
            chat = http.post("/v1/chat/completions", json={
                "model": "bot", "user": user, "messages": [{"role": "user", "content": "hi"}]})
            assert chat.status_code == 200, chat.text
            rids.append(chat.headers["X-Request-Id"])
        posts = [{"request_id": rid, "thumb": thumb, "client_id": f"c-{rid}"}
                 for rid, thumb in zip(rids, ("up", "down", "up", "up"), strict=True)]
        first = [http.post("/v1/feedback", json=post) for post in posts]
        assert [r.status_code for r in first] == [201] * 4, first[0].text
        for r in first:
            FeedbackView.model_validate(r.json())
            assert list(r.json())[:2] == ["object", "id"]
        again = http.post("/v1/feedback", json=posts[0])  # a retry: the stored record, 200
        assert again.status_code == 200 and again.json() == first[0].json()
        body = http.get("/admin/experiments/bot/results")
        assert body.status_code == 200
        direct = parts.router.results("bot")
        sent = body.json()
        assert list(sent) == list(direct)
        assert {**sent, "generated_at": None} == {**direct, "generated_at": None}
        ExperimentResults.model_validate(sent)
        assert http.get("/admin/experiments").json() == {
            "object": "list", "data": [_view(parts.router.get("bot"))]}
        assert http.post("/admin/experiments/bot/stop").json()["status"] == "stopped"
        assert http.get("/admin/experiments/nope/results").status_code == 404
