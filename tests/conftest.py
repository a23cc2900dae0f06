"""Session fixtures every package's tests share: the embedded base model and tiny stand-ins."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from loraswap.settings import Settings


@pytest.fixture(scope="session")
def embedded_base() -> Path:
    """The built embedded default base model (built here if missing, ~4 minutes)."""
    settings = Settings.from_env()
    path = settings.base_model_dir
    if not (path / "config.json").exists():
        from training.base_model import ensure_base_model

        settings.ensure_home()
        ensure_base_model(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Make a random-init Llama directory (same architecture as the embedded base by default).

    Keyword arguments override LlamaConfig fields, e.g. `hidden_size=128` for a base that
    an adapter of the embedded base must not fit. Saved with the embedded tokenizer.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.tokenizer import build_tokenizer

    made: dict[str, Path] = {}

    def make(**overrides: object) -> Path:
        key = json.dumps(overrides, sort_keys=True)
        if key in made:
            return made[key]
        tok = build_tokenizer()
        fields = dict(
            vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=64,
            max_position_embeddings=512, tie_word_embeddings=False,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        fields.update(overrides)
        if "hidden_size" in overrides and "head_dim" not in overrides:
            fields["head_dim"] = int(fields["hidden_size"]) // int(fields["num_attention_heads"])
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**fields))
        path = tmp_path_factory.mktemp("tiny-llama")
        model.save_pretrained(path, safe_serialization=True)
        tok.save_pretrained(path)
        made[key] = path
        return path

    return make


@pytest.fixture(scope="session")
def tiny_base(tiny_llama_factory: Callable[..., Path]) -> Path:
    """A random-init Llama of the embedded base's shape (no build, no vLLM): enough for the
    registry's shape checks under the in-process app."""
    return tiny_llama_factory()


@pytest.fixture(scope="session")
def tiny_loras(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from inprocess import write_lora

    root = tmp_path_factory.mktemp("tiny-loras")
    return [write_lora(tiny_base, root / f"lora{i}", seed=i) for i in range(6)]


@pytest.fixture
def inprocess(tmp_path: Path, tiny_base: Path):
    """`inprocess(**options)`: the real app over a FakeEngine and real SQLite (tests/inprocess.py);
    use it with `fastapi.testclient.TestClient(parts.app)` to run its lifespan."""
    from inprocess import build

    count = [0]

    def make(**options: object):
        count[0] += 1
        return build(tmp_path / f"home{count[0]}", tiny_base, **options)

    return make
