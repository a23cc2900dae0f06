"""Where the time goes: summarize py-spy collapsed stacks (`run --profile` writes them).

    python -m benchmarks.profile_summary bench-results/<run>/logs/profile-loraswap-8-round0.txt

Prints, per process, the share of samples by leaf function (self time) and by our own
modules (inclusive), which is what a "where does loraswap spend time vs vLLM" question needs.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from pathlib import Path

__all__ = ["summarize"]

_FRAME = re.compile(r"^(?P<func>[^ ]+) \((?P<file>[^:]+)(?::\d+)?\)$")


def _short(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    file = m["file"]
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{m['func']} ({file})"


def summarize(path: Path, top: int = 15) -> str:
    leaf: dict[str, Counter] = defaultdict(Counter)
    ours: dict[str, Counter] = defaultdict(Counter)
    totals: Counter = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        procs = [f for f in frames if f.startswith("process ")]
        proc = procs[-1].split(":", 1)[-1].strip('"')[:60] if procs else "?"
        frames = [f for f in frames if not f.startswith("process ")] or ["(idle)"]
        n = int(count)
        totals[proc] += n
        leaf[proc][_short(frames[-1])] += n
        seen = set()
        for f in frames:
            s = _short(f)
            if any(p in s for p in ("(server/", "(router/", "(adapters/", "(benchmarks/")):
                if s not in seen:
                    ours[proc][s] += n
                    seen.add(s)
    out = []
    for proc, total in totals.most_common():
        out.append(f"== {proc[:100]}: {total} samples")
        out.append("  self time:")
        out += [f"    {n / total:6.1%}  {f}" for f, n in leaf[proc].most_common(top)]
        if ours[proc]:
            out.append("  inclusive, loraswap's own code:")
            out += [f"    {n / total:6.1%}  {f}" for f, n in ours[proc].most_common(top)]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args()
    for f in args.files:
        print(f"# {f}")
        print(summarize(f, args.top))


if __name__ == "__main__":
    main()
