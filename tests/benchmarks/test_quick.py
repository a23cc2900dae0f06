"""The benchmark harness runs end to end and produces numbers for every system (not speed).

Runs `python -m benchmarks.run --smoke`: the quick mode's shape (every system started, measured,
stopped; hot-swap; routing overhead) with 4-second measurements and 2 adapter counts, about
2 minutes on an idle 2-core machine, most of it the two vLLM engine starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = ("vllm", "loraswap", "loraswap-routed", "naive")


@pytest.mark.slow
def test_smoke_run_produces_numbers_for_every_system(embedded_base: Path, tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--base", str(embedded_base),
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    [run_dir] = [p for p in tmp_path.iterdir() if p.name != "cache"]
    results = json.loads((run_dir / "results.json").read_text())

    assert results["unavailable"] == {}
    counts = [str(c) for c in results["config"]["adapter_counts"]]
    for system in SYSTEMS:
        for count in counts:
            m = results["medians"][system][count]
            assert m["errors"] == 0, (system, count, m.get("error_kinds"))
            assert m["requests"] > 0 and m["tok_per_s"] > 0 and m["req_per_s"] > 0, (system, m)
            assert m["ttft_p95_ms"] > 0 and m["itl_p50_ms"] > 0, (system, m)

    for system in ("vllm", "loraswap"):
        hs = results["hot_swap"][system]
        assert hs["errors"] == [] and hs["trials"] >= 1, hs
        assert hs["register_to_first_token_ms"] > 0
    assert results["routing"]["pairs"] > 0 and results["routing"]["errors"] == 0
    assert {(r["adapters"], r["vs"]) for r in results["ratios"]} >= {
        (int(c), peer) for c in counts for peer in ("vllm", "naive")}
    assert all(r["tok_per_s"] > 0 for r in results["ratios"])

    assert (run_dir / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (run_dir / "results.md").read_text()
    assert "| (a) vLLM OpenAI server | 1 |" in table and "## Ratios" in table
    assert "ratios (loraswap (c) / peer):" in proc.stdout
