"""What the registry knows about the base model: its linear layers' shapes and its fingerprint.

Shapes come from config.json and the safetensors headers (no torch, no weights
loaded). The fingerprint identifies the base *weights*: a sha256 over the
architecture config and every tensor's name, dtype, shape and bytes, so it is
stable across re-sharding or header metadata changes but differs for a
fine-tuned copy with the same shapes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import BinaryIO

from adapters.errors import RegistryError
from adapters.quantized import Quantization, quantization_of, unquantized_shapes
from adapters.safetensors_header import SafetensorsError, TensorInfo, read_header

__all__ = ["BaseModel", "load_base"]

# Config keys that say nothing about the weights (who saved it, with what, from where).
_VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version", "use_cache"}
_CHUNK = 1 << 20
# Fingerprints computed in this process, by stat signature: hashing a large base is slow.
_FINGERPRINTS: dict[str, str] = {}


@dataclass
class BaseModel:
    path: Path
    config: dict
    tensors: dict[str, TensorInfo]
    files: list[Path]
    origins: dict[str, Path] = field(default_factory=dict, repr=False)  # tensor -> its file
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def quantization(self) -> Quantization | None:
        return quantization_of(self.config)

    @property
    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """Module path -> (out_features, in_features) as the layer is before any quantization."""
        return self._shapes[0]

    @property
    def opaque_modules(self) -> set[str]:
        """Quantized layers whose unquantized shape the registry cannot read from the packing."""
        return self._shapes[1]

    @cached_property
    def _shapes(self) -> tuple[dict[str, tuple[int, int]], set[str]]:
        shapes = {
            name[: -len(".weight")]: (t.shape[0], t.shape[1])
            for name, t in self.tensors.items()
            if name.endswith(".weight") and len(t.shape) == 2
        }
        quant = self.quantization
        if quant is None:
            return shapes, set()
        unpacked, opaque = unquantized_shapes(quant, self.tensors, self._read_tensor)
        for module in opaque:
            shapes.pop(module, None)  # e.g. bitsandbytes' uint8 `.weight`: not the layer's shape
        shapes.update(unpacked)
        return shapes, opaque

    def _read_tensor(self, name: str) -> bytes:
        info = self.tensors[name]
        with open(self.origins[name], "rb") as fh:
            fh.seek(info.start)
            return fh.read(info.end - info.start)

    @property
    def aliases(self) -> set[str]:
        """Names under which an adapter's `base_model_name_or_path` counts as this base."""
        names = {str(self.path), str(self.path.resolve()), self.path.name}
        declared = self.config.get("_name_or_path")
        if isinstance(declared, str) and declared:
            names.add(declared)
        return names

    def signature(self) -> str:
        """Cheap identity of the files on disk (names, sizes, mtimes): the fingerprint cache key."""
        h = hashlib.sha256()
        for p in [self.path / "config.json", *self.files]:
            st = p.stat()
            h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}\n".encode())
        return h.hexdigest()

    def fingerprint(self, cache: dict[str, str] | None = None) -> str:
        if self._fingerprint is None:
            sig = self.signature()
            known = (cache or {}).get(sig) or _FINGERPRINTS.get(sig)
            self._fingerprint = known or _compute_fingerprint(self)
            _FINGERPRINTS[sig] = self._fingerprint
        return self._fingerprint


def load_base(path: Path) -> BaseModel:
    """Describe the base model directory; RegistryError if it cannot be described."""
    path = Path(path)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise RegistryError(f"base model {path} has no config.json (is it a model directory?)")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RegistryError(f"base model {path}: config.json is unreadable ({exc})") from None
    files = _weight_files(path)
    tensors: dict[str, TensorInfo] = {}
    origins: dict[str, Path] = {}
    for f in files:
        try:
            for name, info in read_header(f).items():
                tensors[name] = info
                origins[name] = f
        except (OSError, SafetensorsError) as exc:
            raise RegistryError(f"base model {path}: {exc}") from None
    return BaseModel(path, config, tensors, files, origins)


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise RegistryError(f"base model {path}: bad {index.name} ({exc})") from None
        files = sorted({path / str(f) for f in weight_map.values()})
    elif (path / "model.safetensors").is_file():
        files = [path / "model.safetensors"]
    else:
        files = sorted(path.glob("*.safetensors"))
    if not files:
        raise RegistryError(
            f"base model {path} has no safetensors weights; the registry reads their headers "
            "to validate adapters (convert pickled .bin weights with transformers first)"
        )
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise RegistryError(f"base model {path}: weight files missing: {', '.join(missing)}")
    return files


def _compute_fingerprint(base: BaseModel) -> str:
    h = hashlib.sha256()
    config = {k: v for k, v in base.config.items() if k not in _VOLATILE_CONFIG_KEYS}
    h.update(json.dumps(config, sort_keys=True).encode())
    entries = sorted(
        ((name, f, info) for f in base.files for name, info in read_header(f).items()),
        key=lambda e: e[0],
    )
    handles: dict[Path, BinaryIO] = {}
    try:
        for name, f, t in entries:
            fh = handles.get(f) or handles.setdefault(f, open(f, "rb"))
            h.update(f"\n{name}|{t.dtype}|{list(t.shape)}\n".encode())
            fh.seek(t.start)
            left = t.end - t.start
            while left:
                chunk = fh.read(min(_CHUNK, left))
                if not chunk:
                    raise RegistryError(f"base model {base.path}: {f.name} is truncated")
                h.update(chunk)
                left -= len(chunk)
    finally:
        for fh in handles.values():
            fh.close()
    return "sha256:" + h.hexdigest()
