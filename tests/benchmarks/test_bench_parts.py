"""The harness's parts that the smoke run does not reach: sized bases and the kernel
micro-benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_sized_base_loads_and_streams_text(tiny_base: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks.base_gen import SIZES, make_base

    with pytest.raises(ValueError, match="unknown base size"):
        make_base(tiny_base, tmp_path, "3b")
    out = make_base(tiny_base, tmp_path, "5m")
    assert make_base(tiny_base, tmp_path, "5m") == out  # cached, not rebuilt
    info = json.loads((out / "bench_base.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(str(out))
    hidden, _, layers, _, _ = SIZES["5m"]
    assert model.config.hidden_size == hidden and model.config.num_hidden_layers == layers
    assert info["parameters"] == sum(p.numel() for p in model.parameters()) > 4_000_000
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.get_vocab() == AutoTokenizer.from_pretrained(str(tiny_base)).get_vocab()
    ids = tok.apply_chat_template([{"role": "user", "content": "copy: a b c"}],
                                  add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)["input_ids"]
    with torch.no_grad():
        out_ids = model.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1]:]
    text = tok.decode(out_ids, skip_special_tokens=False)
    assert len(text) == 12 and text.isascii() and text.isprintable(), text


def test_lora_ops_microbenchmark_agrees_with_vllm(capsys) -> None:
    pytest.importorskip("vllm")
    from benchmarks import lora_ops

    rows = lora_ops.run(["--hidden", "64", "--intermediate", "128", "--kv-width", "32",
                         "--tokens", "8,96", "--repeats", "2", "--adapters", "3"])
    assert {(t, k) for t, k, *_ in rows} == {(t, k) for t in (8, 96)
                                             for k in ("q/k/v", "o", "gate/up", "down")}
    for tokens, kind, stock, ours, diff in rows:
        assert stock > 0 and ours > 0 and diff < 1e-3, (tokens, kind, diff)
    assert "| tokens | layer |" in capsys.readouterr().out


def test_lora_cost_curve_agrees_with_vllm_and_writes_its_chart(tmp_path: Path) -> None:
    pytest.importorskip("vllm")
    from benchmarks import lora_curve

    rows = lora_curve.run(["--hidden", "64", "--intermediate", "128", "--kv-width", "32",
                           "--layers", "1", "--tokens", "8,40", "--adapters", "2,16",
                           "--steps", "2", "--out", str(tmp_path / "curve")])
    assert [(r["tokens"], r["adapters"]) for r in rows] == [(8, 2), (8, 16), (40, 2), (40, 16)]
    for row in rows:
        assert row["diff"] < 1e-3 and row["loraswap"] > 0 and row["vLLM CPU ops"] > 0, row
        assert 1 <= row["distinct"] <= min(row["adapters"], row["tokens"])
    assert "| tokens | adapters |" in (tmp_path / "curve.md").read_text()
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_the_ray_system_runs_with_replicas_and_is_reported_against_one_process(
        tmp_path: Path) -> None:
    from benchmarks import report
    from benchmarks.run import SYSTEMS, Bench, parse_args
    from benchmarks.systems import loraswap_ray_server, loraswap_settings
    from loraswap.settings import Settings

    args = parse_args(["--smoke", "--systems", "loraswap,loraswap-ray", "--ray-replicas", "3"])
    assert args.ray_replicas == 3
    assert all(callable(getattr(Bench, f"run_{s.replace('-', '_')}", None)) for s in SYSTEMS)
    server = loraswap_ray_server(loraswap_settings(Settings(), tmp_path), tmp_path, 3)
    assert server.env["LORASWAP_REPLICAS"] == "3" and server.ready_path == "/ready"

    one = {"tok_per_s": 100.0, "req_per_s": 10.0, "ttft_p95_ms": 50.0, "itl_p95_ms": 5.0,
           "e2e_p95_ms": 500.0}
    ray = {"tok_per_s": 80.0, "req_per_s": 8.0, "ttft_p95_ms": 100.0, "itl_p95_ms": 5.0,
           "e2e_p95_ms": 750.0}
    [row] = report.ratios({"loraswap": {"4": one}, "loraswap-ray": {"4": ray}})
    assert row == {"adapters": 4, "vs": "ray (e)/(c)", "tok_per_s": 0.8, "req_per_s": 0.8,
                   "ttft_p95_ms": 2.0, "itl_p95_ms": 1.0, "e2e_p95_ms": 1.5}


def test_fairness_compares_the_rarest_tenth_with_the_median_adapter() -> None:
    from benchmarks.loadgen import Outcome, summarize

    def done(adapter: int, ttft: float) -> Outcome:
        return Outcome(ok=True, start=1.0, end=2.0, ttft=ttft, tokens=1, times=[1.0 + ttft],
                       adapter=adapter)

    # 20 adapters: 0-17 answer in 100 ms; the rarest tenth (18, 19) waits 400 ms.
    outcomes = [done(a, 0.1) for a in range(18) for _ in range(5)]
    outcomes += [done(18, 0.4), done(19, 0.4)]
    s = summarize(outcomes, (0.0, 3.0), adapters=20)
    assert s["adapters_seen"] == 20 and s["rare_tenth_requests"] == 2
    assert s["median_adapter_ttft_p99_ms"] == 100.0
    assert s["rare_tenth_ttft_p99_ms"] == 400.0 and s["rare_to_median_p99"] == 4.0
    # A rare adapter the window never served is not a fairness pass: nothing to compare.
    s = summarize([done(a, 0.1) for a in range(18)], (0.0, 3.0), adapters=20)
    assert s["rare_tenth_requests"] == 0 and s["rare_to_median_p99"] is None


def test_a_stream_of_only_invisible_tokens_is_answered_but_a_cut_stream_is_an_error() -> None:
    """A random benchmark adapter can emit nothing but end-of-sequence tokens under
    ignore_eos: the server answered (finish reason, usage) and it is no error, but it has no
    TTFT and adds no tokens. A stream that ends without a finish reason stays an error."""
    import asyncio
    import json

    import httpx

    from benchmarks.loadgen import Target, send_one, summarize

    def sse(*chunks: dict) -> bytes:
        return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)

    role = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    bodies = {
        "invisible": sse(role, {"choices": [{"index": 0, "delta": {},
                                             "finish_reason": "length"}]},
                         {"choices": [], "usage": {"completion_tokens": 40}})
        + b"data: [DONE]\n\n",
        "cut": sse(role),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=bodies[json.loads(request.content)["model"]])

    async def ask(model: str):
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await send_one(client, Target("t", "http://x", str), {"model": model})

    invisible, cut = asyncio.run(ask("invisible")), asyncio.run(ask("cut"))
    assert invisible.ok and invisible.invisible and invisible.ttft is None
    assert invisible.tokens == 40 and invisible.error is None
    assert not cut.ok and cut.error == "no content streamed"
    invisible.start = invisible.end = cut.start = cut.end = 1.0
    s = summarize([invisible, cut], (0.0, 2.0))
    assert s["errors"] == 1 and s["invisible_outputs"] == 1 and s["output_tokens"] == 0


def test_loraswap_may_run_more_slots_than_the_peer() -> None:
    from types import SimpleNamespace

    from benchmarks.run import Bench, parse_args
    from loraswap.settings import Settings

    limits = Settings(max_loras=4, max_cpu_loras=70)
    args = parse_args(["--quick", "--max-loras", "4", "--loraswap-max-loras", "16"])
    assert (args.max_loras, args.loraswap_max_loras) == (4, 16)
    ours = Bench.loraswap_limits.fget(SimpleNamespace(args=args, limits=limits))
    assert ours.max_loras == 16 and limits.max_loras == 4  # the peer keeps its own
    same = parse_args(["--quick", "--max-loras", "4"])
    assert Bench.loraswap_limits.fget(SimpleNamespace(args=same, limits=limits)) is limits
