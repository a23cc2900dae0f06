"""Starting and stopping the systems under test, each a child process on a free port.

(a) vLLM's own OpenAI server with `--enable-lora --lora-modules`, (b) the naive
transformers+peft server (benchmarks/naive_server.py), (c)+(d) one loraswap server: (c) names
adapters directly, (d) goes through one experiment alias per adapter (variants `NAME@1=100`,
`base=0`), so (c) and (d) send exactly the same work and differ only by routing + request log.

Fairness: the same base, adapters, dtype (float32), max_model_len, max_num_seqs, max_loras,
max_lora_rank and KV cache size. loraswap's CPU base guard registers an all-zero adapter in the
engine's CPU cache at start (it takes a GPU/CPU *slot* only while base requests run, and this
workload sends none): loraswap gets max_cpu_loras + 1 so both keep the same number of user
adapters resident.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from loraswap.launcher import ServeProcess, free_port, serve_command, start_process
from loraswap.settings import Settings
from loraswap.wiring import open_registry, open_router

__all__ = ["BASE_ID", "LIMITS", "Server", "create_experiments", "engine_limits",
           "loraswap_server", "loraswap_settings", "naive_server", "register_adapters",
           "stop_all", "vllm_server"]

BASE_ID = "loraswap-base"
ROOT = Path(__file__).resolve().parent.parent
# The settings both engines must share for a fair comparison (vLLM has a flag for each).
LIMITS = ("max_loras", "max_lora_rank", "max_cpu_loras", "max_model_len", "max_num_seqs",
          "kv_cache_gib")
_LIVE: list[Server] = []  # started and not yet stopped: stop_all() on exit or a signal


def engine_limits(settings: Settings) -> dict[str, object]:
    return {name: getattr(settings, name) for name in LIMITS}


def _kv_cache_env(settings: Settings) -> dict[str, str]:
    # Both engines get it explicitly, so a value inherited from our environment cannot
    # give one of them a different cache (vLLM's CPU backend takes whole GiB).
    return {"VLLM_CPU_KVCACHE_SPACE": str(max(1, round(settings.kv_cache_gib)))}


@dataclass(eq=False)
class Server:
    """A system under test: its command and port are fixed before it starts (the load
    generator's targets need the URL), started and stopped by loraswap.launcher."""

    name: str
    cmd: list[str]
    port: int
    ready_path: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    running: ServeProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def proc(self):  # for py-spy
        return self.running.proc if self.running else None

    @property
    def start_seconds(self) -> float | None:
        return self.running.start_seconds if self.running else None

    def start(self, timeout: float = 300.0) -> None:
        # Own process group: vLLM's engine core is a grandchild, and a Ctrl-C meant for
        # the harness must reach the harness (which stops every server) first.
        self.running = start_process(self.cmd, port=self.port, log=self.log_path,
                                     ready_path=self.ready_path, env=self.env, cwd=ROOT,
                                     timeout=timeout, name=self.name, own_group=True)
        _LIVE.append(self)

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop(timeout=30)
            self.running = None
        if self in _LIVE:
            _LIVE.remove(self)


def stop_all() -> None:
    """Stop every server this process started (each runs in its own process group)."""
    for server in list(_LIVE):
        server.stop()


def vllm_server(base: Path, adapters: dict[str, Path], limits: Settings,
                log_dir: Path) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(base),
           "--served-model-name", BASE_ID, "--enable-lora", "--dtype", "float32",
           "--disable-log-stats", "--host", "127.0.0.1", "--port", str(port)]
    for name, value in engine_limits(limits).items():
        if name != "kv_cache_gib":  # vLLM's CPU backend takes it from the environment
            cmd += ["--" + name.replace("_", "-"), str(value)]
    if adapters:
        cmd += ["--lora-modules", *(f"{n}={p}" for n, p in adapters.items())]
    env = {**_kv_cache_env(limits),
           # for the hot-swap scenario: POST /v1/load_lora_adapter
           "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    return Server("vllm", cmd, port, "/health", log_dir / "vllm.log", env)


def loraswap_settings(limits: Settings, home: Path) -> Settings:
    """loraswap's settings for the run: the shared limits, plus one cached adapter for the
    CPU guard's zero adapter, so both engines keep the same number of user adapters."""
    return limits.replace(home=home, base_model_name=BASE_ID,
                          max_cpu_loras=limits.max_cpu_loras + 1)


def loraswap_server(settings: Settings, log_dir: Path) -> Server:
    port = free_port()
    return Server("loraswap", serve_command(port), port, "/ready", log_dir / "loraswap.log",
                  {**settings.to_env(), **_kv_cache_env(settings)})


def loraswap_ray_server(settings: Settings, log_dir: Path, replicas: int) -> Server:
    """The same server on Ray Serve with `replicas` engine replicas (docs/scaling.md). Each
    replica's engine gets the same limits as the single-process one; on CPU they split the
    machine's cores (each binds its own)."""
    port = free_port()
    scaled = settings.replace(replicas=replicas)
    return Server("loraswap-ray", serve_command(port), port, "/ready",
                  log_dir / "loraswap-ray.log", {**scaled.to_env(), **_kv_cache_env(scaled)})


def naive_server(base: Path, adapters: dict[str, Path], log_dir: Path) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "benchmarks.naive_server", "--base", str(base),
           "--port", str(port), *(f"--adapter={n}={p}" for n, p in adapters.items())]
    return Server("naive", cmd, port, "/health", log_dir / "naive.log")


def register_adapters(settings: Settings, adapters: dict[str, Path]) -> list[str]:
    """Register into a fresh data directory (the registry's Python API, as the CLI does)."""
    with open_registry(settings) as reg:
        return [reg.add(path, name, description="benchmark", tags=["bench"]).ref
                for name, path in adapters.items()]


def create_experiments(settings: Settings, names: list[str]) -> dict[str, str]:
    """One running experiment per adapter: alias `ab-NAME` -> NAME@1 (weight 100) / base (0)."""
    aliases = {}
    with open_registry(settings) as reg:
        router = open_router(settings, reg)
        try:
            for name in names:
                exp = router.create(alias=f"ab-{name}", variants=[(f"{name}@1", 100),
                                                                  ("base", 0)])
                router.start(exp.name)
                aliases[name] = exp.alias
        finally:
            router.close()
    return aliases
