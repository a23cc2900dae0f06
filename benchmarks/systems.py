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

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

__all__ = ["BASE_ID", "EngineLimits", "Server", "free_port", "loraswap_server", "naive_server",
           "register_adapters", "create_experiments", "stop_all", "vllm_server"]

BASE_ID = "loraswap-base"
ROOT = Path(__file__).resolve().parent.parent
_LIVE: list[Server] = []  # started and not yet stopped: stop_all() on exit or a signal


@dataclass(frozen=True)
class EngineLimits:
    max_loras: int = 8
    max_lora_rank: int = 8
    max_cpu_loras: int = 64
    max_model_len: int = 512
    max_num_seqs: int = 64
    kv_cache_gib: int = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(eq=False)
class Server:
    name: str
    cmd: list[str]
    port: int
    ready_path: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    start_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 300.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        started = time.monotonic()
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        _LIVE.append(self)
        log.close()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} during "
                                   f"start; see {self.log_path}:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    self.start_seconds = time.monotonic() - started
                    return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s; see {self.log_path}")

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM our own child's process group (vLLM's engine core is a grandchild)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):  # stragglers
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None
        if self in _LIVE:
            _LIVE.remove(self)


def stop_all() -> None:
    """Stop every server this process started (each runs in its own process group)."""
    for server in list(_LIVE):
        server.stop()


def vllm_server(base: Path, adapters: dict[str, Path], limits: EngineLimits,
                log_dir: Path) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(base),
           "--served-model-name", BASE_ID, "--enable-lora",
           "--max-loras", str(limits.max_loras), "--max-lora-rank", str(limits.max_lora_rank),
           "--max-cpu-loras", str(limits.max_cpu_loras),
           "--max-model-len", str(limits.max_model_len),
           "--max-num-seqs", str(limits.max_num_seqs), "--dtype", "float32",
           "--disable-log-stats", "--host", "127.0.0.1", "--port", str(port)]
    if adapters:
        cmd += ["--lora-modules", *(f"{n}={p}" for n, p in adapters.items())]
    env = {"VLLM_CPU_KVCACHE_SPACE": str(limits.kv_cache_gib),
           # for the hot-swap scenario: POST /v1/load_lora_adapter
           "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    return Server("vllm", cmd, port, "/health", log_dir / "vllm.log", env)


def loraswap_server(home: Path, base: Path, limits: EngineLimits, log_dir: Path) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "loraswap", "serve", "--port", str(port), "--no-demo",
           "--max-loras", str(limits.max_loras), "--max-lora-rank", str(limits.max_lora_rank),
           "--max-cpu-loras", str(limits.max_cpu_loras + 1),  # + the CPU guard's zero adapter
           "--max-model-len", str(limits.max_model_len),
           "--max-num-seqs", str(limits.max_num_seqs),
           "--kv-cache-gib", str(limits.kv_cache_gib)]
    env = {"LORASWAP_HOME": str(home), "LORASWAP_BASE_MODEL": str(base),
           "LORASWAP_BASE_MODEL_NAME": BASE_ID,
           "VLLM_CPU_KVCACHE_SPACE": str(limits.kv_cache_gib)}
    return Server("loraswap", cmd, port, "/ready", log_dir / "loraswap.log", env)


def naive_server(base: Path, adapters: dict[str, Path], log_dir: Path) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "benchmarks.naive_server", "--base", str(base),
           "--port", str(port), *(f"--adapter={n}={p}" for n, p in adapters.items())]
    return Server("naive", cmd, port, "/health", log_dir / "naive.log")


def register_adapters(home: Path, base: Path, adapters: dict[str, Path],
                      max_rank: int) -> list[str]:
    """Register into a fresh LORASWAP_HOME (the registry's Python API, as the CLI does)."""
    from adapters import Registry

    home.mkdir(parents=True, exist_ok=True)
    with Registry(home / "loraswap.db", home / "store", base, max_rank=max_rank) as reg:
        return [reg.add(path, name, description="benchmark", tags=["bench"]).ref
                for name, path in adapters.items()]


def create_experiments(home: Path, base: Path, names: list[str], max_rank: int) -> dict[str, str]:
    """One running experiment per adapter: alias `ab-NAME` -> NAME@1 (weight 100) / base (0)."""
    from adapters import Registry
    from router import Router

    aliases = {}
    with Registry(home / "loraswap.db", home / "store", base, max_rank=max_rank) as reg:
        router = Router(home / "loraswap.db", reg, base_id=BASE_ID)
        try:
            for name in names:
                exp = router.create(alias=f"ab-{name}", variants=[(f"{name}@1", 100),
                                                                  ("base", 0)])
                router.start(exp.name)
                aliases[name] = exp.alias
        finally:
            router.close()
    return aliases
