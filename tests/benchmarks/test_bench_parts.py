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
