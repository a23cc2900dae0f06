"""The matrix's checkpoints and tokenizers without an engine: deterministic builds, each
family's distinguishing feature really present, and training's tokenization of a chat equal
to the server's (one call on the whole rendered text)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from training import bpe_tokenizers
from training.arch_matrix import ARCHS, BUILD_INFO, build_checkpoint, ensure_checkpoint
from training.bpe_tokenizers import STYLES, ChatStyle, train_tokenizer
from training.data import Row
from training.encoding import IGNORE, encode_row, render_prompt

CHAT = [{"role": "system", "content": "Answer exactly."},
        {"role": "user", "content": "upper: hello brave world"},
        {"role": "assistant", "content": "HELLO BRAVE WORLD"},
        {"role": "user", "content": "copy: Naïve café, 42 €!"},
        {"role": "assistant", "content": "Naïve café, 42 €!"}]


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("builds")
    return {arch: build_checkpoint(arch, root / arch) for arch in ARCHS}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_a_build_is_a_function_of_its_seed(arch, built, tmp_path):
    again = build_checkpoint(arch, tmp_path / "again")
    other = build_checkpoint(arch, tmp_path / "other", seed=1)
    first = _tensors(built[arch])
    assert all(torch.equal(t, _tensors(again)[k]) for k, t in first.items())
    assert (built[arch] / "tokenizer.json").read_bytes() == (again / "tokenizer.json").read_bytes()
    assert not torch.equal(first["model.embed_tokens.weight"],
                           _tensors(other)["model.embed_tokens.weight"])
    info = json.loads((built[arch] / BUILD_INFO).read_text())
    assert info["arch"] == arch and info["parameters"] < 3_000_000


def test_the_cache_reuses_a_build(tmp_path):
    first = ensure_checkpoint("qwen2", tmp_path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert ensure_checkpoint("qwen2", tmp_path) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(KeyError, match="unknown architecture"):
        ensure_checkpoint("gpt2", tmp_path)


def _shape(tensors: dict, name: str) -> tuple[int, ...]:
    return tuple(tensors[name].shape)


FEATURES = {
    # grouped-query attention: fewer key/value heads than query heads
    "llama": lambda t, c: _shape(t, "model.layers.0.self_attn.k_proj.weight")[0]
    < _shape(t, "model.layers.0.self_attn.q_proj.weight")[0],
    # q/k/v carry random (non-zero) biases; o_proj none
    "qwen2": lambda t, c: all(float(t[f"model.layers.0.self_attn.{m}_proj.bias"].abs().min()) > 0
                              for m in "qkv")
    and "model.layers.0.self_attn.o_proj.bias" not in t,
    "mistral": lambda t, c: c["sliding_window"] == 16,
    # fused projections, under the names peft and vLLM use for them
    "phi3": lambda t, c: "model.layers.0.self_attn.qkv_proj.weight" in t
    and "model.layers.0.mlp.gate_up_proj.weight" in t
    and not any(k.endswith(("q_proj.weight", "gate_proj.weight")) for k in t),
    # tied embeddings: no output head tensor at all
    "gemma": lambda t, c: c["tie_word_embeddings"] and "lm_head.weight" not in t,
}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_each_family_has_what_it_is_in_the_matrix_for(arch, built):
    tensors = _tensors(built[arch])
    config = json.loads((built[arch] / "config.json").read_text())
    assert FEATURES[arch](tensors, config)
    assert config["architectures"] == [ARCHS[arch].config_class.replace("Config", "ForCausalLM")]
    # every tensor random: a norm left at its initial value would hide a loader that drops it
    norms = [t for k, t in tensors.items() if t.dim() == 1 and "norm" in k]
    assert norms and all(float(t.std()) > 0.01 for t in norms)


def test_the_sliding_window_changes_what_mistral_generates(built):
    """Prompt and reply are longer than the window, so the window is really exercised."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = built["mistral"]
    tok = AutoTokenizer.from_pretrained(str(path))
    text = render_prompt(tok, [{"role": "user", "content": "reverse: red fox jumps over dog"}])
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    outs = []
    for window in (16, None):
        model = AutoModelForCausalLM.from_pretrained(str(path), sliding_window=window)
        with torch.inference_mode():
            outs.append(model.generate(ids, max_new_tokens=24, do_sample=False,
                                       pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist())
    assert outs[0] != outs[1]


@pytest.mark.parametrize("style", list(STYLES))
def test_training_tokenizes_a_chat_as_the_server_does(style):
    tok = train_tokenizer(STYLES[style])
    ids, labels = encode_row(tok, Row("sft", {"messages": CHAT}))
    whole = tok(tok.apply_chat_template(CHAT, tokenize=False), add_special_tokens=False)
    assert ids == whole["input_ids"]
    for turn in (2, 4):  # each assistant turn: the served prompt is exactly what precedes it
        served = tok(render_prompt(tok, CHAT[:turn]), add_special_tokens=False)["input_ids"]
        assert ids[: len(served)] == served
        assert labels[len(served) - 1] == IGNORE and labels[len(served)] != IGNORE
    scored = tok.decode([t for t in labels if t != IGNORE], skip_special_tokens=True)
    assert scored.replace("\n", "") == CHAT[2]["content"] + CHAT[4]["content"]
    assert [t for t in labels if t != IGNORE].count(tok.eos_token_id) == 2
    assert tok.decode(tok("Naïve café, 42 €!", add_special_tokens=False)["input_ids"]) \
        == "Naïve café, 42 €!"


@pytest.mark.parametrize("style", [s for s in STYLES if STYLES[s].spelling == "metaspace"])
def test_a_reply_tokenized_alone_differs_from_the_same_reply_in_the_chat(style):
    """Why encode_row tokenizes the whole chat: SentencePiece-style tokenizers write a
    word-start marker before a reply tokenized on its own, not after the template's tokens."""
    tok = train_tokenizer(STYLES[style])
    reply = CHAT[2]["content"] + tok.eos_token
    alone = tok(reply, add_special_tokens=False)["input_ids"]
    ids, labels = encode_row(tok, Row("sft", {"messages": CHAT[1:3]}))
    in_chat = [t for t in labels if t != IGNORE]
    if STYLES[style].prefix_space:
        assert alone != in_chat[: len(alone)]
    assert tok.decode(in_chat, skip_special_tokens=True).strip() == CHAT[2]["content"]


def test_a_token_across_the_end_of_the_prompt_is_refused(monkeypatch):
    """Without the newline split, a Gemma-style tokenizer merges `model\\n` with the reply's
    first letter inside a chat, so no prefix of the chat's ids is the served prompt."""
    from tokenizers import pre_tokenizers

    monkeypatch.setattr(bpe_tokenizers, "_metaspace_split", lambda style: pre_tokenizers.Metaspace(
        prepend_scheme="never", split=True))
    style: ChatStyle = STYLES["gemma"]
    tok = train_tokenizer(style)
    chat = [{"role": "user", "content": "upper: hello brave world"},
            {"role": "assistant", "content": "HELLO BRAVE WORLD"}]
    text = tok.apply_chat_template(chat, tokenize=False)
    assert any("\n" in p and p.strip("\n▁") for p in tok.tokenize(text))  # a merge over "\n"
    with pytest.raises(ValueError, match="splits the conversation differently"):
        encode_row(tok, Row("sft", {"messages": chat}))
