"""loraswap: one base model, many LoRA adapters hot-swapped per request.

This package is the composition root: the version, the one settings declaration, the
wiring that builds the parts from it, and the `loraswap` command line. The parts
(`common`, `adapters`, `training`, `server`, `router`) never import it, so dependencies
keep pointing one way (tests/test_layering.py checks).
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
