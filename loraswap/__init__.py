"""loraswap: one base model, many LoRA adapters hot-swapped per request.

This package is the composition root: the version, the one settings object and
the `loraswap` command line. The four parts (`adapters`, `training`, `server`,
`router`) never import it except `loraswap.settings`, which imports nothing of
ours, so dependencies keep pointing one way.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
