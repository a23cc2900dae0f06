"""What a quantized base looks like before quantization, and which quantizations vLLM loads.

A quantized checkpoint keeps its linear layers packed (GPTQ and AWQ: int32 `qweight`,
eight 4-bit values per word; compressed-tensors: `weight_packed` beside a `weight_shape`
tensor). A LoRA adapter is made for the unquantized layer, so the registry checks its
tensors against shapes read back from the packing, never against the packed tensors.

Quantizations the pinned vLLM does not load at all, or loads only in some variants, are
refused per adapter with rule `base-quantization`: an adapter registered against such a
base could never be served, and the operator should hear it at `adapters add`, not at the
first request. The lists below mirror vLLM 0.32's own checks (its quantization registry,
AutoGPTQConfig's (bits, sym) table, AutoAWQConfig's bits table); a test compares the
method list with the installed vLLM so that an upgrade cannot leave it stale.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from adapters.safetensors_header import TensorInfo

__all__ = [
    "VLLM_QUANTIZATION_METHODS",
    "Quantization",
    "QuantizationRefused",
    "quantization_of",
    "unquantized_shapes",
]

# vLLM 0.32's QUANTIZATION_METHODS (vllm.model_executor.layers.quantization). Not there:
# bitsandbytes (no loader in this release), hqq, eetq, gguf-in-safetensors.
VLLM_QUANTIZATION_METHODS = (
    "awq", "auto_awq", "fp8", "fbgemm_fp8", "fp_quant", "modelopt", "modelopt_fp4",
    "modelopt_mxfp8", "modelopt_mixed", "auto_gptq", "gptq", "gptq_marlin", "awq_marlin",
    "humming", "compressed-tensors", "experts_int8", "quark", "moe_wna16", "torchao", "inc",
    "mxfp4", "gpt_oss_mxfp4", "deepseek_v4_fp8", "online", "fp8_per_tensor", "fp8_per_block",
    "fp8_per_channel", "int8_per_channel_weight_only", "nvfp4_per_token", "mxfp8",
)
_GPTQ = {"gptq", "auto_gptq", "gptq_marlin"}
_AWQ = {"awq", "auto_awq", "awq_marlin"}
_GPTQ_SERVED = {(4, True), (8, True)}  # (bits, sym)
_AWQ_SERVED_BITS = {4}
# Suffixes that mark a linear layer as quantized (its `.weight` is gone or is not its shape).
_QUANT_SUFFIXES = (
    ".qweight", ".weight_packed", ".qzeros", ".scales", ".weight_scale", ".weight.absmax",
    ".weight.quant_state", ".SCB",
)
_INT_DTYPES = {"I64": "<q", "I32": "<i", "I16": "<h", "U8": "<B", "I8": "<b"}


class QuantizationRefused(ValueError):
    """The base's quantization is one vLLM cannot serve; the message says which and why."""


@dataclass(frozen=True)
class Quantization:
    method: str
    bits: int | None
    config: dict

    def describe(self) -> str:
        return f"{self.method}" + (f" {self.bits}-bit" if self.bits else "")

    def check_served(self) -> None:
        """Raise QuantizationRefused for a quantization the pinned vLLM cannot load."""
        if self.method == "bitsandbytes":
            raise QuantizationRefused(
                "vLLM 0.32 has no bitsandbytes loader, so a base saved 4- or 8-bit by "
                "bitsandbytes cannot be served; serve the unquantized base (QLoRA adapters are "
                "meant for it) or a GPTQ/AWQ export of it")
        if self.method not in VLLM_QUANTIZATION_METHODS:
            raise QuantizationRefused(
                f"vLLM 0.32 does not load {self.method!r} checkpoints; it loads "
                f"{', '.join(sorted(VLLM_QUANTIZATION_METHODS))}")
        if self.method in _GPTQ:
            sym = self.config.get("sym", True)
            if (self.bits, sym) not in _GPTQ_SERVED:
                raise QuantizationRefused(
                    f"vLLM serves GPTQ only 4- or 8-bit symmetric; this base is {self.bits}-bit "
                    f"with sym={sym}")
        if self.method in _AWQ:
            if self.bits not in _AWQ_SERVED_BITS:
                raise QuantizationRefused(f"vLLM serves AWQ only 4-bit; this base is {self.bits}-bit")
            version = str(self.config.get("version") or "gemm").lower()
            if version != "gemm":
                raise QuantizationRefused(
                    f"this AWQ base is packed for the {version!r} kernel; vLLM reads only the "
                    "'gemm' packing (qweight [in, out/8]) and would mis-shape every layer")


def quantization_of(config: dict) -> Quantization | None:
    """The base's quantization, from config.json's `quantization_config` (None if unquantized)."""
    qc = config.get("quantization_config")
    if not isinstance(qc, dict):
        return None
    method = str(qc.get("quant_method") or "").lower()
    if qc.get("load_in_4bit") or qc.get("load_in_8bit"):
        method = method or "bitsandbytes"
    bits = qc.get("bits", qc.get("w_bit"))
    if method == "bitsandbytes":
        bits = 4 if qc.get("load_in_4bit") else 8 if qc.get("load_in_8bit") else bits
    return Quantization(method=method or "unknown", bits=bits if isinstance(bits, int) else None, config=qc)


def unquantized_shapes(
    quant: Quantization, tensors: dict[str, TensorInfo], read: Callable[[str], bytes],
) -> tuple[dict[str, tuple[int, int]], set[str]]:
    """(module -> (out_features, in_features) read back from the packing, modules we cannot read).

    `read(name)` returns a tensor's raw bytes; only small shape tensors are read.
    """
    shapes: dict[str, tuple[int, int]] = {}
    quantized = {
        name[: -len(suffix)] for name in tensors for suffix in _QUANT_SUFFIXES if name.endswith(suffix)
    }
    pack = 32 // quant.bits if quant.bits and 32 % quant.bits == 0 else None
    for module in sorted(quantized):
        qweight = tensors.get(module + ".qweight")
        if qweight is not None and len(qweight.shape) == 2 and pack:
            rows, cols = qweight.shape
            if quant.method in _GPTQ:  # [in / pack, out]
                shapes[module] = (cols, rows * pack)
            elif quant.method in _AWQ:  # [in, out / pack]
                shapes[module] = (cols * pack, rows)
            continue
        shape = tensors.get(module + ".weight_shape")
        if shape is not None and tensors.get(module + ".weight_packed") is not None:
            values = _int_values(shape, read(shape.name))
            if values is not None and len(values) == 2:
                shapes[module] = (values[0], values[1])
            continue
        weight = tensors.get(module + ".weight")
        if weight is not None and len(weight.shape) == 2 and weight.dtype not in {"U8", "I32"}:
            shapes[module] = (weight.shape[0], weight.shape[1])  # fp8 / int8: stored unpacked
    return shapes, quantized - set(shapes)


def _int_values(info: TensorInfo, raw: bytes) -> list[int] | None:
    fmt = _INT_DTYPES.get(info.dtype)
    if fmt is None or len(info.shape) != 1:
        return None
    size = struct.calcsize(fmt)
    if len(raw) != size * info.shape[0]:
        return None
    return [struct.unpack_from(fmt, raw, i * size)[0] for i in range(info.shape[0])]

