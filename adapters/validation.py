"""Refuse, before anything is stored, every adapter the engine would reject or misapply.

Each check raises AdapterRejected naming the adapter, a stable rule id and the
offending value. The rules mirror what vLLM's PEFTHelper refuses (DoRA, LoRA bias,
modules_to_save, base-modifying inits, ...) plus what it would only discover at
load time or never (tensor names and shapes that do not fit the base, a rank it
cannot serve, a truncated weights file).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from adapters.basemodel import BaseModel
from adapters.errors import AdapterRejected
from adapters.quantized import QuantizationRefused
from adapters.safetensors_header import SafetensorsError, TensorInfo, read_header

__all__ = [
    "CONFIG_FILE",
    "STORED_FILES",
    "VLLM_RANKS",
    "WEIGHTS_FILE",
    "AdapterInfo",
    "check_source_files",
    "validate_adapter",
]

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
STORED_FILES = (CONFIG_FILE, WEIGHTS_FILE)
PICKLED_WEIGHTS = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth")
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
FLOAT_DTYPES = {"F16", "BF16", "F32"}
UNSERVED_MODULES = ("lm_head", "embed_tokens")
PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"(?P<module>.+)\.(?P<part>lora_A|lora_B)\.weight")
# PEFT features that change what the adapter computes and that vLLM does not implement:
# any non-empty value is refused.
_UNSUPPORTED_FEATURES = {
    "lora_bias": "LoRA bias terms",
    "alora_invocation_tokens": "Activated LoRA (aLoRA)",
    "layer_replication": "layer_replication",
    "use_bdlora": "block-diagonal LoRA (BD-LoRA)",
    "use_qalora": "QALoRA",
    "target_parameters": "LoRA on parameters (target_parameters)",
    "trainable_token_indices": "trainable token indices (embedding edits)",
    "arrow_config": "Arrow routing",
    "kasa_config": "KaSA",
    "velora_config": "VeLoRA",
    "monteclora_config": "MonteCLoRA",
    "fan_in_fan_out": "fan_in_fan_out (Conv1D-style) weights",
}
_SUPPORTED_STRING_INITS = {"gaussian", "eva", "orthogonal", "mica", "lora_ga"}
# Layers vLLM runs as one fused matrix. Where the checkpoint stores the parts (Llama, Qwen2,
# Mistral, Gemma), vLLM takes LoRA only under the parts' names and stacks them itself; where
# it stores the fused matrix (Phi-3), only under the fused name. Either way an adapter must
# use the names the base's own checkpoint uses.
PACKED_MODULES = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


@dataclass(frozen=True)
class AdapterInfo:
    rank: int
    alpha: float
    target_modules: list[str]  # short module names the tensors adapt, e.g. ["k_proj", "q_proj"]
    base_name: str  # the adapter's own base_model_name_or_path ("" if none)
    config: dict


def check_source_files(src: Path, adapter: str) -> None:
    """Presence rules, applied to what the operator handed us (before staging)."""
    if not src.is_dir():
        raise AdapterRejected(adapter, "source", "not a directory or a .tar.gz/.zip archive", str(src))
    pickled = [n for n in PICKLED_WEIGHTS if (src / n).exists()]
    if pickled:
        raise AdapterRejected(
            adapter, "weights-pickled",
            "pickled weights can run arbitrary code when loaded; save the adapter with "
            "safetensors (peft: save_pretrained(..., safe_serialization=True)) and remove the "
            "pickled file", pickled[0],
        )
    if not (src / CONFIG_FILE).is_file():
        raise AdapterRejected(adapter, "config-missing", f"no {CONFIG_FILE} in the adapter folder", str(src))
    if not (src / WEIGHTS_FILE).is_file():
        raise AdapterRejected(adapter, "weights-missing", f"no {WEIGHTS_FILE} in the adapter folder", str(src))


def validate_adapter(path: Path, base: BaseModel, adapter: str, *, max_rank: int) -> AdapterInfo:
    """Validate the staged copy (the exact bytes that will be stored) against the base model."""
    quant = base.quantization
    if quant is not None:
        try:
            quant.check_served()
        except QuantizationRefused as exc:
            raise AdapterRejected(adapter, "base-quantization", str(exc), quant.describe()) from None
    config = _load_config(path / CONFIG_FILE, adapter)
    rank, alpha, rank_pattern = _check_config(config, adapter, max_rank)
    try:
        tensors = read_header(path / WEIGHTS_FILE)
    except SafetensorsError as exc:
        raise AdapterRejected(adapter, "weights-invalid", str(exc), WEIGHTS_FILE) from None
    modules = _check_tensors(tensors, base, adapter, config, rank, rank_pattern)
    _check_targets(config.get("target_modules"), base, adapter)
    base_name = config.get("base_model_name_or_path") or ""
    return AdapterInfo(
        rank=max([rank, *rank_pattern.values()]),
        alpha=alpha,
        target_modules=sorted({m.rsplit(".", 1)[-1] for m in modules}),
        base_name=str(base_name),
        config=config,
    )


def _load_config(path: Path, adapter: str) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterRejected(adapter, "config-invalid", f"{CONFIG_FILE} is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise AdapterRejected(adapter, "config-invalid", f"{CONFIG_FILE} is not a JSON object")
    return config


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_rank(rank: object, adapter: str, max_rank: int, where: str) -> int:
    if not _is_int(rank) or rank < 1:
        raise AdapterRejected(adapter, "rank-invalid", f"{where} must be a positive integer", rank)
    if rank > max_rank:
        raise AdapterRejected(
            adapter, "rank-max", f"{where} {rank} is above the configured maximum {max_rank} "
            "(max_lora_rank)", rank,
        )
    if rank not in VLLM_RANKS:
        raise AdapterRejected(
            adapter, "rank-unsupported",
            f"{where} {rank} is not one vLLM serves ({', '.join(map(str, VLLM_RANKS))})", rank,
        )
    return rank


def _check_config(config: dict, adapter: str, max_rank: int) -> tuple[int, float, dict]:
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        raise AdapterRejected(adapter, "peft-type", "only LoRA adapters (peft_type LORA) are served", peft_type)
    if config.get("use_dora"):
        raise AdapterRejected(adapter, "dora", "DoRA adapters are not served by vLLM", "use_dora=true")
    mts = config.get("modules_to_save")
    if mts:
        raise AdapterRejected(
            adapter, "modules-to-save",
            "modules_to_save replaces whole base modules, which the engine cannot serve per "
            "request (lm_head and embed_tokens least of all); retrain without it", mts,
        )
    for key, what in _UNSUPPORTED_FEATURES.items():
        if config.get(key):
            raise AdapterRejected(adapter, "unsupported-feature", f"{what} is not served by vLLM", f"{key}={config[key]!r}")
    if config.get("bias", "none") not in (None, "none"):
        raise AdapterRejected(adapter, "unsupported-feature", "adapter bias is not served by vLLM", f"bias={config['bias']!r}")
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in _SUPPORTED_STRING_INITS:
        raise AdapterRejected(
            adapter, "unsupported-feature",
            "this init modifies the base weights when peft loads the adapter; convert it to a "
            "plain LoRA first", f"init_lora_weights={init!r}",
        )
    rank = _check_rank(config.get("r"), adapter, max_rank, "rank r")
    rank_pattern = config.get("rank_pattern") or {}
    if not isinstance(rank_pattern, dict):
        raise AdapterRejected(adapter, "config-invalid", "rank_pattern must be an object", rank_pattern)
    for key, r in rank_pattern.items():
        _check_pattern_key(key, adapter, "rank_pattern")
        _check_rank(r, adapter, max_rank, f"rank_pattern[{key!r}]")
    alpha = config.get("lora_alpha", 8)
    if not _is_positive(alpha):
        raise AdapterRejected(adapter, "config-invalid", "lora_alpha must be a positive number", alpha)
    alpha_pattern = config.get("alpha_pattern") or {}
    if not isinstance(alpha_pattern, dict):
        raise AdapterRejected(adapter, "config-invalid", "alpha_pattern must be an object", alpha_pattern)
    for key, a in alpha_pattern.items():
        _check_pattern_key(key, adapter, "alpha_pattern")
        if not _is_positive(a):
            raise AdapterRejected(
                adapter, "config-invalid", f"alpha_pattern[{key!r}] must be a positive number", a)
    return rank, float(alpha), rank_pattern


def _is_positive(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0


def _check_pattern_key(key: str, adapter: str, where: str) -> None:
    # peft and vLLM match these keys as regular expressions against module names.
    try:
        re.compile(key)
    except re.error as exc:
        raise AdapterRejected(
            adapter, "config-invalid", f"{where} key is not a valid regular expression ({exc})", key,
        ) from None


def _module_rank(module: str, rank: int, rank_pattern: dict) -> int:
    # peft's rule (and vLLM's): a key matches a suffix of the module name at a '.' boundary.
    for key, r in rank_pattern.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return r
    return rank


def _layer_filter(config: dict, adapter: str):
    layers = config.get("layers_to_transform")
    if layers is None:
        return None
    allowed = {layers} if _is_int(layers) else set(layers) if isinstance(layers, list) else None
    if allowed is None or not all(_is_int(i) for i in allowed):
        raise AdapterRejected(adapter, "config-invalid", "layers_to_transform must be an int or a list of ints", layers)
    pattern = config.get("layers_pattern") or ["layers", "h", "blocks", "layer"]
    pattern = [pattern] if isinstance(pattern, str) else list(pattern)
    alternatives = "|".join(map(re.escape, pattern))
    regex = re.compile(rf"(?:^|\.)(?:{alternatives})\.(\d+)(?:\.|$)")
    return allowed, regex


def _check_tensors(
    tensors: dict[str, TensorInfo], base: BaseModel, adapter: str, config: dict, rank: int,
    rank_pattern: dict,
) -> set[str]:
    if not tensors:
        raise AdapterRejected(adapter, "weights-empty", f"{WEIGHTS_FILE} holds no tensors")
    shapes = base.linear_shapes
    layer_filter = _layer_filter(config, adapter)
    parts: dict[str, dict[str, TensorInfo]] = {}
    for name, info in sorted(tensors.items()):
        if "lora_magnitude_vector" in name:
            raise AdapterRejected(adapter, "dora", "the weights hold DoRA magnitude vectors", name)
        if "lora_embedding_" in name:
            raise AdapterRejected(adapter, "target-unserved", "LoRA on embeddings is not served", name)
        match = _LORA_KEY.fullmatch(name[len(PREFIX):]) if name.startswith(PREFIX) else None
        if match is None and set(name.split(".")) & set(UNSERVED_MODULES):
            raise AdapterRejected(
                adapter, "target-unserved",
                "the adapter carries a full copy of lm_head or embed_tokens (peft saves one when "
                "either is a target, as on a tied-embeddings base); vLLM serves neither", name,
            )
        if match is None:
            raise AdapterRejected(
                adapter, "tensor-name",
                "tensor name is not a peft LoRA weight (base_model.model.<module>.lora_A/B.weight)",
                name,
            )
        module = match["module"]
        if module.rsplit(".", 1)[-1] in UNSERVED_MODULES:
            raise AdapterRejected(adapter, "target-unserved", "LoRA on lm_head or embed_tokens is not served", name)
        if module not in shapes:
            _refuse_missing_module(module, name, base, adapter)
        if info.dtype not in FLOAT_DTYPES:
            raise AdapterRejected(adapter, "tensor-dtype", f"tensor {name} is {info.dtype}, expected F16, BF16 or F32", info.dtype)
        if layer_filter is not None:
            allowed, regex = layer_filter
            found = regex.search(module)
            if found is None or int(found.group(1)) not in allowed:
                raise AdapterRejected(adapter, "layers", f"tensor {name} is outside layers_to_transform {sorted(allowed)}", name)
        parts.setdefault(module, {})[match["part"]] = info
    for module, pair in parts.items():
        missing = {"lora_A", "lora_B"} - set(pair)
        if missing:
            raise AdapterRejected(adapter, "tensor-pair", f"module {module} lacks its {missing.pop()} weight", module)
        out_f, in_f = shapes[module]
        r = _module_rank(module, rank, rank_pattern)
        a, b = pair["lora_A"], pair["lora_B"]
        for info, want in ((a, (r, in_f)), (b, (out_f, r))):
            if info.shape != want:
                kind = "rank-mismatch" if _rank_only(info.shape, want, info is a) else "shape"
                raise AdapterRejected(
                    adapter, kind,
                    f"tensor {info.name} has shape {list(info.shape)}, expected {list(want)} "
                    f"(base {module} is {out_f}x{in_f}, rank {r})", list(info.shape),
                )
    return set(parts)


def _rank_only(shape: tuple[int, ...], want: tuple[int, int], is_a: bool) -> bool:
    """True when only the rank dimension differs: the config's r disagrees with the tensors."""
    if len(shape) != 2:
        return False
    return (shape[1] == want[1]) if is_a else (shape[0] == want[0])


def _check_targets(targets: object, base: BaseModel, adapter: str) -> None:
    modules = list(base.linear_shapes)
    if isinstance(targets, str):
        if not any(re.fullmatch(targets, m) for m in modules):
            raise AdapterRejected(adapter, "target-missing", "target_modules matches no module of the base model", targets)
        return
    if not isinstance(targets, list) or not targets:
        raise AdapterRejected(adapter, "config-invalid", "target_modules must be a non-empty list or a regex", targets)
    for t in targets:
        if not isinstance(t, str):
            raise AdapterRejected(adapter, "config-invalid", "target_modules entries must be strings", t)
        if t.rsplit(".", 1)[-1] in UNSERVED_MODULES:
            raise AdapterRejected(adapter, "target-unserved", "LoRA on lm_head or embed_tokens is not served", t)
        if not any(m == t or m.endswith("." + t) for m in modules):
            packed = _packed_mismatch(t, modules)
            if packed:
                raise AdapterRejected(adapter, "packed-module", packed, t)
            raise AdapterRejected(adapter, "target-missing", "the base model has no module matching this target", t)


def _refuse_missing_module(module: str, tensor: str, base: BaseModel, adapter: str) -> None:
    if module in base.opaque_modules:
        quant = base.quantization
        raise AdapterRejected(
            adapter, "base-quantization-layout",
            f"the base's {quant.describe() if quant else 'quantized'} layer {module} is packed in a "
            "layout the registry cannot read its unquantized shape from, so the adapter cannot be "
            "checked against it", tensor,
        )
    packed = _packed_mismatch(module, list(base.linear_shapes))
    if packed:
        raise AdapterRejected(adapter, "packed-module", packed, tensor)
    raise AdapterRejected(adapter, "tensor-module", f"the base model has no linear module {module}", tensor)


def _packed_mismatch(module: str, base_modules: list[str]) -> str:
    """Why `module` is named for the other packing of the same layer, or '' if it is not."""
    parent, _, leaf = module.rpartition(".")
    prefix = parent + "." if parent else ""

    def present(short: str) -> bool:
        return any(m == prefix + short or (not parent and m.endswith("." + short)) for m in base_modules)

    if leaf in PACKED_MODULES and all(present(p) for p in PACKED_MODULES[leaf]):
        parts = ", ".join(PACKED_MODULES[leaf])
        return (
            f"the base stores {parts} as separate weights and vLLM takes LoRA for them only "
            f"under those names, but this adapter targets the fused {leaf}; retrain with "
            f"target_modules {parts}, or split {leaf}'s lora_B by rows into one per part "
            "(lora_A is shared)"
        )
    for fused, parts in PACKED_MODULES.items():
        if leaf in parts and present(fused) and not present(leaf):
            return (
                f"the base stores {fused} as one fused weight (as Phi-3 does) and vLLM takes "
                f"LoRA for it only under that name, but this adapter targets {leaf}, one part "
                f"of it; retrain with target_modules {fused} (peft names it so for this base)"
            )
    return ""
