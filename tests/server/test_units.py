"""Fast checks without the engine: the CPU guard's zero adapter, keys, the CLI, protocol."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.auth import KeyStore
from server.engine import _write_zero_adapter
from server.protocol import ChatCompletionRequest, RegisterFromPath

LORASWAP = str(Path(sys.executable).with_name("loraswap"))


def test_zero_adapter_has_zero_delta_and_fits_the_base(tiny_llama_factory, tmp_path):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    base = tiny_llama_factory()
    _write_zero_adapter(base, tmp_path / "zero", rank=8)
    tensors = load_file(str(tmp_path / "zero" / "adapter_model.safetensors"))
    assert tensors and all(float(t.abs().sum()) == 0.0 for t in tensors.values())
    config = json.loads((tmp_path / "zero" / "adapter_config.json").read_text())
    (module,) = {k.removeprefix("base_model.model.").rsplit(".", 2)[0] for k in tensors}
    assert module.startswith("model.layers.0.self_attn.")  # the first block's attention
    assert config["r"] == 8 and config["target_modules"] == [module.rsplit(".", 1)[-1]]
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    ids = torch.tensor([[1, 4, 50, 60, 70]])
    with torch.no_grad():
        plain = model(ids).logits
        wrapped = PeftModel.from_pretrained(model, str(tmp_path / "zero"))(ids).logits
    assert torch.equal(plain, wrapped)


def test_keystore_hashes_and_revokes(tmp_path):
    keys = KeyStore(tmp_path / "db.sqlite")
    assert not keys.any_active()
    row, token = keys.create("app")
    assert token.startswith("lsk-") and len(token) > 30
    raw = (tmp_path / "db.sqlite").read_bytes() + (tmp_path / "db.sqlite-wal").read_bytes()
    assert token.encode() not in raw
    assert keys.scope_of(token) == "inference" and keys.scope_of(token + "x") is None
    assert keys.any_active()
    with pytest.raises(ValueError):
        keys.create("x", "root")
    assert keys.revoke(row["prefix"]) == 1 and keys.scope_of(token) is None
    assert not keys.any_active()


def test_keys_cli(tmp_path):
    env = {**os.environ, "LORASWAP_HOME": str(tmp_path)}
    run = lambda *a: subprocess.run([LORASWAP, "keys", *a], env=env, capture_output=True,  # noqa: E731
                                    text=True, timeout=120)
    made = run("create", "ops", "--scope", "admin", "--json")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["key"]
    listed = run("list")
    assert "ops" in listed.stdout and "admin" in listed.stdout and key not in listed.stdout
    assert KeyStore(tmp_path / "loraswap.db").scope_of(key) == "admin"
    assert run("revoke", "ops").returncode == 0
    assert run("revoke", "ops").returncode == 1
    assert KeyStore(tmp_path / "loraswap.db").scope_of(key) is None


def test_openai_models_ignore_extras_admin_models_forbid():
    req = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "presence_penalty": 1})
    assert req.model == "m"
    with pytest.raises(ValueError):
        RegisterFromPath.model_validate({"name": "a", "path": "/x", "typo": 1})


# slow: a `loraswap serve` subprocess (imports torch and vLLM, ~15 s)
@pytest.mark.slow
def test_serve_refuses_a_missing_base(tmp_path):
    env = {**os.environ, "LORASWAP_HOME": str(tmp_path), "LORASWAP_BASE_MODEL": str(tmp_path / "no")}
    r = subprocess.run([LORASWAP, "serve", "--no-demo"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0 and "no base model" in r.stderr
