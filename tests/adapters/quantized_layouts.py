"""Quantized copies of a test base, in the tensor layouts real exporters write.

The registry reads only safetensors headers (names, dtypes, shapes) and, for
compressed-tensors, the small `weight_shape` tensor, so the packed values here are zeros:
what is under test is that the unquantized shapes are read back from each layout.
Layouts, per linear layer of `out` x `in` features, `b` bits, group `g`:
- GPTQ (AutoGPTQ, GPTQModel): qweight int32 [in*b/32, out], qzeros int32 [in/g, out*b/32],
  scales f16 [in/g, out], g_idx int32 [in];
- AWQ (AutoAWQ, 'gemm'): qweight int32 [in, out*b/32], qzeros int32 [in/g, out*b/32],
  scales f16 [in/g, out]; the 'gemv' packing stores qweight [out, in*b/32] instead;
- compressed-tensors pack-quantized: weight_packed int32 [out, in*b/32], weight_scale f16
  [out, in/g], weight_shape int64 [2] = (out, in);
- bitsandbytes 4-bit: weight uint8 [out*in/2, 1], weight.absmax f32, weight.quant_map f32.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

__all__ = ["quantized_copy"]


def _layers(tensors: dict) -> list[str]:
    return [n[: -len(".weight")] for n, t in tensors.items()
            if n.endswith("_proj.weight") and t.dim() == 2]


def quantized_copy(base: Path, out: Path, method: str, *, bits: int = 4, group: int = 32,
                   sym: bool = True, version: str = "gemm", weight_shape: bool = True) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True)
    for f in base.iterdir():
        if f.suffix != ".safetensors" and f.is_file():
            shutil.copy(f, out / f.name)
    tensors = load_file(base / "model.safetensors")
    pack = 32 // bits if 32 % bits == 0 else 1
    z32 = lambda *s: torch.zeros(*s, dtype=torch.int32)  # noqa: E731
    f16 = lambda *s: torch.zeros(*s, dtype=torch.float16)  # noqa: E731
    for module in _layers(tensors):
        o, i = tensors.pop(module + ".weight").shape
        if method == "gptq":
            packed = {"qweight": z32(i // pack, o), "qzeros": z32(i // group, o // pack),
                      "scales": f16(i // group, o), "g_idx": torch.arange(i, dtype=torch.int32) // group}
        elif method == "awq":
            qweight = z32(i, o // pack) if version == "gemm" else z32(o, i // pack)
            packed = {"qweight": qweight, "qzeros": z32(i // group, o // pack), "scales": f16(i // group, o)}
        elif method == "compressed-tensors":
            packed = {"weight_packed": z32(o, i // pack), "weight_scale": f16(o, i // group)}
            if weight_shape:
                packed["weight_shape"] = torch.tensor([o, i], dtype=torch.int64)
        elif method == "bitsandbytes":
            packed = {"weight": torch.zeros(o * i // 2, 1, dtype=torch.uint8),
                      "weight.absmax": torch.zeros(o * i // 64), "weight.quant_map": torch.zeros(16)}
        else:
            packed = {"qweight": z32(i // pack, o), "scales": f16(i // group, o)}
        tensors.update({f"{module}.{k}": v for k, v in packed.items()})
    save_file(tensors, out / "model.safetensors")
    config = json.loads((base / "config.json").read_text())
    config["quantization_config"] = (
        {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
        if method == "bitsandbytes" else
        {"quant_method": method, "bits": bits, "group_size": group, "sym": sym, "version": version}
    )
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out
