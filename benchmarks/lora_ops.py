"""Micro-benchmark: one LoRA layer's work, vLLM's CPU punica path against loraswap's kernels.

    .venv/bin/python -m benchmarks.lora_ops                  # Llama-ish shapes of the 20m base
    .venv/bin/python -m benchmarks.lora_ops --hidden 256 --intermediate 512 --threads 1

For each layer kind (q/k/v: 3 slices, gate/up: 2, o and down: 1) and batch (a 32-token decode
step, a 512-token prefill chunk) it times `PunicaWrapperCPU.add_lora_linear` as vLLM ships
it and with server/lora_ops_cpu.py's methods, on the same inputs, checks that the outputs
agree, and prints a markdown table. Both run in this process, alternating, so the ratio is
meaningful on a shared machine even when the absolute times are not.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

__all__ = ["main", "run", "segmented_wrapper_class"]


def _call(wrapper, y0, x, a, b, widths) -> None:
    wrapper.add_lora_linear(y0.clone(), x, a, b, 1.0, widths)


def _time(fn, repeats: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def segmented_wrapper_class():
    """vLLM's PunicaWrapperCPU with loraswap's add_lora_linear and update_metadata."""
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    from server import lora_ops_cpu

    class Segmented(PunicaWrapperCPU):
        pass

    for name, method in lora_ops_cpu.fused_wrapper_methods(
            PunicaWrapperCPU.update_metadata, PunicaWrapperCPU.add_lora_linear).items():
        setattr(Segmented, name, method)
    return Segmented


def main(argv: list[str] | None = None) -> None:
    run(argv)


def run(argv: list[str] | None = None) -> list[tuple[int, str, float, float, float]]:
    """Rows (tokens, layer, vLLM us, loraswap us, max abs difference of the outputs)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--intermediate", type=int, default=1408)
    p.add_argument("--kv-width", type=int, default=256)
    p.add_argument("--slots", type=int, default=8, help="max_loras")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--adapters", type=int, default=8, help="distinct adapters in the batch")
    p.add_argument("--tokens", default="32,512")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args(argv)

    import torch
    from vllm.lora.layers import LoRAMapping
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU


    torch.set_num_threads(args.threads)

    Fused = segmented_wrapper_class()

    h, inter, kv, slots, r = args.hidden, args.intermediate, args.kv_width, args.slots, args.rank
    layers = {"q/k/v": (h, (h, kv, kv)), "o": (h, (h,)), "gate/up": (h, (inter, inter)),
              "down": (inter, (h,))}
    g = torch.Generator().manual_seed(0)
    rows = []
    for tokens in (int(t) for t in args.tokens.split(",")):
        ids = torch.randint(1, args.adapters + 1, (tokens,), generator=g).tolist()
        mapping = LoRAMapping(tuple(ids), tuple(ids), is_prefill=tokens > 64)
        wrappers = []
        for cls in (PunicaWrapperCPU, Fused):
            w = cls(max_num_batched_tokens=tokens, max_batches=tokens, device="cpu")
            w.update_metadata(mapping, list(range(1, slots + 1)), slots, 0)
            wrappers.append(w)
        for kind, (inp, widths) in layers.items():
            x = torch.randn(tokens, inp, generator=g)
            a = tuple(torch.randn(slots, 1, r, inp, generator=g) / inp ** 0.5 for _ in widths)
            b = tuple(torch.randn(slots, 1, o, r, generator=g) for o in widths)
            y0 = torch.randn(tokens, sum(widths), generator=g)
            outs = []
            for w in wrappers:
                y = y0.clone()
                w.add_lora_linear(y, x, a, b, 1.0, widths)
                outs.append(y)
            diff = float((outs[0] - outs[1]).abs().max())
            stock, ours = (_time(functools.partial(_call, w, y0, x, a, b, widths), args.repeats)
                           for w in wrappers)
            rows.append((tokens, kind, stock, ours, diff))
            print(f"[lora_ops] tokens={tokens} {kind}: vLLM {stock:,.0f} us, loraswap "
                  f"{ours:,.0f} us", flush=True)
    print(f"\nadd_lora_linear per layer, median of {args.repeats}; hidden {h}, intermediate "
          f"{inter}, {slots} slots, rank {r}, {args.adapters} adapters in the batch, "
          f"{args.threads} threads\n")
    print("| tokens | layer | vLLM CPU ops | loraswap | speed-up | max abs diff |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for tokens, kind, stock, ours, diff in rows:
        print(f"| {tokens} | {kind} | {stock:,.0f} us | {ours:,.0f} us | {stock / ours:.1f}x | "
              f"{diff:.1e} |")
    return rows


if __name__ == "__main__":
    main()
