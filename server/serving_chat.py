"""POST /v1/chat/completions: the base model's chat template, then the engine."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator

from fastapi.responses import JSONResponse, StreamingResponse

from server.engine import GenParams, TokenLogprob
from server.errors import InvalidRequest
from server.protocol import (
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatLogprobs,
    ChunkChoice,
    Delta,
    TokenLogprobEntry,
    TopLogprob,
    now,
)
from server.serving_base import (
    RequestBook,
    RequestMeta,
    ServingBase,
    finish_reason,
    sse,
    with_system_prompt,
)
from server.serving_models import Target
from server.serving_tools import ToolPolicy

__all__ = ["ServingChat"]


def _logprobs(lps: list[TokenLogprob] | None) -> ChatLogprobs:
    return ChatLogprobs(content=[
        TokenLogprobEntry(token=lp.token, logprob=lp.logprob, bytes=list(lp.token.encode()),
                          top_logprobs=[TopLogprob(token=t, logprob=v, bytes=list(t.encode()))
                                        for t, v in lp.top])
        for lp in lps or []])


class ServingChat(ServingBase):
    endpoint = "chat"
    log_endpoint = "chat.completions"

    def __init__(self, *args, tool_call_parser: str = "", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tool_call_parser = tool_call_parser

    @staticmethod
    def messages(req: ChatCompletionRequest) -> list[dict]:
        return [m.turn() for m in req.messages]

    def prompt_ids(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        try:
            text = self.tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                                      add_generation_prompt=True)
        except Exception as exc:  # a template may refuse a role order, say
            raise InvalidRequest(f"the chat template refused these messages: {exc}",
                                 param="messages", code="invalid_messages") from None
        # The template writes BOS; the tokenizer must not add a second one.
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    async def create(self, req: ChatCompletionRequest, meta: RequestMeta):
        target = await self.target(await self.model_of(req), req.user, meta, req.metadata,
                             lambda: "\n".join(m.text() for m in req.messages))
        messages = self.messages(req)  # logged as the client sent them
        tools = ToolPolicy(req, self.tool_call_parser, self.tokenizer)
        system_prompt = target.route.system_prompt if target.route is not None else None
        ids = self.prompt_ids(with_system_prompt(messages, system_prompt), tools.tools)
        k = (req.top_logprobs or 0) if req.logprobs else None
        params = self.gen_params(prompt_len=len(ids),
                                 max_tokens=req.max_completion_tokens or req.max_tokens,
                                 req=req, logprobs=k)
        if tools.keeps_special_tokens:
            params = dataclasses.replace(params, skip_special_tokens=False)
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        if req.stream:
            if target.version is not None:  # fail before the 200 if it cannot load
                await self.residency.ensure_loaded(target.version)
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(self._stream(cid, target, ids, params, include_usage,
                                                  self.book(target, messages), tools),
                                     media_type="text/event-stream", headers=target.headers())
        book = self.book(target, messages)
        try:
            acc = await self.unless_disconnected(meta, self.collect(target, ids, params, book))
        finally:
            self.log(book)
        choices = []
        for i, a in enumerate(acc):
            message, finish = tools.choice().message(a.text, finish_reason(a.finish_reason))
            choices.append(ChatChoice(index=i, message=message, finish_reason=finish,
                                      logprobs=_logprobs(a.logprobs) if k is not None else None,
                                      token_ids=a.token_ids if req.return_token_ids else None))
        body = ChatCompletionResponse(
            id=cid, created=now(), model=target.model_id, choices=choices,
            usage=self.usage(len(ids), sum(len(a.token_ids) for a in acc)),
            prompt_token_ids=ids if req.return_token_ids else None)
        return JSONResponse(body.model_dump(mode="json"), headers=target.headers())

    async def _stream(self, cid: str, target: Target, ids: list[int], params: GenParams,
                      include_usage: bool, book: RequestBook, tools: ToolPolicy
                      ) -> AsyncIterator[str]:
        created = now()

        def chunk(choices: list[ChunkChoice], usage=None) -> str:
            return sse(ChatCompletionChunk(id=cid, created=created, model=target.model_id,
                                           choices=choices, usage=usage))

        completion = 0
        states = [tools.choice() for _ in range(params.n)]
        try:
            for i in range(params.n):
                yield chunk([ChunkChoice(index=i, delta=Delta(role="assistant", content=""))])
            async for out in self.outputs(target, ids, params, book):
                for c in out.choices:
                    completion += len(c.token_ids)
                    state = states[c.index]
                    delta = state.delta(c.text, c.token_ids) if c.text else None
                    lps = _logprobs(c.logprobs) if params.logprobs is not None else None
                    if delta is not None:
                        yield chunk([ChunkChoice(index=c.index, delta=delta, logprobs=lps)])
                        lps = None
                    if c.finish_reason:
                        last, finish = state.end(finish_reason(c.finish_reason))
                        yield chunk([ChunkChoice(index=c.index, delta=last or Delta(),
                                                 logprobs=lps, finish_reason=finish)])
            if include_usage:
                yield chunk([], self.usage(len(ids), completion))
        except Exception as exc:
            yield self.stream_error(exc)
        finally:
            self.log(book)
        yield sse("[DONE]")
