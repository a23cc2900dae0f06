"""POST /v1/completions: raw prompts (text, token ids, or a list of texts)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from fastapi.responses import JSONResponse, StreamingResponse

from server.engine import TokenLogprob
from server.errors import APIError
from server.protocol import CompletionRequest, now
from server.serving_base import RequestMeta, ServingBase, finish_reason, sse

__all__ = ["ServingCompletions"]

MAX_PROMPTS = 16


def _logprobs(lps: list[TokenLogprob], offset0: int) -> dict:
    offsets, pos = [], offset0
    for lp in lps:
        offsets.append(pos)
        pos += len(lp.token)
    return {"tokens": [x.token for x in lps], "token_logprobs": [x.logprob for x in lps],
            "top_logprobs": [dict(x.top) for x in lps], "text_offset": offsets}


class ServingCompletions(ServingBase):
    endpoint = "completions"
    log_endpoint = "completions"

    def prompts(self, req: CompletionRequest) -> list[tuple[str, list[int]]]:
        p = req.prompt
        vocab = len(self.tokenizer)
        if isinstance(p, list) and p and all(isinstance(x, int) for x in p):
            if any(t < 0 or t >= vocab for t in p):
                raise APIError(400, f"Invalid value for 'prompt': token ids must be in [0, {vocab})",
                               param="prompt", code="invalid_value")
            return [(self.tokenizer.decode(p), list(p))]
        texts = [p] if isinstance(p, str) else list(p)
        if not texts:
            raise APIError(400, "Invalid value for 'prompt': empty list", param="prompt")
        if len(texts) > MAX_PROMPTS:
            raise APIError(400, f"Invalid value for 'prompt': at most {MAX_PROMPTS} prompts",
                           param="prompt", code="invalid_value")
        out = []
        for t in texts:
            ids = self.tokenizer(t, add_special_tokens=True)["input_ids"]
            if not ids:
                raise APIError(400, "Invalid value for 'prompt': the prompt is empty",
                               param="prompt", code="invalid_value")
            out.append((t, ids))
        return out

    async def create(self, req: CompletionRequest, meta: RequestMeta):
        target = self.target(req.model, req.user, meta)
        prompts = self.prompts(req)
        max_tokens = 16 if req.max_tokens is None else req.max_tokens  # OpenAI's default here
        params = [self.gen_params(prompt_len=len(ids), max_tokens=max_tokens, req=req,
                                  logprobs=req.logprobs, what="prompt") for _, ids in prompts]
        cid = f"cmpl-{uuid.uuid4().hex}"
        headers = target.headers()
        if req.stream:
            if target.version is not None:
                await self.models.ensure_loaded(target.version)
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(self._stream(cid, target, prompts, params, req.echo,
                                                  include_usage),
                                     media_type="text/event-stream", headers=headers)
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for p, ((text, ids), gp) in enumerate(zip(prompts, params, strict=True)):
            acc = await self.collect(target, ids, gp, text)
            prompt_tokens += len(ids)
            for j, a in enumerate(acc):
                completion_tokens += len(a.token_ids)
                prefix = text if req.echo else ""
                lps = _logprobs(a.logprobs or [], len(prefix)) if req.logprobs is not None else None
                choice = {"index": p * gp.n + j, "text": prefix + a.text, "logprobs": lps,
                          "finish_reason": finish_reason(a.finish_reason)}
                if req.return_token_ids:
                    choice["token_ids"] = a.token_ids
                choices.append(choice)
        body = {"id": cid, "object": "text_completion", "created": now(),
                "model": target.model_id, "choices": choices,
                "usage": self.usage(prompt_tokens, completion_tokens)}
        return JSONResponse(body, headers=headers)

    async def _stream(self, cid, target, prompts, params, echo, include_usage,
                      ) -> AsyncIterator[str]:
        base = {"id": cid, "object": "text_completion", "created": now(), "model": target.model_id}
        prompt_tokens = completion = 0
        try:
            for p, ((text, ids), gp) in enumerate(zip(prompts, params, strict=True)):
                prompt_tokens += len(ids)
                if echo:
                    for j in range(gp.n):
                        yield sse({**base, "choices": [{"index": p * gp.n + j, "text": text,
                                                        "logprobs": None, "finish_reason": None}]})
                async for out in self.outputs(target, ids, gp, text):
                    for c in out.choices:
                        completion += len(c.token_ids)
                        if not c.text and not c.finish_reason:
                            continue
                        lps = _logprobs(c.logprobs or [], 0) if gp.logprobs is not None else None
                        yield sse({**base, "choices": [{
                            "index": p * gp.n + c.index, "text": c.text, "logprobs": lps,
                            "finish_reason": finish_reason(c.finish_reason)}]})
            if include_usage:
                yield sse({**base, "choices": [], "usage": self.usage(prompt_tokens, completion)})
        except Exception as exc:
            yield self.stream_error(exc)
        yield sse("[DONE]")
