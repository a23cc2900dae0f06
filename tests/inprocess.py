"""The in-process seam: the real app over a fake engine, a real registry, router and key store.

The fake engine answers deterministically and says which adapter served (`[name@v]` for an
adapter, `[base]` for the base), so tests of the request path need no vLLM and no model
weights beyond a tiny random base for the registry's shape checks. It is for fast tests of
the request path; the parity, hot-swap, shutdown and engine tests keep the real engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from adapters import Registry
from router import Router
from server.app import create_app
from server.auth import KeyStore
from server.config import ServerConfig
from server.engine import (
    AdapterLoadError,
    ChoiceDelta,
    EngineConfig,
    EngineOutput,
    GenParams,
    TokenLogprob,
)

CAPACITY_ONLY = dict(max_loras=2, lora_slots_gib=1.0, max_lora_rank=8, max_model_len=512, max_num_seqs=8,
                     kv_cache_gib=1.0, cpu_base_guard=False, cpu_lora_kernels=False,
                     tensor_parallel_size=1, gpu_memory_utilization=0.9, dtype="auto",
                     quantization=None, enable_prefix_caching=True, max_num_batched_tokens=None,
                     enforce_eager=False, engine_extra={})

__all__ = ["FakeEngine", "InProcess", "build", "serve_on_loopback", "write_lora"]

BASE_ID = "loraswap-base"


class FakeEngine:
    """What `server.engine.Engine` offers, without vLLM. Records every add and remove."""

    def __init__(self, config: EngineConfig, *, token_delay: float = 0.0) -> None:
        self.config = config
        self.token_delay = token_delay
        self.is_cpu = True
        self.lora_kernels = False
        self.guard_active = False
        self.start_seconds = 0.0
        self.max_loras, self.slots_reason = config.max_loras or 4, "fake"
        self.loaded: dict[int, str] = {}
        self.adds: list[str] = []
        self.removes: list[str] = []
        self.running_requests = 0
        self._running = False
        # Set to make every request answer this text (a tool call, say) instead of "[name]".
        self.reply: str | None = None
        self.requests: list[tuple[list[int], GenParams]] = []  # (prompt ids, params), in order

    async def start(self) -> None:
        self._running = True

    def shutdown(self) -> None:
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    async def add_adapter(self, name: str, int_id: int, path: Path) -> None:
        # The real engine reads the files in its own process; never on the event loop.
        if not await asyncio.to_thread((Path(path) / "adapter_config.json").exists):
            raise AdapterLoadError(f"the engine could not load {name}: no adapter at {path}")
        if len(self.loaded) >= self.config.max_cpu_loras:  # vLLM would evict behind our back
            raise AssertionError(f"engine over capacity loading {name}: {self.loaded}")
        self.loaded[int_id] = name
        self.adds.append(name)

    async def remove_adapter(self, int_id: int) -> bool:
        name = self.loaded.pop(int_id, None)
        if name is not None:
            self.removes.append(name)
        return name is not None

    def unfinished(self) -> int:
        return self.running_requests

    async def loaded_ids(self) -> set[int]:
        return set(self.loaded)

    async def generate(self, request_id: str, prompt_ids: list[int], params: GenParams,
                       adapter: tuple[str, int, Path] | None) -> AsyncIterator[EngineOutput]:
        name = "base" if adapter is None else adapter[0]
        if adapter is not None and adapter[1] not in self.loaded:
            raise AssertionError(f"{name} used while not loaded")
        self.requests.append((list(prompt_ids), params))
        full = f"[{name}]" if self.reply is None else self.reply
        text, reason = full, "stop"
        for s in params.stop:
            if s and s in text:
                text = text[: text.index(s)]
        if len(text) > params.max_tokens:
            text, reason = text[: params.max_tokens], "length"
        pieces = list(text) if params.stream else [text]
        self.running_requests += 1
        try:
            async for out in self._emit(pieces, prompt_ids, params, reason):
                yield out
        finally:
            self.running_requests -= 1

    async def _emit(self, pieces, prompt_ids, params, reason) -> AsyncIterator[EngineOutput]:
        for i, piece in enumerate(pieces):
            if self.token_delay:
                await asyncio.sleep(self.token_delay * len(piece))
            last = i == len(pieces) - 1
            yield EngineOutput(len(prompt_ids), [
                ChoiceDelta(index=c, text=piece, token_ids=[ord(ch) for ch in piece],
                            finish_reason=reason if last else None,
                            logprobs=None if params.logprobs is None else [
                                TokenLogprob(ch, -0.5, [(ch, -0.5)] * params.logprobs)
                                for ch in piece])
                for c in range(params.n)], last)


def write_lora(base: Path, out: Path, seed: int, rank: int = 8,
               targets: Sequence[str] = ("q_proj", "v_proj")) -> Path:
    """A small peft-format LoRA for `base`, written directly (no peft, no model load)."""
    import torch
    from safetensors.torch import save_file

    cfg = json.loads((base / "config.json").read_text())
    hidden = cfg["hidden_size"]
    head_dim = cfg.get("head_dim") or hidden // cfg["num_attention_heads"]
    outs = {"q_proj": cfg["num_attention_heads"] * head_dim,
            "k_proj": cfg["num_key_value_heads"] * head_dim,
            "v_proj": cfg["num_key_value_heads"] * head_dim, "o_proj": hidden}
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(cfg["num_hidden_layers"]):
        for t in targets:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{t}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, hidden, generator=gen) * 0.02
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(outs[t], rank, generator=gen) * 0.02
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "lora_dropout": 0.0,
        "bias": "none", "target_modules": list(targets), "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(base), "fan_in_fan_out": False,
        "modules_to_save": None, "use_dora": False}))
    return out


@dataclass
class InProcess:
    """The parts of one app, for tests that look behind the HTTP surface."""

    app: object
    config: ServerConfig
    engine: FakeEngine
    registry: Registry
    router: Router
    keys: KeyStore
    home: Path
    extra: dict = field(default_factory=dict)


def build(home: Path, base: Path, *, max_cpu_loras: int = 4, max_loras: int = 2,
          token_delay: float = 0.0, log_all: bool = False, retention: bool = False,
          **config: object) -> InProcess:
    """The real app (`create_app`) with a FakeEngine; config keywords go to ServerConfig."""
    from loraswap.settings import Settings
    from loraswap.wiring import (
        engine_config,
        open_fine_tuning,
        open_keys,
        open_registry,
        open_router,
        server_config,
    )
    from training.tokenizer import build_tokenizer

    settings = Settings.from_env(home=home, base_model=base, base_model_name=BASE_ID,
                                 max_lora_rank=8, max_loras=max_loras,
                                 max_cpu_loras=max_cpu_loras, log_all_requests=log_all,
                                 retention=retention, **config)
    cfg = server_config(settings)
    engine = FakeEngine(engine_config(settings), token_delay=token_delay)
    registry = open_registry(settings)
    router = open_router(settings, registry)
    keys = open_keys(settings)
    app = create_app(cfg, engine=engine, registry=registry, router=router, keys=keys,
                     tokenizer=build_tokenizer(),
                     fine_tuning=open_fine_tuning(settings, registry, cfg.model_id))
    return InProcess(app, cfg, engine, registry, router, keys, home, {"settings": settings})


@contextlib.contextmanager
def serve_on_loopback(app) -> Iterator[str]:
    """Run the app under a real uvicorn on a free loopback port, in a thread; yields its URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
