"""An adapter merged into its base and saved as a standalone Hugging Face model directory.

For single-task deployment: no LoRA at inference, and a model any tool loads (transformers,
vLLM's own server, `loraswap serve --base-model DIR`), or quantises further. peft's
`merge_and_unload` folds `scaling * B @ A` into each target weight; the tokenizer, chat
template and generation config are copied so the directory serves the same chat as the base.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

__all__ = ["DTYPES", "ExportRefused", "export_merged"]

DTYPES = ("float32", "bfloat16", "float16")
_COPIED = ("chat_template.jinja", "generation_config.json")


class ExportRefused(ValueError):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"export refused [{rule}]: {message}")
        self.rule, self.message = rule, message


def export_merged(base_dir: Path, version, out: Path, *, dtype: str = "float32",
                  force: bool = False) -> dict[str, Any]:
    """Write base + `version` (a registry AdapterVersion) merged to `out`; the export record."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ExportRefused("dtype", f"dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise ExportRefused("out-exists", f"{out} exists and is not empty (--force replaces it)")
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(version.path)).merge_and_unload()
    merged = merged.to(getattr(torch, dtype))
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(str(tmp), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(str(tmp))
    for name in _COPIED:
        if (Path(base_dir) / name).exists() and not (tmp / name).exists():
            shutil.copy2(Path(base_dir) / name, tmp / name)
    record = {"adapter": version.ref, "adapter_files": dict(version.files),
              "base": str(base_dir), "base_fingerprint": version.base_fingerprint,
              "dtype": dtype, "method": "peft merge_and_unload"}
    (tmp / "loraswap_export.json").write_text(json.dumps(record, indent=1, sort_keys=True))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return {**record, "out": str(out)}
