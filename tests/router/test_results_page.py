"""The results page renders in headless Chromium and the chart is drawn (pixels checked)."""

from __future__ import annotations

import dataclasses
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from router import FeedbackIn, RequestRecord, Router
from router.results_page import COLOURS, DECISION_WORDS, render_results_page

DAY = 86400.0
T0 = 1_780_000_000.0


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "chromium is required: apt-get install -y chromium"
    return path


def _screenshot(html: str, tmp_path: Path) -> Image.Image:
    tmp_path.mkdir(parents=True, exist_ok=True)
    page = tmp_path / "results.html"
    page.write_text(html, encoding="utf-8")
    png = tmp_path / "shot.png"
    subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={png}", "--window-size=1200,900", page.as_uri()],
        check=True, capture_output=True, timeout=120)
    return Image.open(png).convert("RGB")


def _count(image: Image.Image, colour: str, tolerance: int = 12) -> int:
    target = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    data = image.tobytes()
    return sum(1 for i in range(0, len(data), 3)
               if all(abs(data[i + k] - target[k]) <= tolerance for k in range(3)))


def _fill(router: Router) -> None:
    rng = random.Random(3)
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)])
    router.start("bot")
    base = router.route("bot", "x")
    for i in range(600):
        variant = ("support@1", "support@2")[i % 2]
        ts = T0 + rng.uniform(0, 5 * DAY)
        route = dataclasses.replace(base, variant=variant, target=variant, unit=f"u{i}")
        router.log_request(RequestRecord(request_id=f"r{i}", model="bot", served=variant,
                                         route=route, ts=ts, latency_ms=10.0))
        p = 0.5 if variant == "support@1" else 0.65
        router.record_feedback(FeedbackIn(request_id=f"r{i}",
                                          thumb="up" if rng.random() < p else "down"),
                               now=ts + rng.uniform(0, 3600))


@pytest.mark.slow
def test_results_page_renders_a_chart_in_chromium(router: Router, tmp_path: Path):
    empty = router.create(alias="empty", variants=[("support@1", 1), ("support@2", 1)])
    _fill(router)
    results = router.results("bot")
    series = results["series"]
    assert series["bin"] in ("6 hours", "day", "hour") and len(series["variants"]["support@1"]) > 4
    html = render_results_page(results)
    decision = results["decisions"]["support@2"]
    assert '<td class="decision' in html and DECISION_WORDS[decision] in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")  # no network
    shot = _screenshot(html, tmp_path / "full")
    drawn = [_count(shot, c) for c in COLOURS[:2]]
    assert all(n > 800 for n in drawn), drawn  # lines, points and whiskers of both variants
    # the same check on a page with no feedback finds no chart: it can fail
    blank = _screenshot(render_results_page(router.results(empty.name)), tmp_path / "empty")
    assert [_count(blank, c) for c in COLOURS[:2]] == [0, 0]
