"""The whole loop on the embedded default, as one script a newcomer runs: `loraswap demo`.

train v1 (under-trained) and v2 of one task -> serve both behind an A/B alias -> simulated
users judge answers with the task world's exact-match grader (thumbs, and a correction when
wrong) -> results (v2 should win, SRM should pass) -> export the feedback as SFT data ->
train v3 from v2 on it -> compare v1, v2, v3 on the held-out test split.

It composes the parts the way an operator would: training's Python API, the real server as a
subprocess, and the HTTP API for the experiment, the traffic and the feedback.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from loraswap.launcher import start_serve
from loraswap.settings import Settings
from loraswap.wiring import open_registry, open_router

__all__ = ["DemoConfig", "run_demo"]


@dataclass(frozen=True)
class DemoConfig:
    task: str = "upper"
    name: str = "demo-upper"
    alias: str = "demo-upper-ab"
    users: int = 60
    requests_per_user: int = 3
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
                out.append({"user": u, "variant": r.headers["x-loraswap-variant"], "ok": ok})
    return out


def run_demo(settings: Settings, cfg: DemoConfig = DemoConfig()) -> dict:
    from training.base_model import ensure_base_model
    from training.taskworld import make_examples, write_jsonl

    settings.ensure_home()
    work = settings.home / "demo"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    _say("1. the base model")
    ensure_base_model(settings.base_model_dir)
    print(f"base model: {settings.base_model_dir}")

    _say(f"2. task-world data for {cfg.task!r}")
    files = {}
    for split, n in (("train", 800), ("val", 100), ("test", 200)):
        files[split] = work / f"{cfg.task}-{split}.jsonl"
        write_jsonl(make_examples(cfg.task, split, n, cfg.seed), files[split])
        print(f"{split}: {n} rows -> {files[split]}")

    registry = open_registry(settings)
    _say("3. train v1 (under-trained: 48 rows, 1 epoch) and v2 (800 rows)")
    v1 = _train(settings, registry, files["train"], files["test"], files["val"], cfg.name,
                epochs=1, rows=48)
    print(f"{v1['ref']}: exact match {v1['exact_match']:.1%} on the test split")
    v2 = _train(settings, registry, files["train"], files["test"], files["val"], cfg.name,
                epochs=3)
    print(f"{v2['ref']}: exact match {v2['exact_match']:.1%} on the test split")

    _say("4. serve both behind an A/B alias")
    # Only the experiment's requests are logged (feedback on them is what gets exported).
    serving = settings.replace(log_all_requests=False)
    server = start_serve(settings.home, settings.base_model, env=serving.to_env(),
                         log=work / "server.log", timeout=600)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            r = http.post("/admin/experiments", json={
                "alias": cfg.alias, "retention": True, "variants": [
                    {"ref": v1["ref"], "weight": 50}, {"ref": v2["ref"], "weight": 50}]})
            if r.status_code == 409:  # an earlier demo's experiment: replace it
                http.post(f"/admin/experiments/{cfg.alias}/stop")
                r = http.post("/admin/experiments", json={
                    "alias": cfg.alias, "retention": True, "variants": [
                        {"ref": v1["ref"], "weight": 50}, {"ref": v2["ref"], "weight": 50}]})
            r.raise_for_status()
            name = r.json()["name"]
            http.post(f"/admin/experiments/{name}/start").raise_for_status()
            print(f"experiment {name}: alias {cfg.alias} = {v1['ref']} 50 / {v2['ref']} 50")

            _say(f"5. {cfg.users} simulated users, {cfg.requests_per_user} requests each; "
                 "thumbs from the exact-match grader")
            prompts = [(e.prompt, e.answer) for e in make_examples(cfg.task, "test", 200, cfg.seed)]
            traffic = _simulate_users(server.url, cfg, lambda got, want: got.strip() == want,
                                      prompts)
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
    finally:
        server.stop(timeout=120)

    _say("7. export the feedback as SFT data (thumbs up + corrections)")
    router = open_router(settings, registry)
    try:
        exported = router.export("sft", experiment=name)
    finally:
        router.close()
    export_path = work / "feedback-sft.jsonl"
    from common.jsonl import write_jsonl as write_rows

    write_rows(exported.rows, export_path)
    print(f"{len(exported.rows)} rows -> {export_path}")

    _say(f"8. train v3 from {v2['ref']} on the exported feedback")
    v3 = _train(settings, registry, export_path, files["test"], files["val"], cfg.name,
                epochs=2, parent=v2["ref"], lr=1e-3)
    print(f"{v3['ref']}: exact match {v3['exact_match']:.1%} on the test split")

    _say("9. v1, v2, v3 on the held-out test split")
    summary = {"v1": v1, "v2": v2, "v3": v3, "results": results,
               "exported_rows": len(exported.rows)}
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
