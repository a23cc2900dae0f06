"""Random peft adapters for any base: what the server and matrix tests register."""

from __future__ import annotations

from pathlib import Path


def make_adapter(base: Path, out: Path, seed: int, **lora: object) -> Path:
    """A random (non-zero) rank-8 LoRA on every linear layer, named as peft names them for the
    base's family (`all-linear`: a Llama's `q_proj`, Phi-3's `qkv_proj`, ...); each seed
    changes the outputs differently. `lora` overrides LoraConfig fields (rank_pattern, ...)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    config = {"r": 8, "lora_alpha": 16, "target_modules": "all-linear", "init_lora_weights": False,
              **lora}
    peft_model = get_peft_model(model, LoraConfig(**config))
    with torch.no_grad():  # peft's non-default init is small; make the effect clearly visible
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(4.0)
    peft_model.save_pretrained(str(out))
    return out
