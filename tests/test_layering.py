"""The import direction between the parts, read from the source (nothing is imported).

common is a leaf; adapters, router and finetune stand on common alone (the router reaches the
registry through a duck-typed protocol); training builds on adapters; server wires router,
adapters and the engine, and never the composition root (loraswap) or training. Only
server/engine.py talks to vLLM, so a vLLM upgrade touches one module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"adapters", "common", "router", "training", "server", "loraswap", "benchmarks",
        "finetune"}
ALLOWED = {
    "common": set(),
    "adapters": {"common"},
    "router": {"common"},
    "finetune": {"common"},
    "training": {"adapters", "common"},
    "server": {"router", "adapters", "finetune", "common"},
}
VLLM_MODULES = {"server/engine.py", "server/engine_tools.py"}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level name) of every absolute import, lazy ones inside functions included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_follow_the_layers(package: str) -> None:
    allowed = ALLOWED[package] | {package}
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {name}"
             for path in _sources(package)
             for line, name in _imports(path)
             if name in OURS and name not in allowed]
    assert _sources(package), f"no sources found under {package}/"
    assert not wrong, f"{package} may import only {sorted(allowed)}:\n" + "\n".join(wrong)


def test_only_the_engine_imports_vllm() -> None:
    wrong = [f"{path.relative_to(ROOT)}:{line}"
             for package in sorted(ALLOWED)
             for path in _sources(package)
             for line, name in _imports(path)
             if name == "vllm" and path.relative_to(ROOT).as_posix() not in VLLM_MODULES]
    assert not wrong, "only the engine modules may import vllm:\n" + "\n".join(wrong)


RAY_MODULES = {"server/engine_remote.py", "server/engine_replica.py", "loraswap/scale_out.py"}


def test_only_the_scale_out_modules_import_ray() -> None:
    """Ray is the scaled-out mode's alone: the single-process server never imports it."""
    wrong = [f"{path.relative_to(ROOT)}:{line}"
             for package in sorted(ALLOWED | {"loraswap": set()})
             for path in _sources(package)
             for line, name in _imports(path)
             if name == "ray" and path.relative_to(ROOT).as_posix() not in RAY_MODULES]
    assert not wrong, "only the scale-out modules may import ray:\n" + "\n".join(wrong)
