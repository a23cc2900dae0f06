"""Benchmark bases: random-weight Llamas the size of real small models, on our tokenizer.

The embedded base (1.3 M parameters, 5 MB) fits in L2 cache: one token costs a few hundred
microseconds of arithmetic, so every system measured on it is measuring Python and IPC
overhead per step, not serving. Real deployments serve models whose weights do not fit in
cache, where one sequence at a time is memory-bound and batching is what pays, which is the
regime the S-LoRA paper's naive baseline is about. These bases put the harness in that
regime without downloading anything: same tokenizer and chat template as the embedded
base, seeded random weights (output text is noise; the workload uses `ignore_eos` and fixed
output lengths, so every system does the same work).

    python -m benchmarks.run --base-size 20m ...
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

__all__ = ["SIZES", "make_base"]

# name -> (hidden, intermediate, layers, heads, kv heads); head_dim 64 like the embedded base
SIZES: dict[str, tuple[int, int, int, int, int]] = {
    "5m": (256, 704, 6, 4, 2),
    "20m": (512, 1408, 6, 8, 4),
    "50m": (640, 1728, 10, 10, 5),
    "100m": (768, 2048, 14, 12, 4),
}
_COPIED = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
           "generation_config.json", "special_tokens_map.json")


def make_base(embedded: Path, cache: Path, size: str, *, seed: int = 0) -> Path:
    """`cache/bases/<size>-s<seed>` (made once): random weights, the embedded tokenizer."""
    if size not in SIZES:
        raise ValueError(f"unknown base size {size!r}; choose one of {', '.join(SIZES)}")
    out = cache / "bases" / f"{size}-s{seed}"
    if (out / "model.safetensors").exists():
        return out
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.tokenizer import SPECIAL_TOKENS

    first_byte_id = len(SPECIAL_TOKENS)  # byte b is token first_byte_id + b

    hidden, inter, layers, heads, kv = SIZES[size]
    raw = json.loads((embedded / "config.json").read_text())
    raw.update(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
               num_attention_heads=heads, num_key_value_heads=kv, head_dim=hidden // heads)
    for key in ("architectures", "transformers_version", "dtype", "torch_dtype"):
        raw.pop(key, None)
    config = LlamaConfig(**raw)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    with torch.no_grad():  # logit 0 for all but printable ASCII: streams carry text per token
        keep = torch.zeros(config.vocab_size, dtype=torch.bool)
        keep[first_byte_id + 32:first_byte_id + 127] = True
        model.lm_head.weight[~keep] = 0.0
    params = sum(p.numel() for p in model.parameters())
    print(f"[bench] building a {size} random base: {params / 1e6:.1f} M parameters, "
          f"{layers} layers x {hidden} -> {out}", file=sys.stderr, flush=True)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    for name in _COPIED:
        if (embedded / name).exists():
            shutil.copy2(embedded / name, tmp / name)
    (tmp / "bench_base.json").write_text(json.dumps(
        {"size": size, "seed": seed, "parameters": params, "random_weights": True,
         "tokenizer_from": str(embedded)}, indent=2))
    tmp.rename(out)
    return out
