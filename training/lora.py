"""LoRA / QLoRA options -> peft objects, refusing what the engine cannot serve.

Why refuse here: vLLM rejects DoRA and `modules_to_save` other than classifier
heads, and only serves ranks up to its `max_lora_rank` (one of a fixed set). An
adapter that trains for ten minutes and then fails at registration or at its
first request wastes everyone's time, so the options are checked before training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "LoraOptions",
    "QLoRAUnavailable",
    "TrainingConfigError",
    "VLLM_RANKS",
    "build_lora_config",
    "check_qlora",
    "check_servable",
    "linear_module_names",
    "load_base_for_training",
]

# vLLM's allowed `max_lora_rank` values; an adapter's rank may be anything up to the server's.
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
UNSERVABLE_TARGETS = {"lm_head", "embed_tokens", "wte", "wpe", "embed_out"}


class TrainingConfigError(ValueError):
    """An option is unusable; the message names the option, the value and the rule."""


class QLoRAUnavailable(TrainingConfigError):
    """QLoRA asked for where it cannot run (no CUDA, no bitsandbytes)."""


@dataclass(frozen=True)
class LoraOptions:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    # "all-linear" = every linear layer of the blocks (peft leaves the output head out).
    targets: tuple[str, ...] = ("all-linear",)
    rslora: bool = False
    qlora: bool = False

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["targets"] = list(self.targets)
        return d

    def check(self, max_rank: int = 64) -> None:
        if self.rank < 1:
            raise TrainingConfigError(f"--rank {self.rank}: must be at least 1")
        if self.rank > max_rank:
            raise TrainingConfigError(
                f"--rank {self.rank}: above the server's max_lora_rank {max_rank} "
                "(LORASWAP_MAX_LORA_RANK); the engine could not serve it")
        if self.alpha <= 0:
            raise TrainingConfigError(f"--alpha {self.alpha}: must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise TrainingConfigError(f"--dropout {self.dropout}: must be in [0, 1)")
        if not self.targets:
            raise TrainingConfigError("--targets: at least one module name is needed")
        bad = sorted(set(self.targets) & UNSERVABLE_TARGETS)
        if bad:
            raise TrainingConfigError(
                f"--targets {','.join(bad)}: the engine cannot serve LoRA on embeddings or the "
                "output head; target the blocks' linear layers (default: all-linear)")
        if "all-linear" in self.targets and len(self.targets) > 1:
            raise TrainingConfigError("--targets: `all-linear` cannot be combined with module names")


def check_qlora(opts: LoraOptions) -> None:
    """Fail fast, before any data is read, when QLoRA cannot run here."""
    import torch

    if opts.qlora and not torch.cuda.is_available():
        raise QLoRAUnavailable(
            "QLoRA needs a CUDA GPU (bitsandbytes 4-bit nf4 kernels); none is available on this "
            "machine. Train without --qlora (plain LoRA works on CPU).")


def linear_module_names(model) -> list[str]:
    """Short names of the blocks' linear layers (what `all-linear` means), output head excluded.

    Resolved here rather than by peft: peft writes full module paths into the saved
    config, while engines and the registry expect the short names (q_proj, ...).
    """
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
             if mod is not head and (isinstance(mod, torch.nn.Linear)
                                     or type(mod).__name__ in ("Linear4bit", "Linear8bitLt"))}
    return sorted(names - UNSERVABLE_TARGETS)


def build_lora_config(opts: LoraOptions, model=None):
    """A peft LoraConfig that vLLM can serve: no DoRA, no modules_to_save, bias none."""
    from peft import LoraConfig, TaskType

    targets: list[str] = list(opts.targets)
    if opts.targets == ("all-linear",):
        if model is None:
            raise ValueError("all-linear targets need the model to resolve them")
        targets = linear_module_names(model)
    return LoraConfig(
        r=opts.rank,
        lora_alpha=opts.alpha,
        lora_dropout=opts.dropout,
        target_modules=targets,
        use_rslora=opts.rslora,
        use_dora=False,
        modules_to_save=None,
        bias="none",
        task_type=TaskType.CAUSAL_LM,
    )


def check_servable(peft_model) -> None:
    """Last line of defence after peft resolved the config (e.g. `all-linear`)."""
    for name, cfg in peft_model.peft_config.items():
        if getattr(cfg, "use_dora", False):
            raise TrainingConfigError(f"adapter {name!r} uses DoRA, which the engine refuses")
        if getattr(cfg, "modules_to_save", None):
            raise TrainingConfigError(
                f"adapter {name!r} has modules_to_save={cfg.modules_to_save}, which the engine refuses")
        targets = set(cfg.target_modules or ())
        if targets & UNSERVABLE_TARGETS:
            raise TrainingConfigError(f"adapter {name!r} targets {sorted(targets & UNSERVABLE_TARGETS)}")


@dataclass
class LoadedBase:
    model: Any
    tokenizer: Any
    device: str
    quantized: bool = False
    notes: list[str] = field(default_factory=list)


def load_base_for_training(base_dir, *, qlora: bool = False, device: str = "auto") -> LoadedBase:
    """Base model + tokenizer; QLoRA loads it 4-bit nf4 (double quantisation, bf16 compute).

    Raises QLoRAUnavailable without CUDA: bitsandbytes' 4-bit kernels need it, and a
    silent fallback to full precision would make the run mean something else.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if qlora:
        check_qlora(LoraOptions(qlora=True))
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise QLoRAUnavailable(
                "QLoRA needs bitsandbytes: pip install 'loraswap[train]'") from None
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        bnb = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        model = AutoModelForCausalLM.from_pretrained(
            str(base_dir), quantization_config=bnb, dtype=torch.bfloat16, device_map={"": 0})
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return LoadedBase(model, tokenizer, "cuda", quantized=True)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    return LoadedBase(model.to(device), tokenizer, device)
