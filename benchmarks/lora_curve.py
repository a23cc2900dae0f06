"""Micro-benchmark: the LoRA work of one engine step against the number of adapters in play.

    .venv/bin/python -m benchmarks.lora_curve                      # 20 M shapes, 4..256 adapters
    .venv/bin/python -m benchmarks.lora_curve --tokens 512 --adapters 4,64

What the many-adapters benchmark cannot separate: how much of a step is LoRA arithmetic, and
how that grows when a batch mixes more adapters. For each adapter count N (N slots, so every
adapter is resident), every step draws a new Zipf(alpha) mapping of the batch's tokens to
adapters, as serving does, updates the punica wrapper's metadata and runs every LoRA layer of
a Llama-shaped model (q/k/v, o, gate/up, down per layer). vLLM's CPU ops and loraswap's
kernels run on the same inputs, alternating in this process, so their ratio holds on a shared
machine; the outputs are compared on the first step. Writes a markdown table and a chart.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

__all__ = ["main", "run"]


def _zipf(torch, adapters: int, tokens: int, alpha: float, g):
    weights = 1.0 / torch.arange(1, adapters + 1, dtype=torch.float64) ** alpha
    return torch.multinomial(weights / weights.sum(), tokens, replacement=True, generator=g)


def _wrappers(torch, tokens: int):
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    from benchmarks.lora_ops import segmented_wrapper_class

    Segmented = segmented_wrapper_class()
    return {name: cls(max_num_batched_tokens=tokens, max_batches=tokens, device="cpu")
            for name, cls in (("vLLM CPU ops", PunicaWrapperCPU), ("loraswap", Segmented))}


def _measure(torch, args, adapters: int, tokens: int, g) -> dict[str, object]:
    from vllm.lora.layers import LoRAMapping

    h, inter, kv, r = args.hidden, args.intermediate, args.kv_width, args.rank
    kinds = ((h, (h, kv, kv)), (h, (h,)), (h, (inter, inter)), (inter, (h,)))
    layers = []
    for _ in range(args.layers):
        for inp, widths in kinds:
            layers.append((torch.randn(tokens, inp, generator=g),
                           tuple(torch.randn(adapters, 1, r, inp, generator=g) / inp ** 0.5
                                 for _ in widths),
                           tuple(torch.randn(adapters, 1, o, r, generator=g) for o in widths),
                           widths, torch.zeros(tokens, sum(widths))))
    wrappers = _wrappers(torch, tokens)
    slot_ids = list(range(1, adapters + 1))
    times: dict[str, list[float]] = {name: [] for name in wrappers}
    distinct, diff = [], 0.0
    for step in range(args.steps + 2):
        ids = (_zipf(torch, adapters, tokens, args.alpha, g) + 1).tolist()
        distinct.append(len(set(ids)))
        mapping = LoRAMapping(tuple(ids), tuple(ids), is_prefill=tokens > 64)
        outs = {}
        for name, w in wrappers.items():
            start = time.perf_counter()
            w.update_metadata(mapping, slot_ids, adapters, 0)
            for x, a, b, widths, y in layers:
                w.add_lora_linear(y, x, a, b, 1.0, widths)
            if step >= 2:  # the first steps build the stacked-weight caches
                times[name].append(time.perf_counter() - start)
            if step == 0:
                outs[name] = [y.clone() for *_, y in layers]
                for *_, y in layers:
                    y.zero_()
        if outs:
            first, second = outs.values()
            diff = max(float((p - q).abs().max()) for p, q in zip(first, second, strict=True))
    return {"adapters": adapters, "tokens": tokens, "distinct": statistics.mean(distinct),
            "diff": diff, **{name: statistics.median(v) * 1e3 for name, v in times.items()}}


def _chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for tokens in sorted({row["tokens"] for row in rows}):
        sub = [row for row in rows if row["tokens"] == tokens]
        xs = [row["adapters"] for row in sub]
        for name, style in (("vLLM CPU ops", "--"), ("loraswap", "-")):
            ax.plot(xs, [row[name] for row in sub], style, marker="o",
                    label=f"{name}, {tokens} tokens")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("adapters in play (one slot each, Zipf popularity)")
    ax.set_ylabel("LoRA work per step, ms (log)")
    ax.set_title("LoRA arithmetic of one engine step")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    run(argv)


def run(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--intermediate", type=int, default=1408)
    p.add_argument("--kv-width", type=int, default=256)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--adapters", default="4,16,64,256")
    p.add_argument("--tokens", default="32,512", help="a decode step, a prefill chunk")
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="stem for .md and .png")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(args.seed)
    rows = []
    for tokens in (int(t) for t in args.tokens.split(",")):
        for adapters in (int(n) for n in args.adapters.split(",")):
            row = _measure(torch, args, adapters, tokens, g)
            rows.append(row)
            print(f"[lora_curve] {tokens} tokens, {adapters} adapters: vLLM "
                  f"{row['vLLM CPU ops']:.1f} ms, loraswap {row['loraswap']:.1f} ms",
                  flush=True)
    lines = [
        f"LoRA work per step, median of {args.steps} steps, each with a new Zipf(α={args.alpha}) "
        f"mapping; {args.layers} layers, hidden {args.hidden}, intermediate "
        f"{args.intermediate}, rank {args.rank}, one slot per adapter, {args.threads} threads.",
        "",
        "| tokens | adapters | distinct per step | vLLM CPU ops | loraswap | speed-up | "
        "loraswap vs its 4-adapter | max abs diff |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        first = next(r for r in rows if r["tokens"] == row["tokens"])
        lines.append(
            f"| {row['tokens']} | {row['adapters']} | {row['distinct']:.1f} | "
            f"{row['vLLM CPU ops']:.1f} ms | {row['loraswap']:.1f} ms | "
            f"{row['vLLM CPU ops'] / row['loraswap']:.1f}x | "
            f"{row['loraswap'] / first['loraswap']:.2f}x | {row['diff']:.1e} |")
    print("\n" + "\n".join(lines))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text("# LoRA cost curve\n\n" + "\n".join(lines) + "\n")
        _chart(rows, args.out.with_suffix(".png"))
        print(f"wrote {args.out.with_suffix('.md')} and .png")
    return rows


if __name__ == "__main__":
    main()
