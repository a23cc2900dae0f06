"""`loraswap serve --replicas 1 --ray-address auto`: the server on a Ray cluster it did not start.

The cluster is started the way docs/scaling.md tells an operator to (`ray start --head` with
the control-plane resource and the proxy callback in its environment); loraswap joins it,
serves, and on SIGTERM removes its application and leaves the cluster running.

The cluster uses Ray's token authentication with a token of its own in the environment, so
the test means the same thing whether or not this machine has a `~/.ray/auth_token` (which a
local `ray.init()` writes, and which silently turns token auth on for a later `ray start`).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from loraswap.cli import cli
from loraswap.launcher import start_serve
from loraswap.scale_out import CONTROL_PLANE, PROXY_CALLBACK, PROXY_CALLBACK_ENV

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="module")
def ray_cluster():
    """The environment every process that talks to the cluster needs."""
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env = {**os.environ, **auth, PROXY_CALLBACK_ENV: PROXY_CALLBACK, "RAY_worker_niceness": "0"}
    subprocess.run([RAY, "start", "--head", "--num-cpus", "2", "--resources",
                    json.dumps({CONTROL_PLANE: 1}), "--include-dashboard=false",
                    "--disable-usage-stats"], env=env, check=True, timeout=180,
                   capture_output=True)
    yield auth
    subprocess.run([RAY, "stop", "--force"], env=env, timeout=180, capture_output=True)


def test_the_server_runs_on_an_existing_cluster_and_leaves_it_running(
        ray_cluster, embedded_base, adapter_dirs, tmp_path):
    s = start_serve(tmp_path / "home", embedded_base, "--base-model-name", "loraswap-base",
                    "--replicas", "1", "--ray-address", "auto", timeout=420, own_group=True,
                    env={**ray_cluster, "LORASWAP_MAX_LORA_RANK": "8", "LORASWAP_KV_CACHE_GIB": "1",
                         "LORASWAP_MAX_MODEL_LEN": "256"})
    try:
        r = httpx.post(s.url + "/admin/adapters", json={"name": "c0",
                                                        "path": str(adapter_dirs[0])}, timeout=60)
        assert r.status_code == 201, r.text
        client = s.client()
        for model in ("loraswap-base", "c0"):
            raw = client.chat.completions.with_raw_response.create(
                model=model, max_tokens=4, messages=[{"role": "user", "content": "copy: a b"}])
            assert raw.parse().choices[0].message.content is not None
            assert [h[:4] for h in raw.headers.get_list("x-request-id")] == ["req_"]
        deadline = time.monotonic() + 10  # replicas report what they hold every 0.5 s
        while True:
            out = CliRunner().invoke(cli, ["status", "--url", s.url])
            if "c0@1" in out.output or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert out.exit_code == 0 and "1 engine replica (Ray Serve)" in out.output
        assert "c0@1" in out.output
    finally:
        s.stop(timeout=90)
    assert s.proc.returncode == 0
    # The cluster is still there, without our application.
    status = subprocess.run([RAY, "status"], env={**os.environ, **ray_cluster},
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert CONTROL_PLANE in status.stdout
