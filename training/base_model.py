"""Build the embedded default base model: a tiny Llama trained from scratch on `copy`.

Why build rather than download: no model hub is reachable, and a newcomer must
get a working server from the README alone. The model is small (about 1.3 M
parameters) and learns the chat format and the copy task in a few minutes on two
CPU cores; every adapter then learns one more task of the task world, which makes
every claim about serving or training checkable by exact match.

Two recipes. The default, `copy-anything`, mixes fresh made-up text into every batch (words of
random letters in any casing, printable characters, small JSON objects) beside the task world's
copy prompts, so the model copies anything (99% on both held-out sets), and it learns `lower`:
without that, its `a` and `A` share nothing, and an `upper` adapter has to learn every letter's
capital from scratch (near 0%); with it, a rank-16 adapter learns `upper` of made-up words in
about 100 steps (docs/engine-notes.md#random-words). `task-world` trains on the task world's
copy prompts alone: the model memorises its ~200-word list and copies about 8% of made-up words.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from training.data import Row
from training.encoding import collate, encode_row
from training.schedule import warmup_cosine
from training.taskworld import evaluate, make_examples
from training.tokenizer import build_tokenizer, make_tokenizer_portable

__all__ = [
    "BaseBuildConfig",
    "BaseBuildResult",
    "RECIPES",
    "build_base_model",
    "copy_accuracies",
    "ensure_base_model",
    "verify_base_model",
]

BUILD_INFO = "loraswap_base.json"
QUALITY_BAR = 0.95


@dataclass(frozen=True)
class BaseBuildConfig:
    seed: int = 0
    steps: int = 900
    batch_size: int = 32
    lr: float = 3e-3
    """1e-2 diverged; 2e-3 to 3e-3 with warm-up and cosine decay is stable (docs/training.md)."""
    warmup: int = 60
    hidden_size: int = 256
    intermediate_size: int = 512
    num_layers: int = 2
    num_heads: int = 4
    """head_dim 64 = 256 / 4: vLLM's CPU attention refuses head_dim 16."""
    num_kv_heads: int = 2
    max_position_embeddings: int = 512
    train_pool: int = 20_000
    """Task-world copy rows drawn from; the random styles draw fresh text for every row."""
    mix: tuple[tuple[str, float], ...] = (
        ("mixed", 1.0), ("letters", 1.5), ("printable", 1.0), ("json", 0.3),
        ("lower:cased", 1.0), ("cased", 0.5))
    """(entry, weight): `mixed` is the task world's copy; another text style is copy of fresh
    made-up text of that style; `task:style` is another task on fresh text of that style."""
    eval_prompts: int = 200


TASK_WORLD_MIX: tuple[tuple[str, float], ...] = (("mixed", 1.0),)
RECIPES = {
    "copy-anything": BaseBuildConfig(),
    "task-world": BaseBuildConfig(steps=1000, lr=2e-3, mix=TASK_WORLD_MIX),
}


@dataclass
class BaseBuildResult:
    path: Path
    copy_accuracy: float
    """On held-out task-world copy prompts."""
    random_copy_accuracy: float
    """On held-out copy prompts of random-letter words, which no word list answers (held to
    the bar too by the default recipe; reported for `task-world`)."""
    parameters: int
    wall_seconds: float
    config: BaseBuildConfig

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def _model_config(cfg: BaseBuildConfig, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.hidden_size // cfg.num_heads,  # 64: vLLM's CPU attention rejects 16
        max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )


def build_base_model(
    out_dir: Path, cfg: BaseBuildConfig | None = None, progress: bool = True
) -> BaseBuildResult:
    """Train, evaluate on held-out copy prompts, then move the model into `out_dir` atomically."""
    from tqdm import tqdm
    from transformers import LlamaForCausalLM

    cfg = cfg or BaseBuildConfig()
    started = time.monotonic()
    # Tiny late-training gradients can turn into denormal floats, which are very slow on CPUs.
    torch.set_flush_denormal(True)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    tokenizer = build_tokenizer()
    model = LlamaForCausalLM(_model_config(cfg, tokenizer))
    params = sum(p.numel() for p in model.parameters())

    batches = _training_rows(tokenizer, cfg)
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.01)
    model.train()
    bar = tqdm(range(cfg.steps), desc="building base model", unit="step", disable=not progress)
    ema = None
    for step in bar:
        for group in optim.param_groups:
            group["lr"] = warmup_cosine(step, cfg.steps, cfg.warmup, cfg.lr)
        input_ids, labels, mask = collate(next(batches), tokenizer.pad_token_id)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % 10 == 0:
            bar.set_postfix(loss=f"{ema:.4f}")
    bar.close()

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".base-", dir=out_dir.parent))
    try:
        model.eval()
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        make_tokenizer_portable(tmp)
        accuracy = copy_accuracies(tmp, cfg.eval_prompts, cfg.seed)
        result = BaseBuildResult(out_dir, accuracy["copy_accuracy"],
                                 accuracy["random_copy_accuracy"], params,
                                 time.monotonic() - started, cfg)
        (tmp / BUILD_INFO).write_text(json.dumps(result.as_dict(), indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _training_rows(tokenizer, cfg: BaseBuildConfig):
    """Endless batches: each row's style drawn by weight, then its next text of that style.
    Rows are encoded when first drawn; everything follows from the seed."""
    rng = random.Random(cfg.seed)
    if tuple(cfg.mix) == TASK_WORLD_MIX:  # the default recipe, as it has always sampled
        pool = [encode_row(tokenizer, Row("sft", {"messages": ex.messages()}))
                for ex in make_examples("copy", "train", cfg.train_pool, cfg.seed)]
        while True:
            yield rng.sample(pool, cfg.batch_size)
    styles = [style for style, _ in cfg.mix]
    weights = [weight for _, weight in cfg.mix]
    # Enough fresh texts of each style for every row to be new (a style's share of all rows).
    need = cfg.steps * cfg.batch_size
    texts = {style: iter(make_examples("copy", "train", cfg.train_pool, cfg.seed))
             if style == "mixed" else _fresh(style, need, cfg.seed) for style in styles}
    pool: list = []  # task-world rows are reused once their pool is drawn through
    while True:
        batch = []
        for _ in range(cfg.batch_size):
            style = rng.choices(styles, weights)[0]
            ex = next(texts[style], None)
            if ex is None:
                row = rng.choice(pool)
            else:
                row = encode_row(tokenizer, Row("sft", {"messages": ex.messages()}))
                if style == "mixed":
                    pool.append(row)
            batch.append(row)
        yield batch


def _fresh(entry: str, n: int, seed: int):
    """`style` is copy in that style; `task:style` another task of the task world."""
    task, _, style = entry.rpartition(":")
    return iter(make_examples(task or "copy", "train", n, seed, style=style, min_words=1))


def held_out_copy(n: int, seed: int) -> dict[str, list]:
    """The base's two quality sets: task-world copy and copy of random-letter words."""
    return {"copy_accuracy": make_examples("copy", "test", n, seed),
            "random_copy_accuracy": make_examples("copy", "test", n, seed, style="letters",
                                                  min_words=1)}


def copy_accuracies(model_dir: Path, n: int, seed: int) -> dict[str, float]:
    from training.hf_generate import HFChatModel

    model = HFChatModel.load(model_dir)
    return {key: evaluate(model.generate, examples).accuracy
            for key, examples in held_out_copy(n, seed).items()}


def ensure_base_model(out_dir: Path, cfg: BaseBuildConfig | None = None,
                      progress: bool = True) -> BaseBuildResult | None:
    """Build into `out_dir` unless a model is there; concurrent callers wait for one build.

    Returns the build result, or None when a model was already there.
    """
    from filelock import FileLock

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out_dir) + ".lock"):
        if (out_dir / "config.json").exists():
            return None
        return build_base_model(out_dir, cfg, progress=progress)


def verify_base_model(model_dir: Path, n: int = 200, seed: int = 0) -> dict[str, float]:
    """Both copy accuracies of an existing base model, on `n` held-out prompts each."""
    return copy_accuracies(Path(model_dir), n, seed)


def read_build_info(model_dir: Path) -> dict | None:
    path = Path(model_dir) / BUILD_INFO
    return json.loads(path.read_text()) if path.exists() else None
