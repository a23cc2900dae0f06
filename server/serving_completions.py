"""POST /v1/completions: raw prompts (text, token ids, or a list of texts)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

from fastapi.responses import JSONResponse, StreamingResponse

from server.engine import GenParams, TokenLogprob
from server.errors import InvalidRequest
from server.protocol import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    now,
)
from server.serving_base import RequestBook, RequestMeta, ServingBase, finish_reason, sse
from server.serving_models import Target

__all__ = ["ServingCompletions"]

MAX_PROMPTS = 16


def _logprobs(lps: list[TokenLogprob], offset0: int) -> CompletionLogprobs:
    offsets, pos = [], offset0
    for lp in lps:
        offsets.append(pos)
        pos += len(lp.token)
    return CompletionLogprobs(tokens=[x.token for x in lps],
                              token_logprobs=[x.logprob for x in lps],
                              top_logprobs=[dict(x.top) for x in lps], text_offset=offsets)


class ServingCompletions(ServingBase):
    endpoint = "completions"
    log_endpoint = "completions"

    def prompts(self, req: CompletionRequest) -> list[tuple[str, list[int]]]:
        p = req.prompt
        vocab = len(self.tokenizer)
        if isinstance(p, list) and p and all(isinstance(x, int) for x in p):
            if any(t < 0 or t >= vocab for t in p):
                raise InvalidRequest(f"Invalid value for 'prompt': token ids must be in "
                                     f"[0, {vocab})", param="prompt")
            return [(self.tokenizer.decode(p), list(p))]
        texts = [p] if isinstance(p, str) else list(p)
        if not texts:
            raise InvalidRequest("Invalid value for 'prompt': empty list", param="prompt")
        if len(texts) > MAX_PROMPTS:
            raise InvalidRequest(f"Invalid value for 'prompt': at most {MAX_PROMPTS} prompts",
                                 param="prompt")
        out = []
        for t in texts:
            ids = self.tokenizer(t, add_special_tokens=True)["input_ids"]
            if not ids:
                raise InvalidRequest("Invalid value for 'prompt': the prompt is empty",
                                     param="prompt")
            out.append((t, ids))
        return out

    def _prefixed(self, system_prompt: str, ids: list[int]) -> list[int]:
        """`system_prompt`, a blank line, then the prompt; BOS (if any) once, at the start."""
        prefix = self.tokenizer(system_prompt + "\n\n", add_special_tokens=True)["input_ids"]
        bos = self.tokenizer.bos_token_id
        return prefix + (ids[1:] if bos is not None and ids[:1] == [bos] else ids)

    def _prompt_text(self, req: CompletionRequest) -> str:
        p = req.prompt
        if isinstance(p, str):
            return p
        if p and all(isinstance(x, int) for x in p):
            return self.tokenizer.decode(p)
        return "\n".join(p)

    @staticmethod
    def _logged_prompt(prompts: list[tuple[str, list[int]]]) -> str | list[str]:
        texts = [text for text, _ in prompts]
        return texts[0] if len(texts) == 1 else texts

    async def create(self, req: CompletionRequest, meta: RequestMeta):
        target = await self.target(await self.model_of(req), req.user, meta, req.metadata,
                             lambda: self._prompt_text(req))
        prompts = self.prompts(req)
        if target.route is not None and target.route.system_prompt:
            # A prompt variant on the completions endpoint: its text goes before each prompt.
            prompts = [(text, self._prefixed(target.route.system_prompt, ids))
                       for text, ids in prompts]
        max_tokens = 16 if req.max_tokens is None else req.max_tokens  # OpenAI's default here
        best_of = req.best_of or req.n
        if best_of < req.n:
            raise InvalidRequest(f"Invalid value for 'best_of': it must be at least n "
                                 f"({req.n}), got {best_of}", param="best_of")
        if best_of > req.n and req.stream:
            raise InvalidRequest("best_of cannot be used with stream (the best choices are "
                                 "only known at the end)", param="best_of")
        # best_of > n: generate best_of, keep the n with the highest cumulative logprob
        # (vLLM computes it only when logprobs are asked for: at least the chosen token's).
        lp = req.logprobs if req.logprobs is not None or best_of == req.n else 0
        params = [self.gen_params(prompt_len=len(ids), max_tokens=max_tokens, req=req,
                                  logprobs=lp, what="prompt", n=best_of) for _, ids in prompts]
        cid = f"cmpl-{uuid.uuid4().hex}"
        headers = target.headers()
        if req.stream:
            if target.version is not None:
                await self.residency.ensure_loaded(target.version)
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            book = self.book(target, self._logged_prompt(prompts))
            return StreamingResponse(self._stream(cid, target, prompts, params, req.echo,
                                                  include_usage, book),
                                     media_type="text/event-stream", headers=headers)
        # Every prompt at once: the engine batches them.
        book = self.book(target, self._logged_prompt(prompts))
        try:
            results = await self.unless_disconnected(meta, asyncio.gather(*(
                self.collect(target, ids, gp, book, p)
                for p, ((_text, ids), gp) in enumerate(zip(prompts, params, strict=True)))))
        finally:
            self.log(book)
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for p, ((text, ids), acc) in enumerate(zip(prompts, results, strict=True)):
            prompt_tokens += len(ids)
            completion_tokens += sum(len(a.token_ids) for a in acc)  # best_of: all are paid for
            if best_of > req.n:
                acc = sorted(acc, key=lambda a: a.cumulative_logprob or float("-inf"),
                             reverse=True)[: req.n]
            for j, a in enumerate(acc):
                prefix = text if req.echo else ""
                choices.append(CompletionChoice(
                    index=p * req.n + j, text=prefix + a.text,
                    logprobs=(_logprobs(a.logprobs or [], len(prefix))
                              if req.logprobs is not None else None),
                    finish_reason=finish_reason(a.finish_reason),
                    token_ids=a.token_ids if req.return_token_ids else None,
                    prompt_token_ids=list(ids) if req.return_token_ids else None))
        body = CompletionResponse(id=cid, created=now(), model=target.model_id, choices=choices,
                                  usage=self.usage(prompt_tokens, completion_tokens))
        return JSONResponse(body.model_dump(mode="json"), headers=headers)

    async def _stream(self, cid: str, target: Target, prompts: list[tuple[str, list[int]]],
                      params: list[GenParams], echo: bool, include_usage: bool,
                      book: RequestBook) -> AsyncIterator[str]:
        created = now()

        def chunk(choices: list[CompletionChoice], usage=None) -> str:
            return sse(CompletionResponse(id=cid, created=created, model=target.model_id,
                                          choices=choices, usage=usage))

        prompt_tokens = completion = 0
        try:
            for p, ((text, ids), gp) in enumerate(zip(prompts, params, strict=True)):
                prompt_tokens += len(ids)
                # text_offset counts from the start of each choice's text, across chunks
                offsets = [len(text) if echo else 0] * gp.n
                if echo:
                    for j in range(gp.n):
                        yield chunk([CompletionChoice(index=p * gp.n + j, text=text)])
                async for out in self.outputs(target, ids, gp, book, p):
                    for c in out.choices:
                        completion += len(c.token_ids)
                        if not c.text and not c.finish_reason:
                            continue
                        lps = (_logprobs(c.logprobs or [], offsets[c.index])
                               if gp.logprobs is not None else None)
                        offsets[c.index] += len(c.text)
                        yield chunk([CompletionChoice(
                            index=p * gp.n + c.index, text=c.text, logprobs=lps,
                            finish_reason=finish_reason(c.finish_reason))])
            if include_usage:
                yield chunk([], self.usage(prompt_tokens, completion))
        except Exception as exc:
            yield self.stream_error(exc)
        finally:
            self.log(book)
        yield sse("[DONE]")
