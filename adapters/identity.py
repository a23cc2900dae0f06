"""Which base model an adapter was trained on, and whether that is the one we serve.

The rule (shapes are always checked elsewhere; this is about *which* weights):
1. `lineage["base_fingerprint"]` given (our training module records it): it must equal
   the served base's fingerprint.
2. Else the adapter's `base_model_name_or_path`, if it is a local model directory: the
   same directory ("path"), or one whose weights fingerprint the same ("fingerprint"),
   is accepted; a *different* existing model is refused: its shapes fit, but the
   outputs would silently be wrong.
3. Else (a hub name, a path from another machine, nothing): accepted on shapes alone,
   recorded as "shapes" (or "name" when it names this base's directory). A peft folder
   trained elsewhere on the same base can only be judged by its shapes, and that is what
   an operator importing one expects; `base_match` tells them how much was proven.
`force` turns the refusals of 1 and 2 into "forced"; it never bypasses a shape, rank or
format check.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from adapters.basemodel import BaseModel, load_base
from adapters.errors import AdapterRejected, RegistryError

__all__ = ["check_base_identity"]


def check_base_identity(
    declared: str, base: BaseModel, fingerprint: Callable[[], str], adapter: str,
    claimed: str | None, force: bool,
) -> str:
    """Return how the base was matched: fingerprint | path | name | shapes | forced."""
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
            other = load_base(local).fingerprint()
        except RegistryError:
            other = None
        if other is not None:
            if other == fingerprint():
                return "fingerprint"
            if force:
                return "forced"
            raise AdapterRejected(
                adapter, "base-mismatch",
                f"it was trained on {declared}, a different base model than the registry's "
                f"{base.path} (weights fingerprints differ); the shapes fit but the outputs "
                "would be wrong. force_base/--force-base overrides", declared,
            )
    return "name" if declared in base.aliases else "shapes"
