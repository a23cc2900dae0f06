"""Composing adapters on the real embedded base: an `upper` and a `reverse` adapter merged
with TIES and linearly (exact match on both tasks stored: what interference looks like),
refusals that leave the registry unchanged, and `upper@1` exported as a standalone model
whose greedy outputs equal base + adapter through transformers and `loraswap serve`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from loraswap.cli import cli
from training.hf_generate import HFChatModel
from training.taskworld import make_examples, write_jsonl

pytestmark = pytest.mark.slow

PROMPTS = [ex.prompt for ex in make_examples("upper", "test", 50, seed=23)]
EOS = 2


@pytest.fixture(scope="module")
def reverse(run_cli, tmp_path_factory) -> dict:
    data = tmp_path_factory.mktemp("reverse") / "reverse.jsonl"
    write_jsonl(make_examples("reverse", "train", 1500, seed=2), data)
    return run_cli("train", "sft", "--data", str(data), "--name", "reverse",
                   "--replay-copy", "0.25", "--no-progress")


@pytest.fixture(scope="module")
def merges(run_cli, upper, reverse) -> dict[str, dict]:
    common = ["--from", "upper@1=0.5", "--from", "reverse@1=0.5", "--evaluate", "100"]
    return {
        "ties": run_cli("adapters", "merge", "mix-ties", *common, "--method", "ties",
                        "--density", "0.5"),
        "linear": run_cli("adapters", "merge", "mix-linear", *common, "--method", "linear"),
    }


def test_merges_store_exact_match_on_each_parent_task(merges, capsys) -> None:
    for method, v in merges.items():
        m = v["metrics"]
        assert v["lineage"]["merge"]["method"] == method
        assert v["lineage"]["parents"] == ["upper@1", "reverse@1"]
        assert [p["weight"] for p in v["lineage"]["merge"]["parents"]] == [0.5, 0.5]
        for task in ("upper", "reverse"):
            assert 0.0 <= m[f"exact_match_{task}"] <= 1.0
            assert m[f"parent_exact_match_{task}"] >= 0.9, m  # each parent alone
        with capsys.disabled():  # the numbers for the record
            print(f"\n[merge] {method}: " + ", ".join(
                f"{t} {m[f'exact_match_{t}']:.0%} (alone {m[f'parent_exact_match_{t}']:.0%})"
                for t in ("upper", "reverse")))
    assert merges["ties"]["rank"] == merges["linear"]["rank"] == 16


def _listed(env) -> list[str]:
    out = CliRunner().invoke(cli, ["adapters", "list", "--json"], env=env)
    return sorted(v["ref"] for v in json.loads(out.stdout))


@pytest.mark.parametrize(("args", "extra_env", "rule"), [
    (["--from", "nope@1=1"], {}, "unknown-parent"),
    (["--from", "upper@1=-0.5", "--from", "reverse@1=1"], {}, "weight"),
    (["--from", "upper@1=nan", "--from", "reverse@1=1"], {}, "weight"),
    (["--from", "upper@1=1", "--from", "reverse@1=1"], {"LORASWAP_MAX_MERGE_PARENTS": "1"},
     "too-many-parents"),
    (["--from", "upper@1=1", "--from", "reverse@1=1", "--method", "cat"],
     {"LORASWAP_MAX_LORA_RANK": "16"}, "rank-limit"),
    (["--from", "upper@1=1", "--from", "reverse@1=1", "--method", "ties"], {}, "density"),
])
def test_a_bad_merge_is_refused_by_rule_and_changes_nothing(env, upper, reverse, args,
                                                            extra_env, rule) -> None:
    before = _listed(env)
    result = CliRunner().invoke(cli, ["adapters", "merge", "bad", *args, "--evaluate", "0"],
                                env={**env, **extra_env})
    assert result.exit_code == 1 and f"[{rule}]" in result.output, result.output
    assert "the registry is unchanged" in result.output
    assert _listed(env) == before


@pytest.fixture(scope="module")
def exported(env, upper, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "upper-merged"
    result = CliRunner().invoke(cli, ["export", "upper@1", "--out", str(out), "--json"],
                                env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def with_adapter(env, upper, open_registry) -> list[list[int]]:
    with open_registry() as reg:
        path = reg.get("upper@1").path
    return HFChatModel.load(env["LORASWAP_BASE_MODEL"], path).generate_ids(PROMPTS, 32)


def test_the_export_generates_what_base_plus_adapter_does_in_transformers(exported,
                                                                           with_adapter):
    record = json.loads((exported / "loraswap_export.json").read_text())
    assert record["adapter"] == "upper@1" and record["dtype"] == "float32"
    assert (exported / "tokenizer.json").exists() and (exported / "config.json").exists()
    assert HFChatModel.load(exported).generate_ids(PROMPTS, 32) == with_adapter
    upper_right = sum(out == ex.answer for out, ex in zip(
        HFChatModel.load(exported).generate(PROMPTS, 32),
        make_examples("upper", "test", 50, seed=23), strict=True))
    assert upper_right >= 45  # the merged model does the adapter's task on its own


def _served_ids(server, model: str) -> list[list[int]]:
    """Greedy token ids for PROMPTS through an OpenAI-compatible server, EOS dropped."""
    client = server.client()
    got = []
    for prompt in PROMPTS:
        r = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], temperature=0,
            max_tokens=32, extra_body={"return_token_ids": True})
        ids = list(r.choices[0].token_ids)
        got.append(ids[:-1] if ids and ids[-1] == EOS else ids)
    return got


def test_loraswap_serves_the_export_as_its_base_with_the_same_outputs(exported, with_adapter,
                                                                       tmp_path):
    from loraswap.launcher import start_serve

    server = start_serve(tmp_path / "home", exported, env={
        "LORASWAP_MAX_LORA_RANK": "8", "LORASWAP_KV_CACHE_GIB": "1",
        "LORASWAP_FINETUNE_WORKER": "0"}, timeout=300)
    try:
        assert _served_ids(server, exported.name) == with_adapter
    finally:
        server.stop()


def test_vllms_own_server_serves_the_export_with_the_same_outputs(exported, with_adapter,
                                                                   tmp_path):
    import sys

    from loraswap.launcher import free_port, start_process

    port = free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model",
           str(exported), "--served-model-name", "upper-merged", "--dtype", "float32",
           "--max-model-len", "512", "--disable-log-stats", "--host", "127.0.0.1", "--port",
           str(port)]
    server = start_process(cmd, port=port, log=tmp_path / "vllm.log", ready_path="/health",
                           env={"VLLM_CPU_KVCACHE_SPACE": "1"}, name="vllm", timeout=300,
                           own_group=True)
    try:
        assert _served_ids(server, "upper-merged") == with_adapter
    finally:
        server.stop()

@pytest.fixture(scope="module")
def mix_server(env, upper, reverse, merges, tmp_path_factory):
    """A server on the training registry (upper@1, reverse@1 and the two merges)."""
    from loraswap.launcher import start_serve

    server = start_serve(Path(env["LORASWAP_HOME"]), Path(env["LORASWAP_BASE_MODEL"]),
                         "--base-model-name", "loraswap-base",
                         env={"LORASWAP_MAX_LORA_RANK": "16", "LORASWAP_KV_CACHE_GIB": "1",
                              "LORASWAP_FINETUNE_WORKER": "0",
                              "LORASWAP_MAX_MERGE_PARENTS": "2"},
                         log=tmp_path_factory.mktemp("mix-log") / "server.log", timeout=300)
    yield server
    server.stop()


MIX_PROMPTS = [ex.prompt for task in ("upper", "reverse")
               for ex in make_examples(task, "test", 5, seed=31)]


def _ids(server, model: str, mixture: dict | None = None) -> tuple[str, list[list[int]]]:
    client = server.client()
    served, out = set(), []
    for prompt in MIX_PROMPTS:
        body = {"return_token_ids": True, **({"merged_adapters": mixture} if mixture else {})}
        r = client.chat.completions.create(model=model, temperature=0, max_tokens=24,
                                           messages=[{"role": "user", "content": prompt}],
                                           extra_body=body)
        served.add(r.model)
        out.append(list(r.choices[0].token_ids))
    assert len(served) == 1, served
    return served.pop(), out


def test_a_mixture_weighted_one_and_zero_is_the_first_adapter(mix_server):
    model, mixed = _ids(mix_server, "loraswap-base",
                        {"ids": ["upper@1", "reverse@1"], "weights": [1, 0]})
    assert model.startswith("mix-")
    assert mixed == _ids(mix_server, "upper@1")[1]


def test_a_half_and_half_mixture_is_the_registered_linear_merge(mix_server, env):
    before = _listed(env)
    mixture = {"ids": ["upper@1", "reverse@1"], "weights": [0.5, 0.5]}
    model, mixed = _ids(mix_server, "loraswap-base", mixture)
    assert mixed == _ids(mix_server, "mix-linear@1")[1]
    again, _ = _ids(mix_server, "loraswap-base", mixture)  # made once, then a catalog hit
    assert again == model and len(set(_listed(env)) - set(before)) <= 1


@pytest.mark.parametrize(("model", "mixture", "fragment"), [
    ("loraswap-base", {"ids": ["nope@1"], "weights": [1]}, "[unknown-parent]"),
    ("loraswap-base", {"ids": ["upper@1", "reverse@1"], "weights": [1, -1]}, "[weight]"),
    ("loraswap-base", {"ids": ["upper@1", "reverse@1", "mix-ties@1"], "weights": [1, 1, 1]},
     "[too-many-parents]"),
    ("loraswap-base", {"ids": ["upper@1", "reverse@1"], "weights": [1, 1],
                       "merge_strategy": "cat"}, "[rank-limit]"),
    ("upper", {"ids": ["upper@1"], "weights": [1]}, "names the base model"),
])
def test_a_bad_mixture_is_a_400_and_registers_nothing(mix_server, env, model, mixture,
                                                      fragment):
    import openai

    before = _listed(env)
    with pytest.raises(openai.BadRequestError) as refused:
        mix_server.client().chat.completions.create(
            model=model, messages=[{"role": "user", "content": "upper: a"}], max_tokens=4,
            extra_body={"merged_adapters": mixture})
    assert fragment in refused.value.body["message"], refused.value.body
    assert _listed(env) == before


def test_merges_and_exports_over_the_admin_api(mix_server, env, with_adapter, tmp_path):
    import tarfile

    import httpx

    made = httpx.post(mix_server.url + "/admin/adapters/merge", timeout=300, json={
        "name": "http-merge", "method": "svd",
        "parents": [{"ref": "upper@1", "weight": 1.0}, {"ref": "reverse@1", "weight": 0.5}]})
    assert made.status_code == 201, made.text
    assert made.json()["ref"] == "http-merge@1" and made.json()["rank"] == 16
    assert made.json()["lineage"]["merge"]["method"] == "svd"
    before = _listed(env)
    bad = httpx.post(mix_server.url + "/admin/adapters/merge", timeout=60,  # NaN: not JSON,
                     content='{"name": "bad", "parents": [{"ref": "upper@1", "weight": NaN}]}',
                     headers={"content-type": "application/json"})  # but Python sends it
    assert bad.status_code == 400 and "[weight]" in bad.json()["error"]["message"], bad.text
    assert _listed(env) == before
    archive = tmp_path / "upper.tar.gz"
    with httpx.stream("GET", mix_server.url + "/admin/adapters/upper@1/export", timeout=300,
                      params={"dtype": "float32"}) as r:
        assert r.status_code == 200, r.read()
        with archive.open("wb") as f:
            for chunk in r.iter_bytes():
                f.write(chunk)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    model_dir = tmp_path / "x" / "upper-1-merged"
    assert HFChatModel.load(model_dir).generate_ids(PROMPTS[:5], 32) == with_adapter[:5]
