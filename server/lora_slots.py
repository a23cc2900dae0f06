"""How many LoRA slots (`max_loras`) the engine gets when the operator leaves it to us.

Why it can be large: a slot is a row of stacked weight buffers the engine allocates at start
(one adapter at `max_lora_rank` for every LoRA-wrapped layer). Our CPU kernels
(server/lora_ops_cpu.py) and vLLM's GPU kernels compute only the slots a batch uses, so an
idle slot costs memory and nothing else; vLLM's own CPU torch ops compute every slot for every
token, so there each slot costs time as well (docs/engine-notes.md#lora-slots).

Why it matters: vLLM's scheduler admits a request only when its adapter fits a free slot.
With fewer slots than adapters in flight, rare adapters wait behind popular ones (the "cliff":
measured TTFT p95 going from 126 ms to 8.1 s between 4 and 64 adapters at 4 slots). More
slots than sequences in one batch (`max_num_seqs`) can never be used at once, and more slots
than adapters kept loaded (`max_cpu_loras`) is refused by vLLM; so the choice is
`min(max_num_seqs, max_cpu_loras, what the memory budget holds)`, never below the fixed
default it replaces (4, or `max_cpu_loras` when that is smaller).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FIXED_DEFAULT", "SlotChoice", "choose_max_loras", "slot_bytes"]

FIXED_DEFAULT = 4  # the slot count before slots were sized automatically
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def _int(config: dict, *names: str, default: int | None = None) -> int:
    for name in names:
        if isinstance(config.get(name), int):
            return config[name]
    if default is None:
        raise ValueError(f"config.json has none of {', '.join(names)}")
    return default


def slot_bytes(config: dict, *, max_lora_rank: int, dtype_bytes: int) -> int:
    """Bytes one slot's buffers take, from a decoder's config.json.

    Per decoder layer the engine stacks A (rank x in) and B (out x rank) for q, k, v, o,
    gate, up and down, which sums to rank x (7h + 2q + 2kv + 3i) values (h hidden,
    q = heads x head_dim, kv = kv heads x head_dim, i intermediate). The token embedding gets
    one more pair, rank x (vocab + h). Counted for every model (an architecture without a
    gate, or with a tied or unwrapped embedding, takes less), so the estimate errs high.
    """
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    h = _int(text, "hidden_size", "n_embd", "d_model")
    layers = _int(text, "num_hidden_layers", "n_layer", "num_layers")
    heads = _int(text, "num_attention_heads", "n_head")
    kv_heads = _int(text, "num_key_value_heads", default=heads)
    head_dim = _int(text, "head_dim", default=h // heads)
    inter = _int(text, "intermediate_size", "n_inner", "ffn_dim", default=4 * h)
    vocab = _int(text, "vocab_size")
    per_layer = 7 * h + 2 * heads * head_dim + 2 * kv_heads * head_dim + 3 * inter
    return max_lora_rank * (layers * per_layer + vocab + h) * dtype_bytes


def dtype_bytes(config: dict, dtype: str, *, cpu: bool) -> int:
    """Bytes per value of the LoRA buffers: float32 on CPU under `auto` (what the engine runs
    there), else the named dtype or the checkpoint's."""
    if dtype != "auto":
        return _DTYPE_BYTES.get(dtype, 4)
    if cpu:
        return 4
    named = config.get("torch_dtype") or config.get("dtype") or "float32"
    return _DTYPE_BYTES.get(str(named), 4)


@dataclass(frozen=True)
class SlotChoice:
    """The chosen count and why, for the start-up log and `/admin/engine`."""

    max_loras: int
    slot_mib: float
    reason: str


def choose_max_loras(model_dir: Path, *, max_lora_rank: int, max_num_seqs: int,
                     max_cpu_loras: int, budget_gib: float, dtype: str, cpu: bool,
                     idle_slots_free: bool) -> SlotChoice:
    """The slot count for `max_loras` = auto. `idle_slots_free`: the kernels skip slots no
    token uses (our CPU kernels, vLLM's GPU kernels); without it more slots cost time."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    one = slot_bytes(config, max_lora_rank=max_lora_rank,
                     dtype_bytes=dtype_bytes(config, dtype, cpu=cpu))
    mib = one / 2**20
    floor = min(FIXED_DEFAULT, max_cpu_loras)
    if not idle_slots_free:
        return SlotChoice(floor, mib, "every slot costs compute with vLLM's own CPU LoRA ops")
    fits = int(budget_gib * 2**30 // one) if one else max_num_seqs
    bounds = {"max_num_seqs": max_num_seqs, "max_cpu_loras": max_cpu_loras,
              f"lora_slots_gib {budget_gib:g} at {mib:.1f} MiB a slot": fits}
    name, value = min(bounds.items(), key=lambda kv: kv[1])
    if value < floor:
        return SlotChoice(floor, mib, f"the fixed default ({name} allows {value})")
    return SlotChoice(value, mib, f"bounded by {name}")
