"""Benchmark adapters: random (seeded) rank-r LoRA adapters on every linear of the base.

Random weights (`init_lora_weights=False`) make each adapter change the output, so a system
that served the wrong adapter, or none, would do different work; quality does not matter here.
Made once per (base, rank, seed, index) and cached: peft is slow to import, not to run.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

__all__ = ["adapter_name", "make_adapters"]


def adapter_name(i: int) -> str:
    return f"bench-{i:03d}"


def _base_key(base: Path) -> str:
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        p = base / name
        if p.exists():
            st = p.stat()
            h.update(f"{name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:12]


def make_adapters(base: Path, cache: Path, count: int, *, rank: int = 8, seed: int = 0,
                  first: int = 0) -> list[Path]:
    """Folders `cache/<key>/bench-NNN` for indices first..first+count-1 (made if missing)."""
    root = cache / f"{_base_key(base)}-r{rank}-s{seed}"
    wanted = [root / adapter_name(i) for i in range(first, first + count)]
    missing = [p for p in wanted if not (p / "adapter_model.safetensors").exists()]
    if missing:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        pristine = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
        for path in missing:
            index = int(path.name.rsplit("-", 1)[1])
            model = copy.deepcopy(pristine)
            torch.manual_seed(seed * 100_003 + index)
            config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear",
                                init_lora_weights=False, task_type="CAUSAL_LM")
            peft_model = get_peft_model(model, config)
            tmp = path.with_name(path.name + ".tmp")
            peft_model.save_pretrained(str(tmp))
            tmp.rename(path)
    return wanted
