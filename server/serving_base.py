"""What chat and completions share: limits, sampling parameters, running the engine, SSE.

Why token ids go to the engine (not text): we tokenize here with the base's tokenizer and chat
template, so the prompt length is known before the engine sees it (context checks give
OpenAI's 400 message) and BOS is written once, by the template.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from router import RequestRecord
from server.engine import (
    ChoiceDelta,
    Engine,
    EngineInputError,
    EngineOutput,
    GenParams,
    TokenLogprob,
)
from server.errors import APIError
from server.metrics import Metrics
from server.protocol import Usage
from server.serving_models import ModelManager, Target

__all__ = ["Accumulated", "RequestMeta", "ServingBase", "sse"]

log = logging.getLogger("loraswap.requests")


def sse(data: dict | str) -> str:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n"


@dataclass(frozen=True)
class RequestMeta:
    """What the HTTP layer knows about a request beyond its body."""

    request_id: str
    user_header: str | None = None  # X-User-Id: the experiment unit when `user` is absent
    api_key_id: str | None = None


@dataclass
class Accumulated:
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None

    def add(self, c: ChoiceDelta) -> None:
        self.text += c.text
        self.token_ids += c.token_ids
        if c.finish_reason:
            self.finish_reason = c.finish_reason
        if c.logprobs is not None:
            self.logprobs = (self.logprobs or []) + c.logprobs


def finish_reason(reason: str | None) -> str | None:
    # vLLM says "abort" when a request is cut short; OpenAI has no such value.
    return {"abort": "stop", "error": "stop"}.get(reason or "", reason)


class ServingBase:
    endpoint = "base"
    log_endpoint = "base"  # the request log's name for it

    def __init__(self, models: ModelManager, engine: Engine, tokenizer, metrics: Metrics,
                 max_model_len: int, max_n: int,
                 request_log: Callable[[RequestRecord], bool] | None = None) -> None:
        self.request_log = request_log
        self.models = models
        self.engine = engine
        self.tokenizer = tokenizer
        self.metrics = metrics
        self.max_model_len = max_model_len
        self.max_n = max_n

    def target(self, model: str, user: str | None, meta: RequestMeta) -> Target:
        """Resolve `model` (an alias routes by `user`, else the X-User-Id header)."""
        unit = user or meta.user_header
        return dataclasses.replace(self.models.resolver(model, unit), request_id=meta.request_id,
                                   api_key_id=meta.api_key_id)

    def gen_params(self, *, prompt_len: int, max_tokens: int | None, req, logprobs: int | None,
                   what: str = "messages") -> GenParams:
        limit = self.max_model_len
        if prompt_len >= limit:
            raise APIError(400, f"This model's maximum context length is {limit} tokens. However, "
                           f"your {what} resulted in {prompt_len} tokens. Please reduce the "
                           f"length of the {what}.", param=what, code="context_length_exceeded")
        remaining = limit - prompt_len
        if max_tokens is None:
            max_tokens = remaining
        elif max_tokens > remaining:
            raise APIError(400, f"This model's maximum context length is {limit} tokens. However, "
                           f"you requested {prompt_len + max_tokens} tokens ({prompt_len} in the "
                           f"{what}, {max_tokens} in the completion). Please reduce the length "
                           f"of the {what} or completion.", param="max_tokens",
                           code="context_length_exceeded")
        if req.n > self.max_n:
            raise APIError(400, f"Invalid value for 'n': at most {self.max_n} choices per "
                           f"request, got {req.n}.", param="n", code="invalid_value")
        temperature = 1.0 if req.temperature is None else req.temperature
        if req.n > 1 and temperature == 0:
            raise APIError(400, "Invalid value for 'n': n > 1 needs temperature > 0 (greedy "
                           "decoding would return n identical choices).", param="n",
                           code="invalid_value")
        return GenParams(max_tokens=max_tokens, temperature=temperature,
                         top_p=1.0 if req.top_p is None else req.top_p, n=req.n,
                         stop=tuple(req.stop_list()), seed=req.seed, logprobs=logprobs,
                         stream=req.stream, min_tokens=min(req.min_tokens, max_tokens),
                         ignore_eos=req.ignore_eos)

    async def outputs(self, target: Target, prompt_ids: list[int], params: GenParams,
                      prompt: list[dict] | str | None = None) -> AsyncIterator[EngineOutput]:
        """Engine outputs for one prompt, with the adapter held, the metrics kept and the
        request logged (`prompt` is kept in the log only when retention is on)."""
        rid = uuid.uuid4().hex
        self.metrics.inference.labels(target.model_id, self.endpoint, str(params.stream)).inc()
        self.metrics.in_flight.inc()
        arrived = time.time()
        started = time.monotonic()
        first = True
        completion = 0
        text0, finish0, status = "", None, 200
        try:
            async with self.models.use(target):
                try:
                    async for out in self.engine.generate(rid, prompt_ids, params,
                                                          target.engine_adapter):
                        n_new = sum(len(c.token_ids) for c in out.choices)
                        if first and n_new:
                            self.metrics.ttft.observe(time.monotonic() - started)
                            first = False
                        completion += n_new
                        for c in out.choices:
                            if c.index == 0:
                                text0 += c.text
                                finish0 = c.finish_reason or finish0
                        yield out
                except EngineInputError as exc:
                    raise APIError(400, str(exc), param=exc.param, code="invalid_value") from None
        except BaseException as exc:
            status = exc.status if isinstance(exc, APIError) else 500
            raise
        finally:
            self.metrics.in_flight.dec()
            self.metrics.prompt_tokens.inc(len(prompt_ids))
            self.metrics.completion_tokens.inc(completion)
            self.metrics.latency.labels(self.endpoint).observe(time.monotonic() - started)
            log.info("request_id=%s model=%s requested=%s user=%s prompt_tokens=%d "
                     "completion_tokens=%d latency_ms=%.0f", target.request_id, target.model_id,
                     target.requested, target.user or "-",
                     len(prompt_ids), completion, (time.monotonic() - started) * 1000)
            if self.request_log is not None:
                self.request_log(RequestRecord(
                    request_id=target.request_id, model=target.requested, served=target.model_id,
                    route=target.route, user=target.user, api_key_id=target.api_key_id,
                    endpoint=self.log_endpoint, status_code=status,
                    latency_ms=(time.monotonic() - started) * 1000,
                    prompt_tokens=len(prompt_ids), completion_tokens=completion,
                    finish_reason=finish_reason(finish0), prompt=prompt, output=text0,
                    ts=arrived))

    async def collect(self, target: Target, prompt_ids: list[int], params: GenParams,
                      prompt: list[dict] | str | None = None) -> list[Accumulated]:
        acc = [Accumulated() for _ in range(params.n)]
        async for out in self.outputs(target, prompt_ids, params, prompt):
            for c in out.choices:
                acc[c.index].add(c)
        return acc

    @staticmethod
    def usage(prompt_tokens: int, completion_tokens: int) -> dict:
        return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                     total_tokens=prompt_tokens + completion_tokens).model_dump()

    @staticmethod
    def stream_error(exc: Exception) -> str:
        if isinstance(exc, APIError):
            return sse(exc.body())
        log.exception("stream failed")
        return sse({"error": {"message": f"internal error: {exc.__class__.__name__}",
                              "type": "server_error", "param": None, "code": "internal_error"}})
