"""The registry against real bases: fused modules, tied embeddings, rank and alpha patterns,
hub ids, and quantized checkpoints checked against their unquantized shapes."""

from __future__ import annotations

import ast
import importlib.util
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from quantized_layouts import quantized_copy

from adapters import VLLM_QUANTIZATION_METHODS, AdapterRejected, Registry
from loraswap.cli import cli


@pytest.fixture(scope="session")
def phi3_dir(tmp_path_factory: pytest.TempPathFactory, base_dir: Path) -> Path:
    """A random-init Phi-3 with base_dir's sizes: its q/k/v and gate/up are fused matrices."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    llama = json.loads((base_dir / "config.json").read_text())
    torch.manual_seed(0)
    model = Phi3ForCausalLM(Phi3Config(
        vocab_size=llama["vocab_size"], hidden_size=256, intermediate_size=512,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, pad_token_id=llama["pad_token_id"],
        bos_token_id=llama["bos_token_id"], eos_token_id=llama["eos_token_id"],
    ))
    path = tmp_path_factory.mktemp("tiny-phi3")
    model.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def tied_dir(tiny_llama_factory: Callable[..., Path]) -> Path:
    return tiny_llama_factory(tie_word_embeddings=True)


@pytest.fixture(scope="session")
def quantized(tmp_path_factory: pytest.TempPathFactory, base_dir: Path) -> Callable[..., Path]:
    made: dict[str, Path] = {}

    def make(method: str, **kw: object) -> Path:
        key = json.dumps([method, kw], sort_keys=True)
        if key not in made:
            made[key] = quantized_copy(base_dir, tmp_path_factory.mktemp("q") / "base", method, **kw)
        return made[key]

    return make


@pytest.fixture
def open_registry(tmp_path: Path) -> Iterator[Callable[[Path], Registry]]:
    opened: list[Registry] = []

    def open_(base: Path) -> Registry:
        home = tmp_path / f"home{len(opened)}"
        opened.append(Registry(home / "loraswap.db", home / "store", base, max_rank=64))
        return opened[-1]

    yield open_
    for reg in opened:
        reg.close()


def _refused(reg: Registry, source: Path, snapshot: Callable) -> AdapterRejected:
    before = snapshot(reg)
    with pytest.raises(AdapterRejected) as caught:
        reg.add(source, "bot")
    assert snapshot(reg) == before, "a refusal changed the registry"
    assert not any((reg.store_dir / ".staging").iterdir())
    assert str(caught.value).startswith(f"adapter 'bot' refused [{caught.value.rule}]")
    return caught.value


# --- packed and fused modules ---------------------------------------------------------------

def test_a_fused_base_takes_adapters_on_its_fused_names(
    open_registry: Callable, phi3_dir: Path, make_adapter: Callable[..., Path],
) -> None:
    v = open_registry(phi3_dir).add(make_adapter(phi3_dir), "phi")
    assert v.target_modules == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]


def test_split_parts_of_a_fused_layer_are_served(
    open_registry: Callable, base_dir: Path, make_adapter: Callable[..., Path],
) -> None:
    # vLLM stacks q/k/v into one matrix for Llama and leaves k's slot empty here.
    v = open_registry(base_dir).add(make_adapter(target_modules=["q_proj", "v_proj"]), "qv")
    assert v.target_modules == ["q_proj", "v_proj"]


@pytest.mark.parametrize("direction", ["fused-adapter-on-split-base", "split-adapter-on-fused-base"])
def test_packed_names_must_be_the_bases_own(
    direction: str, open_registry: Callable, base_dir: Path, phi3_dir: Path,
    make_adapter: Callable[..., Path], snapshot: Callable,
) -> None:
    if direction == "fused-adapter-on-split-base":
        reg, source = open_registry(base_dir), make_adapter(phi3_dir)
        needle = "stores gate_proj, up_proj as separate weights"
    else:
        reg, source = open_registry(phi3_dir), make_adapter(base_dir)
        needle = "stores gate_up_proj as one fused weight"
    err = _refused(reg, source, snapshot)
    assert err.rule == "packed-module" and needle in str(err)


def test_a_target_list_naming_the_other_packing_is_refused(
    open_registry: Callable, phi3_dir: Path, make_adapter: Callable[..., Path], snapshot: Callable,
) -> None:
    source = make_adapter(phi3_dir, target_modules=["qkv_proj"])
    config = json.loads((source / "adapter_config.json").read_text())
    config["target_modules"] = ["q_proj", "k_proj", "v_proj"]
    (source / "adapter_config.json").write_text(json.dumps(config))
    err = _refused(open_registry(phi3_dir), source, snapshot)
    assert err.rule == "packed-module" and err.value == "q_proj"


# --- tied embeddings, rank_pattern, alpha_pattern -------------------------------------------

def test_tied_embeddings_base(
    open_registry: Callable, tied_dir: Path, make_adapter: Callable[..., Path], snapshot: Callable,
) -> None:
    reg = open_registry(tied_dir)
    assert "lm_head" not in reg.base.linear_shapes  # the checkpoint stores the matrix once
    assert "lm_head" not in reg.add(make_adapter(tied_dir), "tied").target_modules
    err = _refused(reg, make_adapter(tied_dir, target_modules=["q_proj", "lm_head"]), snapshot)
    assert err.rule == "target-unserved"


def test_rank_and_alpha_patterns_are_accepted_and_checked(
    open_registry: Callable, base_dir: Path, make_adapter: Callable[..., Path], snapshot: Callable,
) -> None:
    reg = open_registry(base_dir)
    v = reg.add(make_adapter(rank_pattern={"q_proj": 16}, alpha_pattern={"v_proj": 32}), "pat")
    assert v.rank == 16  # the largest rank any module has: what max_lora_rank must cover
    for bad, needle in ((dict(alpha_pattern={"v_proj": 0}), "alpha_pattern['v_proj']"),
                        (dict(rank_pattern={"q_proj(": 16}), "not a valid regular expression")):
        source = make_adapter(rank_pattern={"q_proj": 16}, alpha_pattern={"v_proj": 32})
        config = json.loads((source / "adapter_config.json").read_text())
        if "rank_pattern" in bad:
            config["rank_pattern"] = {"q_proj(": 16}
        else:
            config.update(bad)
        (source / "adapter_config.json").write_text(json.dumps(config))
        err = _refused(reg, source, snapshot)
        assert err.rule == "config-invalid" and needle in str(err)
    wrong_rank = make_adapter(rank_pattern={"q_proj": 16})
    config = json.loads((wrong_rank / "adapter_config.json").read_text())
    config["rank_pattern"] = {"q_proj": 32}
    (wrong_rank / "adapter_config.json").write_text(json.dumps(config))
    assert _refused(reg, wrong_rank, snapshot).rule == "rank-mismatch"


# --- hub ids --------------------------------------------------------------------------------

def test_a_hub_id_base_is_accepted_on_shapes_and_marked_in_show(
    tmp_path: Path, base_dir: Path, other_base_dir: Path, make_adapter: Callable[..., Path],
) -> None:
    env = {"LORASWAP_HOME": str(tmp_path / "home"), "LORASWAP_BASE_MODEL": str(base_dir)}

    def run(*args: str, code: int = 0) -> str:
        result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    def hub_named(source: Path) -> Path:
        config = json.loads((source / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = "Qwen/Qwen2.5-0.5B-Instruct"
        (source / "adapter_config.json").write_text(json.dumps(config))
        return source

    assert "base matched by hub" in run("adapters", "add", str(hub_named(make_adapter())), "-n", "h")
    shown = run("adapters", "show", "h")
    assert "trained on:  Qwen/Qwen2.5-0.5B-Instruct" in shown
    assert "not on this machine; accepted because every tensor fits" in shown
    refused = run("adapters", "add", str(hub_named(make_adapter(other_base_dir))), "-n", "h", code=1)
    assert "[shape]" in refused
    assert "h@2" not in run("adapters", "list")


# --- quantized bases ------------------------------------------------------------------------

@pytest.mark.parametrize("method,kw", [
    ("gptq", {}), ("gptq", {"bits": 8}), ("awq", {}), ("compressed-tensors", {}),
])
def test_a_quantized_base_is_checked_against_its_unquantized_shapes(
    method: str, kw: dict, open_registry: Callable, quantized: Callable, base_dir: Path,
    make_adapter: Callable[..., Path],
) -> None:
    qbase = quantized(method, **kw)
    reg = open_registry(qbase)
    full = open_registry(base_dir)
    assert reg.base.linear_shapes == full.base.linear_shapes
    assert not any(name.endswith("q_proj.weight") for name in reg.base.tensors)  # really packed
    v = reg.add(make_adapter(), "q")  # trained on the full-precision model it was exported from
    assert v.base_match == "quantized"
    assert v.target_modules == full.add(make_adapter(), "f").target_modules


# case -> (quantized_copy arguments, adapter from base_dir or other_base_dir or twin, rule, needle)
QUANT_REFUSALS = {
    "gptq-3-bit": (("gptq", {"bits": 3}), "base", "base-quantization", "4- or 8-bit symmetric"),
    "gptq-asymmetric": (("gptq", {"sym": False}), "base", "base-quantization", "sym=False"),
    "awq-8-bit": (("awq", {"bits": 8}), "base", "base-quantization", "only 4-bit"),
    "awq-gemv-packing": (("awq", {"version": "gemv"}), "base", "base-quantization", "'gemv'"),
    "bitsandbytes": (("bitsandbytes", {}), "base", "base-quantization", "no bitsandbytes loader"),
    "unknown-method": (("hqq", {}), "base", "base-quantization", "does not load 'hqq'"),
    "packing-without-shape": (
        ("compressed-tensors", {"weight_shape": False}), "base", "base-quantization-layout",
        "cannot read its unquantized shape"),
    "other-model-shapes": (("gptq", {}), "other", "shape", "expected [8, 512]"),
    "other-model-same-shapes": (("gptq", {}), "twin", "base-mismatch", "a different base model"),
}


@pytest.mark.parametrize("case", list(QUANT_REFUSALS))
def test_quantized_base_refusals(
    case: str, open_registry: Callable, quantized: Callable, make_adapter: Callable[..., Path],
    other_base_dir: Path, twin_base_dir: Path, snapshot: Callable,
) -> None:
    (method, kw), made_on, rule, needle = QUANT_REFUSALS[case]
    source = make_adapter({"base": None, "other": other_base_dir, "twin": twin_base_dir}[made_on])
    err = _refused(open_registry(quantized(method, **kw)), source, snapshot)
    assert err.rule == rule, str(err)
    assert needle in str(err)


def test_the_quantization_list_is_the_installed_vllms() -> None:
    """Read vLLM's own list from its source, without importing the engine."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("vllm is not installed; `make setup` installs it")
    source = Path(spec.submodule_search_locations[0]) / "model_executor/layers/quantization/__init__.py"
    tree = ast.parse(source.read_text())
    literal = next(
        node.value for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "QuantizationMethods" for t in node.targets)
    )
    methods = [elt.value for elt in literal.slice.elts if isinstance(elt, ast.Constant)]
    assert set(methods) == set(VLLM_QUANTIZATION_METHODS)
