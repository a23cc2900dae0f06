"""Start a server as a child process on a free loopback port and wait until it is ready.

The demo, the server tests and the benchmarks all drive a real `loraswap serve` over HTTP
(the engine needs its own process tree, and a child is what an operator runs); this is the
one place that starts it, waits for `/ready`, reports a failed start with the log's tail,
and stops it with SIGTERM (the server's graceful drain) before anything harsher.
`start_process` does the same for any HTTP server command (the benchmarks' peers).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

__all__ = ["ServeProcess", "free_port", "serve_command", "start_process", "start_serve"]

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def serve_command(port: int, *args: str) -> list[str]:
    """`loraswap serve` on loopback `port`. Demo adapters are never registered: a launched
    server serves exactly what its caller registered."""
    return [sys.executable, "-m", "loraswap", "serve", "--host", LOOPBACK, "--port", str(port),
            "--no-demo", *args]


@dataclass(eq=False)
class ServeProcess:
    """A started server: where it listens, its process and its log."""

    url: str
    proc: subprocess.Popen
    log: Path
    home: Path | None = None
    base: Path | None = None
    name: str = "server"
    start_seconds: float = 0.0
    own_group: bool = False  # started in its own process group: stop() kills what is left of it
    _stopped: bool = field(default=False, repr=False)

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def client(self, **kw: Any) -> Any:
        """An OpenAI client for this server (no retries: tests and benchmarks count errors)."""
        from openai import OpenAI

        return OpenAI(base_url=self.v1, api_key=kw.pop("api_key", "unused"), max_retries=0,
                      timeout=kw.pop("timeout", 120), **kw)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM (in-flight requests drain), SIGKILL after `timeout` s. Safe to repeat."""
        if self._stopped:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.own_group:  # e.g. an engine core left behind by a killed server
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self._stopped = True


def start_process(cmd: Sequence[str], *, port: int, log: Path, ready_path: str = "/ready",
                  env: Mapping[str, str] | None = None, cwd: Path | None = None,
                  timeout: float = 300, name: str = "server", own_group: bool = False,
                  home: Path | None = None, base: Path | None = None) -> ServeProcess:
    """Run `cmd` (an HTTP server listening on loopback `port`) until `ready_path` answers 200.

    `env` is added to this process's environment. On a failed start the child is stopped
    and the error carries the log's tail. `own_group` puts the child in a process group of
    its own, so a signal meant for the caller's terminal does not reach it and `stop()` can
    remove grandchildren too.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(list(cmd), cwd=cwd, env={**os.environ, **(env or {})},
                                stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=own_group)
    server = ServeProcess(f"http://{LOOPBACK}:{port}", proc, log, home=home, base=base,
                          name=name, own_group=own_group)
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            server.stop()
            raise RuntimeError(f"{name} exited with {proc.returncode} during start; see "
                               f"{log}:\n{server.tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + ready_path, timeout=2).status_code == 200:
                server.start_seconds = time.monotonic() - started
                return server
        time.sleep(0.5)
    server.stop(timeout=10)
    raise RuntimeError(f"{name} not ready after {timeout:.0f} s; see {log}:\n{server.tail()}")


def start_serve(home: Path, base_model: Path | None = None, *args: str,
                env: Mapping[str, str] | None = None, timeout: float = 300,
                log: Path | None = None, port: int | None = None,
                own_group: bool = False) -> ServeProcess:
    """`loraswap serve` with data directory `home` and base model `base_model` (None: the
    embedded base under `home`), extra `args` flags and `env` variables (e.g. from
    `Settings.to_env()`); its log goes to `log` (default `<home>/server.log`)."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    full_env = {**(env or {}), "LORASWAP_HOME": str(home),
                "LORASWAP_BASE_MODEL": str(base_model) if base_model is not None else ""}
    return start_process(serve_command(port, *args), port=port,
                         log=log or home / "server.log", env=full_env, timeout=timeout,
                         name="loraswap", own_group=own_group, home=home, base=base_model)
