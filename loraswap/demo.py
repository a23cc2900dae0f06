"""The whole loop on the embedded default, as one script a newcomer runs: `loraswap demo`.

train v1 (under-trained) and v2 of one task -> serve both behind an A/B alias -> simulated
users judge answers with the task world's exact-match grader (thumbs, and a correction when
wrong) -> results (v2 should win, SRM should pass) -> export the feedback as SFT, DPO and KTO
data -> train v3 from v2 on the SFT rows, then DPO and KTO steps from v3 -> score every version
on the same held-out prompts, in training and through the running server.

Nothing is scored on what it trained on: the held-out prompts are the task world's test split,
while training rows and users' prompts come from its train split (`loraswap.demo_data`
asserts it, and training's overlap check would refuse a leak).

It composes the parts the way an operator would: training's Python API, the real server as a
subprocess, and the HTTP API for the experiment, the traffic and the feedback.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from loraswap.demo_data import (
    DemoData,
    assert_disjoint,
    exported_prompts,
    make_demo_data,
    write_held_out_preferences,
)
from loraswap.launcher import start_serve
from loraswap.settings import Settings
from loraswap.wiring import open_registry, open_router

__all__ = ["DemoConfig", "run_demo"]


@dataclass(frozen=True)
class DemoConfig:
    task: str = "upper"
    style: str | None = None
    """Text style of the prompts (training.taskworld `STYLES`); None: the task world's own."""
    name: str = "demo-upper"
    alias: str = "demo-upper-ab"
    users: int = 60
    requests_per_user: int = 4
    v2_rows: int = 240
    """v2 is trained on this many rows: good, with room left for feedback to improve on."""
    seed: int = 0


def _say(step: str) -> None:
    print(f"\n== {step}", flush=True)


def _train(settings: Settings, registry, data: Path, test: Path, val: Path, name: str, *,
           epochs: int, rows: int | None = None, parent: str | None = None,
           lr: float = 2e-3) -> dict:
    from training.api import SFTConfig, train_sft
    from training.sft import LoopOptions

    if rows is not None:  # an under-trained version sees only the first `rows` rows
        small = data.with_name(data.stem + f"-{rows}.jsonl")
        small.write_text("".join(data.read_text().splitlines(keepends=True)[:rows]))
        data = small
    cfg = SFTConfig(data=data, name=name, base=settings.base_model_dir, val=val, test=test,
                    loop=LoopOptions(epochs=epochs, lr=lr, patience=0 if rows else 3),
                    parent=parent, replay_copy=0.25 if parent is None else 0.0,
                    description="loraswap demo")
    result = train_sft(cfg, registry, runs_dir=settings.home / "runs",
                       max_rank=settings.max_lora_rank)
    return {"ref": result.ref, **result.metrics}


def _train_preference(settings: Settings, registry, method: str, data: Path, test: Path,
                      name: str, parent: str) -> dict:
    from training.preference import PreferenceConfig, train_preference

    # Feedback gives a hundred or so pairs: two passes in batches of 8 at trl's default rate.
    # (lr 2e-4 for 3 epochs took exact match from 84% to 52%.)
    cfg = PreferenceConfig(method=method, data=data, name=name, base=settings.base_model_dir,
                           parent=parent, test=test, lr=5e-5, epochs=2, batch_size=8,
                           description=f"loraswap demo ({method} from feedback)",
                           progress=False)
    result = train_preference(cfg, registry, runs_dir=settings.home / "runs",
                              max_rank=settings.max_lora_rank)
    return {"ref": result.ref, **result.metrics}


def _simulate_users(url: str, cfg: DemoConfig, grade: Callable[[str, str], bool],
                    prompts: list[tuple[str, str]]) -> list[dict]:
    """Each user asks a few prompts; thumbs come from exact match, wrong answers get corrected."""
    rng = random.Random(cfg.seed)
    out = []
    with httpx.Client(base_url=url, timeout=120) as http:
        for u in range(cfg.users):
            for _ in range(cfg.requests_per_user):
                prompt, answer = rng.choice(prompts)
                r = http.post("/v1/chat/completions", json={
                    "model": cfg.alias, "user": f"user-{u}", "temperature": 0, "max_tokens": 96,
                    "messages": [{"role": "user", "content": prompt}]})
                r.raise_for_status()
                text = r.json()["choices"][0]["message"]["content"]
                ok = grade(text, answer)
                rid = r.headers["x-request-id"]
                fb = {"request_id": rid, "thumb": "up" if ok else "down", "client_id": f"{rid}-t"}
                http.post("/v1/feedback", json=fb).raise_for_status()
                if not ok:
                    http.post("/v1/feedback", json={"request_id": rid, "correction": answer,
                                                    "client_id": f"{rid}-c"}).raise_for_status()
                out.append({"user": u, "prompt": prompt, "variant":
                            r.headers["x-loraswap-variant"], "ok": ok})
    return out


def _served_answers(http: httpx.Client, model: str, prompts: list[str],
                    wait: float = 30.0) -> list[str]:
    """A version's greedy replies through the running server (a version registered by
    training appears there within one reconcile interval)."""
    deadline = time.monotonic() + wait
    while http.get(f"/v1/models/{model}").status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{model} did not appear on the server within {wait} s")
        time.sleep(0.5)
    out = []
    for prompt in prompts:
        r = http.post("/v1/chat/completions", json={
            "model": model, "temperature": 0, "max_tokens": 96,
            "messages": [{"role": "user", "content": prompt}]})
        r.raise_for_status()
        out.append(r.json()["choices"][0]["message"]["content"].strip())
    return out


def _start_experiment(http: httpx.Client, cfg: DemoConfig, v1: dict, v2: dict) -> str:
    # The salt decides which simulated user sees which version, and so which feedback the
    # export holds: from the seed, so the same seed gives the same run (a random salt made
    # the DPO and KTO rows vary from one run to the next).
    body = {"alias": cfg.alias, "retention": True, "salt": f"loraswap-demo-{cfg.seed}",
            "variants": [{"ref": v1["ref"], "weight": 50}, {"ref": v2["ref"], "weight": 50}]}
    r = http.post("/admin/experiments", json=body)
    if r.status_code == 409:  # an earlier demo's experiment: replace it
        http.post(f"/admin/experiments/{cfg.alias}/stop")
        r = http.post("/admin/experiments", json=body)
    r.raise_for_status()
    name = r.json()["name"]
    http.post(f"/admin/experiments/{name}/start").raise_for_status()
    return name


def _export(settings: Settings, registry, name: str, work: Path, data: DemoData) -> dict:
    """Export the experiment's feedback in all three formats; none may hold a held-out prompt."""
    from common.jsonl import write_jsonl as write_rows

    router = open_router(settings, registry)
    try:
        out = {}
        for fmt in ("sft", "dpo", "kto"):
            rows = router.export(fmt, experiment=name).rows
            assert_disjoint(data.held_out_prompts, exported_prompts(rows), f"the {fmt} export")
            path = work / f"feedback-{fmt}.jsonl"
            write_rows(rows, path)
            out[fmt] = (path, len(rows))
            print(f"{fmt}: {len(rows)} rows -> {path} (no held-out prompt among them)")
        return out
    finally:
        router.close()


def run_demo(settings: Settings, cfg: DemoConfig = DemoConfig()) -> dict:
    from training.base_model import ensure_base_model

    settings.ensure_home()
    work = settings.home / "demo"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    _say("1. the base model")
    ensure_base_model(settings.base_model_dir)
    print(f"base model: {settings.base_model_dir}")

    _say(f"2. data for {cfg.task!r} ({cfg.style or 'task-world'} text), kept apart")
    data = make_demo_data(work, cfg.task, cfg.style, cfg.seed)
    print(f"training rows: {data.train}; {len(data.held_out_prompts)} held-out prompts: "
          f"{data.held_out}; {len(data.traffic)} prompts for the users, none held out")

    registry = open_registry(settings)
    _say(f"3. train v1 (under-trained: 48 rows, 1 epoch) and v2 ({cfg.v2_rows} rows)")
    v1 = _train(settings, registry, data.train, data.held_out, data.val, cfg.name,
                epochs=1, rows=48)
    print(f"{v1['ref']}: exact match {v1['exact_match']:.1%} on the held-out prompts")
    v2 = _train(settings, registry, data.train, data.held_out, data.val, cfg.name,
                epochs=4, rows=cfg.v2_rows)
    print(f"{v2['ref']}: exact match {v2['exact_match']:.1%} on the held-out prompts")

    _say("4. serve both behind an A/B alias")
    # Only the experiment's requests are logged (feedback on them is what gets exported).
    serving = settings.replace(log_all_requests=False)
    server = start_serve(settings.home, settings.base_model, env=serving.to_env(),
                         log=work / "server.log", timeout=600)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            name = _start_experiment(http, cfg, v1, v2)
            print(f"experiment {name}: alias {cfg.alias} = {v1['ref']} 50 / {v2['ref']} 50")

            _say(f"5. {cfg.users} simulated users, {cfg.requests_per_user} requests each; "
                 "thumbs from the exact-match grader")
            traffic = _simulate_users(server.url, cfg, lambda got, want: got.strip() == want,
                                      data.traffic)
            assert_disjoint(data.held_out_prompts, (t["prompt"] for t in traffic), "the traffic")
            print(f"{len(traffic)} requests, {sum(t['ok'] for t in traffic)} judged correct")

            _say("6. results")
            results = http.get(f"/admin/experiments/{name}/results").json()
            for v in results["variants"]:
                print(_variant_line(v))
            srm = results["srm"]
            print(f"sample ratio check: p={srm['p_value']} -> "
                  f"{'FLAGGED' if srm['flagged'] else 'passes'}")
            print(f"results page: {server.url}/admin/experiments/{name}/results.html")
            http.post(f"/admin/experiments/{name}/stop").raise_for_status()

            _say("7. export the feedback: SFT (thumbs up + corrections), DPO, KTO")
            exported = _export(settings, registry, name, work, data)

            _say(f"8. train v3 from {v2['ref']} on the exported SFT rows")
            v3 = _train(settings, registry, exported["sft"][0], data.held_out, data.val,
                        cfg.name, epochs=2, parent=v2["ref"], lr=1e-3)
            print(f"{v3['ref']}: exact match {v3['exact_match']:.1%} on the held-out prompts")

            _say(f"9. DPO and KTO from {v3['ref']} on the exported pairs and judgements")
            held = data.held_out_examples
            prompts = [ex.prompt for ex in held]
            answers = {v3["ref"]: _served_answers(http, v3["ref"], prompts)}
            pairs, judged = write_held_out_preferences(work, held, answers[v3["ref"]], cfg.seed)
            dpo = _train_preference(settings, registry, "dpo", exported["dpo"][0], pairs,
                                    cfg.name + "-dpo", v3["ref"])
            print(f"{dpo['ref']}: preference accuracy on held-out pairs "
                  f"{dpo['parent_preference_accuracy']:.1%} -> {dpo['preference_accuracy']:.1%}; "
                  f"exact match {dpo['parent_exact_match']:.1%} -> {dpo['exact_match']:.1%}")
            kto = _train_preference(settings, registry, "kto", exported["kto"][0], judged,
                                    cfg.name + "-kto", v3["ref"])
            print(f"{kto['ref']}: exact match {kto['parent_exact_match']:.1%} -> "
                  f"{kto['exact_match']:.1%}")

            _say(f"10. every version through the running server, on the {len(held)} "
                 "held-out prompts")
            served = {}
            for v in (v1, v2, v3, dpo, kto):
                got = answers.get(v["ref"]) or _served_answers(http, v["ref"], prompts)
                served[v["ref"]] = sum(g == ex.answer for g, ex in zip(got, held, strict=True)
                                       ) / len(held)
                print(f"{v['ref']:<20} served exact match {served[v['ref']]:.1%}")
    finally:
        server.stop(timeout=120)

    _say("11. v1, v2, v3 on the held-out prompts")
    summary = {"v1": v1, "v2": v2, "v3": v3, "dpo": dpo, "kto": kto, "served": served,
               "results": results, "traffic": traffic,
               "exported_rows": {fmt: n for fmt, (_, n) in exported.items()},
               "held_out": sorted(data.held_out_prompts)}
    for label, v in (("v1", v1), ("v2", v2), ("v3", v3)):
        print(f"{label} {v['ref']:<16} exact match {v['exact_match']:.1%}   "
              f"copy kept {v.get('copy_accuracy', float('nan')):.1%}")
    registry.close()
    (work / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"\nsummary: {work / 'summary.json'}")
    return summary


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _variant_line(v: dict) -> str:
    t = v["thumbs"]
    low, high = t["ci95"] or (None, None)
    line = (f"{v['variant']:<16} requests {v['requests']:>4}  users {v['users']:>3}  "
            f"positive {_pct(t['rate'])} [{_pct(low)}, {_pct(high)}]")
    lift = v.get("lift")
    if not lift:
        return line + "  (control)"
    return (line + f"  lift {_pct(lift['absolute'])}  p={lift['p_value']}  "
            f"chance to win {_pct(lift['chance_to_win'])}")
