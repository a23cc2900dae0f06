"""What the server needs to know, as plain values the composition root (`loraswap/`) fills in.

Why a separate object from `loraswap.settings.Settings`: `server/` must not import the
composition root, and the engine's own knobs live in `server.engine.EngineConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["ServerConfig"]


@dataclass(frozen=True)
class ServerConfig:
    """No defaults here: loraswap/wiring.py fills every field from the one settings
    declaration (loraswap/settings.py), where each default and its help live."""

    db_path: Path
    store_dir: Path
    base_model_dir: Path
    model_id: str  # the base model's id on the OpenAI API
    host: str
    port: int
    max_model_len: int
    max_n: int
    log_level: str
    eager_load: bool
    shutdown_timeout: float
    max_upload_mib: int
    # How often the in-memory catalog, experiment table and API keys are re-read from SQLite
    # (changes made by another process, e.g. the CLI, show up within this many seconds).
    reconcile_interval: float
    # Seconds a request waits for an adapter slot when every resident adapter is busy or
    # pinned, before it gets a 503.
    adapter_wait_timeout: float
    # After the engine process dies: seconds of 503s, then exit status 75 (see server/app.py).
    engine_dead_exit_delay: float
    # vLLM's tool-call parser for tool_choice="auto"; "" refuses auto (server/engine_tools.py).
    tool_call_parser: str
    # Seconds a request waits for its merged_adapters mixture to be merged (then a 503).
    mixture_timeout: float
    settings_summary: str  # printed at start-up
