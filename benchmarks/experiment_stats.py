"""The experiment statistics under simulation: false positives under peeking, and power.

    python -m benchmarks.experiment_stats [--out benchmarks/results]

Writes `<date>-sequential.json` and `<date>-sequential.png`: for 1,000 simulated A/A
experiments of 1,000 users read after every 50, the share each test has (falsely) declared
a winner by each reading; and the same for a true effect of +5 and +8 points. About 10 s.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from router.simulation import simulate_experiments

__all__ = ["main"]

CASES = [("A/A (no effect)", 0.0, 0), ("+5 points", 0.05, 1), ("+8 points", 0.08, 2)]
TESTS = [("sequential_rejected_by_peek", "sequential (mSPRT, per user)", "#1b5e20"),
         ("fixed_rejected_by_peek", "fixed-horizon z, per user, read every time", "#ef6c00"),
         ("request_level_rejected_by_peek", "request-level z (every thumb independent)", "#b00020")]


def run() -> list[dict]:
    out = []
    for label, effect, seed in CASES:
        started = time.perf_counter()
        sim = simulate_experiments(experiments=1000, users=1000, peek_every=50, effect=effect, seed=seed)
        sim["label"] = label
        out.append(sim)
        print(f"{label:>16}: sequential {sim['sequential_any_peek']:.3f}, fixed read every time "
              f"{sim['fixed_any_peek']:.3f}, fixed read once {sim['fixed_final_only']:.3f}, "
              f"request-level {sim['request_level_any_peek']:.3f}  "
              f"({time.perf_counter() - started:.1f} s)", flush=True)
    return out


def chart(sims: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sims), figsize=(5 * len(sims), 4), sharey=True)
    for ax, sim in zip(axes, sims, strict=True):
        for key, name, colour in TESTS:
            ax.plot(sim["peeks"], sim[key], label=name, color=colour, marker="o", markersize=3)
        if sim["effect"] == 0:
            ax.axhline(sim["alpha"], color="#555", linestyle="--", linewidth=1)
            ax.text(sim["peeks"][0], sim["alpha"] + 0.015, "alpha = 0.05", color="#555", fontsize=8)
        ax.set_title(sim["label"])
        ax.set_xlabel("users so far (results read every 50)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("experiments that declared a winner")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle("1,000 simulated experiments per panel, 60% positive rate, users differ in taste")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    sims = run()
    stem = args.out / f"{time.strftime('%Y-%m-%d')}-sequential"
    args.out.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(sims, indent=1) + "\n")
    chart(sims, stem.with_suffix(".png"))
    print(f"wrote {stem}.json and {stem}.png")


if __name__ == "__main__":
    main()
