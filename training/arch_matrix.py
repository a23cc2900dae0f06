"""The architecture matrix: tiny random-weight checkpoints of five model families, built here.

Why: the embedded base is one Llama with a byte tokenizer, and a user's first command is
`loraswap serve --base-model <a Llama, Qwen, Mistral, Phi or Gemma checkpoint>`. No model
hub is reachable, so each family is built locally from its transformers class, small
(about 1.5 M parameters) and random, with a BPE tokenizer and chat template of its own
(training/bpe_tokenizers.py). Random weights are enough for what the matrix checks: that
the engine and transformers+peft compute the same thing (parity on token ids), that the
registry and training take the family's module names, and that training and serving
tokenize the chat the same way. What each family adds is in `ArchSpec.exercises`.

Every parameter is drawn at random, biases and norm weights included (transformers'
initialisation sets those to 0 and 1): a loader that dropped or misread any tensor would
then change the outputs. A build is a pure function of (family, seed, library versions) and
is cached under that key (the tokenizer's training text is part of it); `python -m training.arch_matrix ARCH OUT` builds one by hand.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.bpe_tokenizers import STYLES, ChatStyle, train_tokenizer, training_corpus
from training.tokenizer import make_tokenizer_portable

if TYPE_CHECKING:
    from torch import nn
    from transformers import PretrainedConfig, PreTrainedTokenizerFast

__all__ = ["ARCHS", "BUILD_INFO", "ArchSpec", "build_checkpoint", "build_key", "ensure_checkpoint", "main"]

BUILD_INFO = "loraswap_matrix.json"
RECIPE_VERSION = 3  # bump when a build would come out different for the same key
EMBEDDING_STD = 0.005  # see _randomise


@dataclass(frozen=True)
class ArchSpec:
    """One family: its transformers config class, its sizes and its chat style."""

    name: str
    config_class: str  # transformers class name
    style: str  # a key of bpe_tokenizers.STYLES
    exercises: str  # what this family tests that the others do not
    num_kv_heads: int
    tie_embeddings: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # family-specific config fields
    hidden_size: int = 256
    intermediate_size: int = 512
    num_layers: int = 2
    num_heads: int = 4  # head_dim 64 = 256 / 4: vLLM's CPU attention refuses 16
    vocab_size: int = 1024

    @property
    def chat_style(self) -> ChatStyle:
        return STYLES[self.style]


ARCHS: dict[str, ArchSpec] = {a.name: a for a in (
    ArchSpec("llama", "LlamaConfig", "llama3",
             "grouped-query attention (4 query heads share 2 KV heads), Llama-3 header "
             "tokens, a byte-level BPE with Llama-3's split", num_kv_heads=2),
    ArchSpec("qwen2", "Qwen2Config", "chatml",
             "bias on q/k/v (random here, so a dropped bias shows), one KV head for 4 query "
             "heads, ChatML without BOS", num_kv_heads=1),
    ArchSpec("mistral", "MistralConfig", "mistral",
             "a sliding attention window of 16 tokens (shorter than prompt plus reply), "
             "[INST] control tokens, a SentencePiece-style BPE with byte fallback",
             num_kv_heads=2, extra={"sliding_window": 16}),
    ArchSpec("phi3", "Phi3Config", "phi3",
             "fused qkv_proj and gate_up_proj weights (adapters target them under those "
             "names), full multi-head attention, <|user|> ... <|end|> turns", num_kv_heads=4),
    ArchSpec("gemma", "GemmaConfig", "gemma",
             "tied input and output embeddings (no lm_head tensor), embeddings scaled by "
             "sqrt(hidden), (1 + w) norms, GeGLU, one KV head, <start_of_turn> turns",
             num_kv_heads=1, tie_embeddings=True,
             extra={"head_dim": 64, "hidden_activation": "gelu_pytorch_tanh"}),
)}


def _versions() -> dict[str, str]:
    return {d: metadata.version(d) for d in ("torch", "transformers", "tokenizers")}


def build_key(spec: ArchSpec, seed: int) -> str:
    """What a build depends on: the recipe, the spec, the seed, the tokenizer's training text
    (the task world may grow) and the library versions (another transformers may initialise
    or save differently)."""
    corpus = hashlib.sha256("\n".join(training_corpus(spec.chat_style, seed)).encode())
    blob = json.dumps({"recipe": RECIPE_VERSION, "spec": asdict(spec), "seed": seed,
                       "style": asdict(spec.chat_style), "corpus": corpus.hexdigest(),
                       "versions": _versions()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _model_config(spec: ArchSpec, tokenizer: PreTrainedTokenizerFast) -> PretrainedConfig:
    import transformers

    cls = getattr(transformers, spec.config_class)
    fields: dict[str, Any] = dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=512,
        tie_word_embeddings=spec.tie_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
        **spec.extra,
    )
    return cls(**fields)


def _randomise(model: nn.Module, seed: int) -> None:
    """Every tensor random: matrices N(0, 1/fan_in), embeddings N(0, EMBEDDING_STD²),
    biases N(0, 0.1), norm weights around their neutral value (1, or 0 for Gemma's (1 + w)
    norms) with spread 0.1.

    1/fan_in rather than transformers' 0.02: each layer's output is then as large as its
    input, so the outputs depend on every layer and adapter. Small embeddings: drawn like
    the other matrices (σ = 1/16), the model with tied embeddings only repeated its last
    input token (its embedding dominated the residual stream, hence the last hidden state).
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "embed" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * EMBEDDING_STD)
            elif p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * p.shape[-1] ** -0.5)
            elif name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            else:  # norm weights: keep the neutral value the model was initialised to
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)


def build_checkpoint(arch: str, out_dir: Path, seed: int = 0) -> Path:
    """Build `arch` into `out_dir` (replaced atomically): config, weights, tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    spec = ARCHS[arch]
    tokenizer = train_tokenizer(spec.chat_style, vocab_size=spec.vocab_size, seed=seed)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_model_config(spec, tokenizer), dtype=torch.float32)
    _randomise(model, seed)
    model.eval()

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{arch}-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        make_tokenizer_portable(tmp)
        info = {"arch": arch, "seed": seed, "key": build_key(spec, seed),
                "parameters": sum(p.numel() for p in model.parameters()),
                "exercises": spec.exercises, "versions": _versions()}
        (tmp / BUILD_INFO).write_text(json.dumps(info, indent=1) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def ensure_checkpoint(arch: str, cache_dir: Path, seed: int = 0) -> Path:
    """`cache_dir/<arch>-s<seed>-<key>`, built unless there; concurrent callers wait for one
    build. A recipe or library change gives a new key, so a stale build is never reused."""
    from filelock import FileLock

    if arch not in ARCHS:
        raise KeyError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = cache_dir / f"{arch}-s{seed}-{build_key(ARCHS[arch], seed)}"
    with FileLock(str(out) + ".lock"):
        if not (out / BUILD_INFO).is_file():
            build_checkpoint(arch, out, seed)
    return out


def main(argv: list[str] | None = None, echo: Callable[[str], None] = print) -> int:
    """`python -m training.arch_matrix ARCH OUT [SEED]`: build one checkpoint into OUT."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (2, 3) or args[0] not in ARCHS:
        echo(f"usage: python -m training.arch_matrix {{{','.join(ARCHS)}}} OUT_DIR [SEED]")
        return 2
    out = build_checkpoint(args[0], Path(args[1]), int(args[2]) if len(args) == 3 else 0)
    echo(json.dumps(json.loads((out / BUILD_INFO).read_text()), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
