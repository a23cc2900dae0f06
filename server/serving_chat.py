"""POST /v1/chat/completions: the base model's chat template, then the engine."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from fastapi.responses import JSONResponse, StreamingResponse

from server.engine import TokenLogprob
from server.errors import APIError
from server.protocol import ChatCompletionRequest, now
from server.serving_base import RequestMeta, ServingBase, finish_reason, sse

__all__ = ["ServingChat"]

_ROLE_ALIASES = {"developer": "system"}


def _lp_entry(lp: TokenLogprob) -> dict:
    return {"token": lp.token, "logprob": lp.logprob, "bytes": list(lp.token.encode()),
            "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())}
                             for t, v in lp.top]}


class ServingChat(ServingBase):
    endpoint = "chat"
    log_endpoint = "chat.completions"

    @staticmethod
    def messages(req: ChatCompletionRequest) -> list[dict[str, str]]:
        return [{"role": _ROLE_ALIASES.get(m.role, m.role), "content": m.text()}
                for m in req.messages]

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        try:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=True)
        except Exception as exc:  # a template may refuse a role order, say
            raise APIError(400, f"the chat template refused these messages: {exc}",
                           param="messages", code="invalid_messages") from None
        # The template writes BOS; the tokenizer must not add a second one.
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    async def create(self, req: ChatCompletionRequest, meta: RequestMeta):
        target = self.target(req.model, req.user, meta)
        messages = self.messages(req)
        ids = self.prompt_ids(messages)
        k = None
        if req.logprobs:
            k = req.top_logprobs or 0
        params = self.gen_params(prompt_len=len(ids),
                                 max_tokens=req.max_completion_tokens or req.max_tokens,
                                 req=req, logprobs=k)
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        if req.stream:
            if target.version is not None:  # fail before the 200 if it cannot load
                await self.models.ensure_loaded(target.version)
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(self._stream(cid, target, ids, params, include_usage,
                                                  messages),
                                     media_type="text/event-stream", headers=target.headers())
        acc = await self.collect(target, ids, params, messages)
        choices = []
        for i, a in enumerate(acc):
            lps = {"content": [_lp_entry(x) for x in a.logprobs or []]} if k is not None else None
            choice = {"index": i, "message": {"role": "assistant", "content": a.text},
                      "logprobs": lps, "finish_reason": finish_reason(a.finish_reason)}
            if req.return_token_ids:
                choice["token_ids"] = a.token_ids
            choices.append(choice)
        body = {"id": cid, "object": "chat.completion", "created": now(),
                "model": target.model_id, "choices": choices,
                "usage": self.usage(len(ids), sum(len(a.token_ids) for a in acc))}
        return JSONResponse(body, headers=target.headers())

    async def _stream(self, cid, target, ids, params, include_usage, messages,
                      ) -> AsyncIterator[str]:
        created = now()
        base = {"id": cid, "object": "chat.completion.chunk", "created": created,
                "model": target.model_id}
        completion = 0
        try:
            for i in range(params.n):
                yield sse({**base, "choices": [{"index": i, "delta": {"role": "assistant",
                                                                      "content": ""},
                                                "logprobs": None, "finish_reason": None}]})
            async for out in self.outputs(target, ids, params, messages):
                for c in out.choices:
                    completion += len(c.token_ids)
                    if not c.text and not c.finish_reason:
                        continue
                    lps = None
                    if params.logprobs is not None:
                        lps = {"content": [_lp_entry(x) for x in c.logprobs or []]}
                    delta = {"content": c.text} if c.text else {}
                    yield sse({**base, "choices": [{
                        "index": c.index, "delta": delta, "logprobs": lps,
                        "finish_reason": finish_reason(c.finish_reason)}]})
            if include_usage:
                yield sse({**base, "choices": [], "usage": self.usage(len(ids), completion)})
        except Exception as exc:
            yield self.stream_error(exc)
        yield sse("[DONE]")
