"""The workload: which adapter, which prompt, how many output tokens, and when (S-LoRA style).

Everything is drawn up front from one seed, so every system gets the same request sequence.
Popularity is uniform or Zipf over the adapters (S-LoRA's power law); arrivals are closed-loop
(C clients, each sends its next request when the last one finishes) or Poisson at a rate.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

__all__ = ["Request", "WorkloadSpec", "make_requests"]

_WORDS = ("the quick brown fox jumps over a lazy dog while seven bright stars shine above "
          "an old stone bridge near quiet water and small birds sing every morning").split()


@dataclass(frozen=True)
class WorkloadSpec:
    adapters: int = 8
    popularity: str = "uniform"  # or "zipf"
    zipf_alpha: float = 1.0
    arrival: str = "closed"  # or "poisson"
    concurrency: int = 32  # closed loop: clients
    rate: float = 20.0  # poisson: requests per second
    prompt_chars: tuple[int, int] = (32, 160)  # byte-level tokenizer: ~1 token per char
    output_tokens: tuple[int, int] = (32, 128)
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Request:
    adapter: int  # index into the adapter list
    prompt: str
    max_tokens: int
    at: float  # poisson: seconds after the start; closed loop: unused


def _prompt(rng: random.Random, chars: int) -> str:
    task = rng.choice(("copy", "upper", "reverse", "title"))
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append(rng.choice(_WORDS))
    return f"{task}: {' '.join(words)}"[: max(chars, 8)]


def _weights(spec: WorkloadSpec) -> list[float]:
    if spec.popularity == "uniform":
        return [1.0] * spec.adapters
    if spec.popularity == "zipf":
        return [1.0 / (i + 1) ** spec.zipf_alpha for i in range(spec.adapters)]
    raise ValueError(f"unknown popularity {spec.popularity!r} (uniform or zipf)")


def make_requests(spec: WorkloadSpec, count: int) -> list[Request]:
    """`count` requests drawn from `spec` with its seed: the same list on every call."""
    rng = random.Random(spec.seed)
    weights = _weights(spec)
    population = range(spec.adapters)
    out, t = [], 0.0
    for _ in range(count):
        if spec.arrival == "poisson":
            t += rng.expovariate(spec.rate)
        out.append(Request(
            adapter=rng.choices(population, weights)[0],
            prompt=_prompt(rng, rng.randint(*spec.prompt_chars)),
            max_tokens=rng.randint(*spec.output_tokens),
            at=t,
        ))
    return out
