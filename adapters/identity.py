"""Which base model an adapter was trained on, and whether that is the one we serve.

The rule (shapes are always checked elsewhere; this is about *which* weights):
1. `lineage["base_fingerprint"]` given (our training module records it): it must equal
   the served base's fingerprint.
2. Else the adapter's `base_model_name_or_path`, if it is a local model directory: the
   same directory ("path"), or one whose weights fingerprint the same ("fingerprint"),
   is accepted, and so is the full-precision model a quantized base was exported from
   ("quantized", same architecture config); a *different* existing model is refused: its
   shapes fit, but the outputs would silently be wrong.
3. Else (a hub name, a path from another machine, nothing): accepted on shapes alone,
   recorded as "name" when it names this base (its directory, or the `_name_or_path` its
   config.json declares), "hub" when it is a hub id such as `Qwen/Qwen2-0.5B` that names
   something else, and "shapes" otherwise. A peft folder
   trained elsewhere on the same base can only be judged by its shapes, and that is what
   an operator importing one expects; `base_match` tells them how much was proven.
`force` turns the refusals of 1 and 2 into "forced"; it never bypasses a shape, rank or
format check.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from adapters.basemodel import BaseModel, load_base
from adapters.errors import AdapterRejected, RegistryError

__all__ = ["BASE_MATCH_MEANINGS", "check_base_identity", "is_hub_id"]

# What each recorded `base_match` proves, for `show`.
BASE_MATCH_MEANINGS = {
    "fingerprint": "the weights it was trained on fingerprint the same as this base's",
    "path": "it names this base's directory",
    "name": "it names this base; shapes fit",
    "hub": "it names a hub model that is not on this machine; accepted because every tensor "
           "fits this base's shapes, nothing more is proven",
    "shapes": "it names no base we can find; accepted because every tensor fits this base's shapes",
    "quantized": "it names the unquantized model this quantized base was exported from (same "
                 "architecture config); accepted because every tensor fits the unquantized shapes",
    "forced": "it was trained on another base; accepted with --force-base",
}
# Config keys a quantized export adds or rewrites without changing the architecture.
_EXPORT_KEYS = {"quantization_config", "torch_dtype", "dtype", "_name_or_path", "transformers_version",
                "use_cache"}
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def _quantized_export_of(base: BaseModel, other: BaseModel) -> bool:
    """The served base is quantized, the named one is not, and their architectures are equal.

    Adapters are trained on the full-precision model and served on its GPTQ/AWQ export; the
    weights differ by construction, so fingerprints cannot match, but a *different* model
    would have to share every architecture setting to pass this test.
    """
    if base.quantization is None or other.quantization is not None:
        return False

    def arch(config: dict) -> dict:
        return {k: v for k, v in config.items() if k not in _EXPORT_KEYS}

    return arch(base.config) == arch(other.config)


def is_hub_id(name: str) -> bool:
    """`owner/model` as the hub spells it, and not a directory on this machine."""
    return bool(_HUB_ID.fullmatch(name)) and not Path(name).exists()


def check_base_identity(
    declared: str, base: BaseModel, fingerprint: Callable[[], str], adapter: str,
    claimed: str | None, force: bool,
) -> str:
    """Return how the base was matched: fingerprint | path | quantized | name | hub | shapes | forced."""
    if claimed:
        ours = fingerprint()
        if claimed == ours:
            return "fingerprint"
        if force:
            return "forced"
        raise AdapterRejected(
            adapter, "base-fingerprint",
            f"it was trained on base {claimed}, but the registry serves {base.path} ({ours}); "
            "force_base/--force-base overrides if you know better", claimed,
        )
    if not declared:
        return "shapes"
    local = Path(declared).expanduser()
    if (local / "config.json").is_file():
        if local.resolve() == base.path.resolve():
            return "path"
        try:
            other_base = load_base(local)
            other = other_base.fingerprint()
        except RegistryError:
            other_base = other = None
        if other is not None:
            if other == fingerprint():
                return "fingerprint"
            if _quantized_export_of(base, other_base):
                return "quantized"
            if force:
                return "forced"
            raise AdapterRejected(
                adapter, "base-mismatch",
                f"it was trained on {declared}, a different base model than the registry's "
                f"{base.path} (weights fingerprints differ); the shapes fit but the outputs "
                "would be wrong. force_base/--force-base overrides", declared,
            )
    if declared in base.aliases:
        return "name"
    return "hub" if is_hub_id(declared) else "shapes"
