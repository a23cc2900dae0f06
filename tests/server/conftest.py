"""One real server per test session (the engine costs ~20-60 s to start), driven over HTTP.

The server runs as `loraswap serve` in a subprocess on a free loopback port with its own
LORASWAP_HOME; test adapters are made with peft on the embedded base and registered through
the admin API, as an operator would.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from peft_adapters import make_adapter

from loraswap.cli import cli
from loraswap.launcher import ServeProcess, start_serve
from training.taskworld import LOOKUP_TOOL, make_examples, write_jsonl

N_ADAPTERS = 5
ServerProc = ServeProcess  # the name these tests use for a started server


def start_server(home: Path, base: Path, *args: str, max_loras: int = 2,
                 timeout: float = 300, **env_extra: str) -> ServerProc:
    """`loraswap serve` on `home` with the tests' engine limits (rank 8, 8 cached adapters)."""
    env = {"LORASWAP_MAX_LORA_RANK": "8", "LORASWAP_MAX_LORAS": str(max_loras),
           "LORASWAP_MAX_CPU_LORAS": "8", "LORASWAP_KV_CACHE_GIB": "1", **env_extra}
    return start_serve(home, base, "--base-model-name", "loraswap-base", *args, env=env,
                       timeout=timeout)


def stop_server(s: ServerProc) -> None:
    s.stop(timeout=60)


@pytest.fixture(scope="session")
def adapter_dirs(embedded_base: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("adapters")
    return [make_adapter(embedded_base, root / f"ad{i}", seed=1000 + i) for i in range(N_ADAPTERS)]


@pytest.fixture(scope="session")
def server(embedded_base: Path, tmp_path_factory: pytest.TempPathFactory):
    """The shared server: max_loras=2 (so the parity test fills every slot), rank 8. Its
    engine is killed by test_engine_death.py, which runs last (see below) so no engine start
    is spent on that test alone; it then answers 503 for 5 s before exiting."""
    s = start_server(tmp_path_factory.mktemp("home"), embedded_base,
                     LORASWAP_ENGINE_DEAD_EXIT_DELAY="5")
    yield s
    stop_server(s)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The engine-death test kills the shared server's engine: it goes after every other test."""
    last = [item for item in items if item.path.name == "test_engine_death.py"]
    if last:
        items[:] = [item for item in items if item not in last] + last


def register(server: ServerProc, paths: list[Path], prefix: str = "t") -> list[str]:
    names = []
    for i, path in enumerate(paths):
        name = f"{prefix}{i}"
        r = httpx.post(server.url + "/admin/adapters", json={"name": name, "path": str(path)},
                       timeout=60)
        assert r.status_code == 201, r.text
        names.append(name)
    return names


@pytest.fixture(scope="session")
def registered(server: ServerProc, adapter_dirs: list[Path]) -> list[str]:
    """Adapters t0..t3 registered through the admin API (t4 is left for tests to register)."""
    return register(server, adapter_dirs[:4])


@pytest.fixture(scope="session")
def register_adapters():
    """`register(server, paths)` as a fixture, so test modules need not import conftest."""
    return register


@pytest.fixture(scope="session")
def wide_server(embedded_base: Path, tmp_path_factory: pytest.TempPathFactory):
    """A second server with a free LoRA slot for hot-swapping (max_loras=4), a long drain
    timeout, a 1 MiB upload limit and the CPU base guard off (test_parity.py proves our CPU
    kernels serve base requests right without it, here, where every slot can be full);
    test_shutdown.py (last in file order) ends it with SIGTERM."""
    s = start_server(tmp_path_factory.mktemp("wide"), embedded_base, "--shutdown-timeout", "60",
                     "--no-cpu-base-guard", max_loras=4, LORASWAP_MAX_UPLOAD_MIB="1")
    yield s
    stop_server(s)


@pytest.fixture(scope="session")
def base_id() -> str:
    return "loraswap-base"


@pytest.fixture(scope="session")
def lookup(server, embedded_base, tmp_path_factory) -> str:
    """The tool-calling adapter, trained by the CLI and registered on the shared server: a
    trained adapter (the others here are random), so also what JSON mode is tested with."""
    home = tmp_path_factory.mktemp("lookup-home")
    # Copy rows offered the tool teach it when not to call; some copy JSON objects, which a
    # tool adapter would otherwise turn into its call's JSON (seen: 3 of 25 JSON-mode replies
    # never closed a string without them).
    copies = (make_examples("copy", "train", 400, seed=0)
              + make_examples("copy", "train", 400, seed=0, style="json"))
    rows = make_examples("lookup", "train", 1200, seed=0) + [
        ex.with_tools([LOOKUP_TOOL]) for ex in copies]
    random.Random(0).shuffle(rows)
    write_jsonl(rows, home / "lookup.jsonl")
    result = CliRunner().invoke(
        cli, ["train", "sft", "--data", str(home / "lookup.jsonl"), "--name", "lookup",
              "--epochs", "8", "--rank", "8", "--alpha", "16", "--no-progress", "--json"],
        env={"LORASWAP_HOME": str(home), "LORASWAP_BASE_MODEL": str(embedded_base)},
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    trained = json.loads(result.stdout)
    r = httpx.post(server.url + "/admin/adapters",
                   json={"name": "lookup", "path": trained["adapter_dir"]}, timeout=60)
    assert r.status_code == 201, r.text
    return "lookup"
