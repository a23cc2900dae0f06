"""The one helper that starts a server child process: ready detection, failed starts, stopping.

A stand-in server (python's http.server with a `ready` file) keeps these fast; the real
`loraswap serve` goes through the same code in tests/server and the demo.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from loraswap.launcher import free_port, serve_command, start_process, start_serve


def test_waits_for_ready_then_stops(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "ready").write_text("ok")
    port = free_port()
    server = start_process([sys.executable, "-m", "http.server", str(port), "--bind",
                            "127.0.0.1", "--directory", str(tmp_path / "site")],
                           port=port, log=tmp_path / "logs" / "server.log", timeout=30)
    try:
        assert server.url == f"http://127.0.0.1:{port}" and server.v1 == server.url + "/v1"
        assert httpx.get(server.url + "/ready").text == "ok"
        assert server.start_seconds > 0
    finally:
        server.stop(timeout=10)
    assert server.proc.returncode is not None
    assert "GET /ready" in server.log_text()
    server.stop()  # a second stop is harmless


def test_a_server_that_exits_during_start_reports_its_log(tmp_path: Path) -> None:
    code = "import sys; print('cannot bind: no base model', flush=True); sys.exit(3)"
    with pytest.raises(RuntimeError, match=r"(?s)exited with 3.*cannot bind: no base model"):
        start_process([sys.executable, "-c", code], port=free_port(), log=tmp_path / "x.log",
                      timeout=30)


def test_a_server_that_never_gets_ready_is_stopped(tmp_path: Path) -> None:
    code = "import time; print('loading', flush=True); time.sleep(60)"
    with pytest.raises(RuntimeError, match=r"(?s)not ready after 2 s.*loading"):
        start_process([sys.executable, "-c", code], port=free_port(), log=tmp_path / "y.log",
                      timeout=2, own_group=True)


# slow: a real `loraswap serve` subprocess (imports torch and vLLM, ~15 s)
@pytest.mark.slow
def test_start_serve_runs_loraswap_serve_on_its_home(tmp_path: Path) -> None:
    """No base model in the home: `loraswap serve` refuses, and the error shows it. The
    explicit base (None: the embedded one) wins over an inherited variable."""
    assert serve_command(8123, "--max-n", "2") == [
        sys.executable, "-m", "loraswap", "serve", "--host", "127.0.0.1", "--port", "8123",
        "--no-demo", "--max-n", "2"]
    home = tmp_path / "home"
    with pytest.raises(RuntimeError, match=r"(?s)exited with 1.*no base model at "
                       + str(home / "base")):
        start_serve(home, None, timeout=60, env={"LORASWAP_BASE_MODEL": "/elsewhere"})
    assert (home / "server.log").exists()
