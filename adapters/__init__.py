"""The adapter registry: versioned, validated, checksummed LoRA adapters.

Imports nothing of ours (and not torch): the server and the training module depend
on it, never the other way round.
"""

from __future__ import annotations

from adapters.archive import ArchiveLimits
from adapters.errors import (
    AdapterInUse,
    AdapterNotFound,
    AdapterRejected,
    AdapterTampered,
    RegistryError,
)
from adapters.identity import BASE_MATCH_MEANINGS
from adapters.quantized import VLLM_QUANTIZATION_METHODS
from adapters.records import AdapterVersion, VerifyProblem
from adapters.refs import format_ref, parse_ref, validate_name
from adapters.registry import Registry
from adapters.validation import VLLM_RANKS

__all__ = [
    "BASE_MATCH_MEANINGS",
    "VLLM_QUANTIZATION_METHODS",
    "VLLM_RANKS",
    "AdapterInUse",
    "AdapterNotFound",
    "AdapterRejected",
    "AdapterTampered",
    "AdapterVersion",
    "ArchiveLimits",
    "Registry",
    "RegistryError",
    "VerifyProblem",
    "format_ref",
    "parse_ref",
    "validate_name",
]
