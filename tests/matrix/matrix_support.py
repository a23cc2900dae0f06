"""What the architecture matrix's tests share; tests/matrix/conftest.py holds the fixtures.

Test modules import this by name, not conftest: the suite's other conftest.py files would
shadow it.

Each family gets one server, shared by all its tests (the fixture `rig` is module-scoped and
parametrized over the families, so pytest runs one family's tests together and stops its
server before the next family's starts). While a server starts (mostly Python imports in
three processes, one after the other), the test process does the family's CPU work: three
peft adapters with their transformers references, and `loraswap train sft`. Torch runs on one
thread meanwhile: with two processes of two OpenMP threads each on two cores, a training step
of these models took 0.5-1.8 s instead of 0.05 s (measured).

Two things tried and dropped: preparing the next family in a second thread (transformers
builds models on the meta device through process-wide state; two loads in two threads failed
with "Cannot copy out of meta tensor"), and starting the next family's server while the
current one is tested (on the loaded 2-core machine two engines starting at once each took
twice as long, so the whole run took no less time).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from peft_adapters import make_adapter

from loraswap.launcher import ServeProcess, start_serve
from training.arch_matrix import ARCHS, ArchSpec, ensure_checkpoint
from training.taskworld import make_examples, write_jsonl

BASE_ID = "base"
N_ADAPTERS = 3
MAX_LORAS = 3  # with the CPU guard's zero adapter, base + 3 adapters need 4: every slot is full
MAX_TOKENS = 24
# Task-world prompts, and one with characters no tokenizer saw in training (byte fallback).
PROMPTS = [ex.prompt for task in ("copy", "upper", "reverse")
           for ex in make_examples(task, "test", 2, seed=5)] + ["copy: naïve café, 42 €"]
TIMINGS_KEY = pytest.StashKey[dict]()


@dataclass
class Rig:
    """One family's server and everything its tests compare against."""

    arch: str
    spec: ArchSpec
    base: Path
    server: ServeProcess
    adapters: list[str]  # registered names, each with one version
    references: dict[str, list[list[int]]]  # model -> transformers(+peft) greedy ids per prompt
    sft: dict  # `loraswap train sft --json` output
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.base))

    def client(self):
        return self.server.client()

    def close(self) -> None:
        self.server.stop(timeout=60)


def greedy_ids(base: Path, adapter: Path | None) -> list[list[int]]:
    """transformers(+peft) greedy reply ids for PROMPTS, cut at the first EOS only.

    Not training.hf_generate: it also stops at the pad token, which a trained model never
    writes but a random one may, and the engine goes on past it.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.encoding import render_prompt

    tok = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    tok.padding_side = "left"
    texts = [render_prompt(tok, [{"role": "user", "content": p}]) for p in PROMPTS]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        out = model.eval().generate(**enc, max_new_tokens=MAX_TOKENS, do_sample=False,
                                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    replies = []
    for row in out[:, enc["input_ids"].shape[1]:].tolist():
        replies.append(row[: row.index(tok.eos_token_id)] if tok.eos_token_id in row else row)
    return replies


def train_sft(base: Path, home: Path) -> dict:
    """`loraswap train sft` for a few steps (48 task-world rows, 2 epochs of batch 8) into a
    scratch data directory whose registry serves the same base; its `--json` output."""
    from click.testing import CliRunner

    from loraswap.cli import cli

    home.mkdir(parents=True, exist_ok=True)
    data = home / "upper.jsonl"
    write_jsonl(make_examples("upper", "train", 48, seed=0), data)
    args = ["--home", str(home), "train", "sft", "--data", str(data), "--name", "sft",
            "--rank", "8", "--alpha", "16", "--epochs", "2", "--batch-size", "8", "--lr", "2e-2",
            "--patience", "0", "--no-progress", "--json"]
    # The registry's base is a setting of the environment only; the server's start (in
    # another thread) passes its own LORASWAP_BASE_MODEL explicitly, so this cannot leak.
    result = CliRunner().invoke(cli, args, env={"LORASWAP_BASE_MODEL": str(base)},
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output[-3000:]
    return json.loads(result.stdout)


def register(server: ServeProcess, name: str, path: Path) -> dict:
    r = httpx.post(server.url + "/admin/adapters", json={"name": name, "path": str(path)},
                   timeout=60)
    assert r.status_code == 201, r.text
    return r.json()


SERVER_ENV = {"LORASWAP_MAX_LORA_RANK": "8", "LORASWAP_MAX_LORAS": str(MAX_LORAS),
              "LORASWAP_MAX_CPU_LORAS": "8", "LORASWAP_KV_CACHE_GIB": "1"}


def prepare_rig(arch: str, cache: Path, root: Path) -> Rig:
    """Everything one family's tests need: its checkpoint (cached in `cache`), its server,
    three registered adapters, an SFT adapter, and their transformers references.

    While the server starts (a thread waits for it), this thread makes the adapters, their
    references and the SFT adapter; on any failure the server is stopped.
    """
    began = time.monotonic()
    timings: dict[str, float] = {}
    base = ensure_checkpoint(arch, cache)
    waiter = ThreadPoolExecutor(1, thread_name_prefix=f"start-{arch}")
    starting = waiter.submit(start_serve, root / "home", base, "--base-model-name", BASE_ID,
                             env=SERVER_ENV, timeout=600)
    server = None
    try:
        dirs = [make_adapter(base, root / f"a{i}", seed=100 + i) for i in range(N_ADAPTERS)]
        references = {BASE_ID: greedy_ids(base, None)}
        references.update({f"a{i}": greedy_ids(base, d) for i, d in enumerate(dirs)})
        sft = train_sft(base, root / "sft-home")
        timings["sft_steps"] = sft["metrics"]["steps"]
        references["sft"] = greedy_ids(base, Path(sft["adapter_dir"]))
        timings["local_work"] = round(time.monotonic() - began, 1)
        server = starting.result()
        timings["engine_start"] = round(server.start_seconds, 1)
        timings["engine_wait"] = round(time.monotonic() - began - timings["local_work"], 1)
        names = [register(server, f"a{i}", d)["name"] for i, d in enumerate(dirs)]
        sft["registered"] = register(server, "sft", Path(sft["adapter_dir"]))
        return Rig(arch, ARCHS[arch], base, server, names, references, sft, timings)
    except BaseException:
        try:  # a start that failed raises here; one that succeeded is stopped
            (server or starting.result()).stop(timeout=60)
        except Exception:
            pass
        raise
    finally:
        waiter.shutdown(wait=False)
