"""Auto `max_loras`: a slot's size from the model's shapes, and the count from its bounds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.lora_slots import FIXED_DEFAULT, choose_max_loras, slot_bytes

RANK = 8


def _llama_config(**overrides) -> dict:
    config = dict(model_type="llama", hidden_size=256, intermediate_size=704,
                  num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=64, vocab_size=300)
    return {**config, **overrides}


def _counted_from_modules(config: dict, rank: int) -> int:
    """The same size counted from a real transformers model: every linear layer of every
    decoder block (A: rank x in, B: out x rank) and the token embedding."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(**config))
    values = 0
    for module in model.model.layers.modules():
        if isinstance(module, torch.nn.Linear):
            values += rank * (module.in_features + module.out_features)
    emb = model.model.embed_tokens
    return values + rank * (emb.num_embeddings + emb.embedding_dim)


@pytest.mark.parametrize("shape", [{}, {"num_key_value_heads": 4},
                                   {"hidden_size": 512, "intermediate_size": 1408,
                                    "num_attention_heads": 8, "num_key_value_heads": 4}])
def test_a_slot_holds_every_wrapped_layer_at_max_rank(shape) -> None:
    config = _llama_config(**shape)
    assert slot_bytes(config, max_lora_rank=RANK, dtype_bytes=4) == 4 * _counted_from_modules(
        config, RANK)
    assert slot_bytes(config, max_lora_rank=2 * RANK, dtype_bytes=2) == 2 * _counted_from_modules(
        config, 2 * RANK)


def _choose(tmp_path: Path, config: dict | None = None, **kw):
    (tmp_path / "config.json").write_text(json.dumps(config or _llama_config()))
    args = dict(max_lora_rank=RANK, max_num_seqs=64, max_cpu_loras=64, budget_gib=1.0,
                dtype="auto", cpu=True, idle_slots_free=True)
    return choose_max_loras(tmp_path, **{**args, **kw})


def test_auto_takes_as_many_slots_as_a_batch_can_use(tmp_path: Path) -> None:
    choice = _choose(tmp_path)
    assert (choice.max_loras, choice.reason) == (64, "bounded by max_num_seqs")
    assert _choose(tmp_path, max_num_seqs=200, max_cpu_loras=32).max_loras == 32


def test_the_memory_budget_bounds_the_slots(tmp_path: Path) -> None:
    one = _choose(tmp_path).slot_mib * 2**20
    fits_ten = 10.5 * one / 2**30
    choice = _choose(tmp_path, budget_gib=fits_ten)
    assert choice.max_loras == 10 and choice.reason.startswith("bounded by lora_slots_gib")
    # A budget for fewer than the fixed default still gets the default, never fewer.
    assert _choose(tmp_path, budget_gib=one / 2**30).max_loras == FIXED_DEFAULT
    assert _choose(tmp_path, budget_gib=one / 2**30, max_cpu_loras=2).max_loras == 2


def test_a_gpu_half_precision_checkpoint_fits_twice_the_slots(tmp_path: Path) -> None:
    config = _llama_config(torch_dtype="bfloat16")
    budget = 20.5 * _choose(tmp_path, config).slot_mib / 1024  # 20 float32 slots
    assert _choose(tmp_path, config, budget_gib=budget).max_loras == 20  # CPU: float32
    assert _choose(tmp_path, config, budget_gib=budget, cpu=False).max_loras == 41


def test_kernels_that_compute_every_slot_keep_the_fixed_default(tmp_path: Path) -> None:
    choice = _choose(tmp_path, idle_slots_free=False)
    assert choice.max_loras == FIXED_DEFAULT and "every slot" in choice.reason


@pytest.mark.parametrize(("max_loras", "kernels", "want_env", "want_slots"), [
    (4, True, True, 4),       # an explicit count keeps the kernels on (a bug once turned them off)
    (None, True, True, 8),    # auto: bounded by max_cpu_loras here
    (None, False, False, 4),  # vLLM's own ops: every slot costs compute, the fixed default
])
def test_the_engine_decides_kernels_and_slots_before_vllm_starts(
        tmp_path: Path, monkeypatch, max_loras, kernels, want_env, want_slots) -> None:
    import os

    from server import engine as engine_module
    from server.engine import CPU_LORA_OPS_ENV, Engine, EngineConfig

    (tmp_path / "config.json").write_text(json.dumps(_llama_config()))
    monkeypatch.setattr(engine_module, "install_cpu_lora_ops", lambda: True)
    monkeypatch.setattr(engine_module, "_plugin_reaches_workers", lambda: None)
    monkeypatch.delenv(CPU_LORA_OPS_ENV, raising=False)
    cfg = EngineConfig(model=tmp_path, max_loras=max_loras, lora_slots_gib=1.0,
                       max_lora_rank=RANK, max_cpu_loras=8, max_model_len=256, max_num_seqs=64,
                       kv_cache_gib=1.0, cpu_base_guard=True, cpu_lora_kernels=kernels,
                       tensor_parallel_size=1, gpu_memory_utilization=0.9, dtype="auto",
                       quantization=None, enable_prefix_caching=True,
                       max_num_batched_tokens=None, enforce_eager=False, engine_extra={})
    engine = Engine(cfg)
    engine.prepare_lora(is_cpu=True)
    assert (os.environ.get(CPU_LORA_OPS_ENV) == "1") is want_env
    assert engine.lora_kernels is kernels and engine.max_loras == want_slots
