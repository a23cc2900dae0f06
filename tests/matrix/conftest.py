"""The architecture matrix (training/arch_matrix.py): one real server per family, shared by
that family's tests; see matrix_support.py for why and how.
"""

from __future__ import annotations

import time

import pytest
from matrix_support import TIMINGS_KEY, prepare_rig

from loraswap.settings import Settings
from training.arch_matrix import ARCHS


@pytest.fixture(scope="session")
def matrix_timings(request: pytest.FixtureRequest) -> dict:
    return request.config.stash.setdefault(TIMINGS_KEY, {})


@pytest.fixture(scope="module", params=list(ARCHS))
def rig(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
        matrix_timings: dict):
    """One family's server and references, shared by that family's tests. Built
    checkpoints are kept in the data directory (`matrix/`), keyed by recipe, task-world text
    and library versions; servers, adapters and training runs live in temporary directories."""
    import torch

    arch = request.param
    began = time.monotonic()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    prepared = None
    try:
        prepared = prepare_rig(arch, Settings.from_env().home / "matrix",
                               tmp_path_factory.mktemp(f"matrix-{arch}"))
        prepared.timings["setup"] = round(time.monotonic() - began, 1)
        yield prepared
    finally:
        torch.set_num_threads(threads)
        if prepared is not None:
            prepared.close()
            prepared.timings["total"] = round(time.monotonic() - began, 1)
            matrix_timings[arch] = prepared.timings


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    timings = config.stash.get(TIMINGS_KEY, {})
    if timings:
        terminalreporter.section("architecture matrix, per family (seconds; counts)")
        for arch, t in timings.items():
            terminalreporter.write_line(f"{arch:8} " + "  ".join(f"{k} {v}" for k, v in t.items()))
