"""System (b): naive transformers+peft serving, the baseline of the S-LoRA paper.

One process, one model, every adapter loaded with peft's `load_adapter`; requests are served
one at a time (FIFO), each with `set_adapter` to its adapter, token by token with a KV cache.
It speaks the same OpenAI chat route (streaming, `stream_options.include_usage`,
`ignore_eos`) so the same load generator drives it.

    python -m benchmarks.naive_server --base DIR --adapter NAME=PATH ... --port P
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

__all__ = ["NaiveModel", "create_app", "main"]

BASE_ID = "loraswap-base"


class NaiveModel:
    def __init__(self, base: Path, adapters: dict[str, Path]) -> None:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(str(base))
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
        items = list(adapters.items())
        if items:
            first, path = items[0]
            model = PeftModel.from_pretrained(model, str(path), adapter_name=first)
            for name, path in items[1:]:
                model.load_adapter(str(path), adapter_name=name)
        self.model = model.eval()
        self.adapters = set(adapters)
        self.eos = self.tok.eos_token_id
        self.lock = threading.Lock()

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def generate(self, model_name: str, ids: list[int], max_tokens: int, temperature: float,
                 ignore_eos: bool, emit) -> int:
        """Greedy (or sampled) decoding, one token at a time; `emit(text)` per token."""
        torch = self.torch
        with self.lock, torch.inference_mode():
            if model_name == BASE_ID:
                ctx = self.model.disable_adapter() if self.adapters else _null()
            else:
                self.model.set_adapter(model_name)
                ctx = _null()
            with ctx:
                out = self.model(input_ids=torch.tensor([ids]), use_cache=True)
                n = 0
                while n < max_tokens:
                    logits = out.logits[0, -1]
                    if temperature > 0:
                        probs = torch.softmax(logits / temperature, dim=-1)
                        nxt = int(torch.multinomial(probs, 1))
                    else:
                        nxt = int(torch.argmax(logits))
                    n += 1
                    if nxt == self.eos and not ignore_eos:
                        break
                    emit(self.tok.decode([nxt], skip_special_tokens=True))
                    if n >= max_tokens:
                        break
                    out = self.model(input_ids=torch.tensor([[nxt]]),
                                     past_key_values=out.past_key_values, use_cache=True)
        return n


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _error(status: int, message: str, code: str):
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error",
                                   "param": None, "code": code}}, status_code=status)


def create_app(model: NaiveModel) -> FastAPI:
    app = FastAPI(title="naive transformers+peft")
    pool = ThreadPoolExecutor(max_workers=1)  # one request at a time, in arrival order

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict:
        ids = [BASE_ID, *sorted(model.adapters)]
        return {"object": "list", "data": [{"id": i, "object": "model"} for i in ids]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        name = body.get("model")
        if name != BASE_ID and name not in model.adapters:
            return _error(404, f"The model `{name}` does not exist.", "model_not_found")
        ids = model.prompt_ids(body["messages"])
        max_tokens = int(body.get("max_tokens") or 64)
        temperature = float(body.get("temperature") or 0.0)
        ignore_eos = bool(body.get("ignore_eos", False))
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def emit(text: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, text)

        def work() -> int:
            try:
                return model.generate(name, ids, max_tokens, temperature, ignore_eos, emit)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        future = loop.run_in_executor(pool, work)
        if not body.get("stream"):
            pieces = []
            while (piece := await queue.get()) is not None:
                pieces.append(piece)
            n = await future
            return JSONResponse({
                "id": cid, "object": "chat.completion", "created": int(time.time()),
                "model": name, "choices": [{"index": 0, "finish_reason": "length",
                                            "message": {"role": "assistant",
                                                        "content": "".join(pieces)}}],
                "usage": {"prompt_tokens": len(ids), "completion_tokens": n,
                          "total_tokens": len(ids) + n}})
        usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def events():
            head = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": name}

            def sse(obj) -> str:
                return f"data: {json.dumps({**head, **obj})}\n\n"

            yield sse({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None}]})
            while (piece := await queue.get()) is not None:
                if piece:
                    yield sse({"choices": [{"index": 0, "delta": {"content": piece},
                                            "finish_reason": None}]})
            n = await future
            yield sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
            if usage:
                yield sse({"choices": [], "usage": {"prompt_tokens": len(ids),
                                                    "completion_tokens": n,
                                                    "total_tokens": len(ids) + n}})
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 is fastest for a tiny model on a busy 2-core "
                        "machine (measured 5 ms/token against 20-35 ms with 2)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    adapters = {}
    for item in args.adapter:
        name, _, path = item.partition("=")
        adapters[name] = Path(path)
    import uvicorn

    uvicorn.run(create_app(NaiveModel(args.base, adapters)), host=args.host, port=args.port,
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
