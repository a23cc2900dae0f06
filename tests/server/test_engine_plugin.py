"""What the engine plugin changes inside vLLM's processes, checked on vLLM's own classes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("vllm")

# A fresh interpreter each time: the patch is process-wide, as it is in vLLM's processes.
PROBE = """
import zmq
from vllm.distributed.device_communicators.shm_broadcast import SpinCondition
from server.engine import vllm_general_plugin
vllm_general_plugin()
ctx = zmq.Context()
reader = SpinCondition(is_reader=True, context=ctx, notify_address="inproc://probe")
writer = SpinCondition(is_reader=False, context=ctx, notify_address="inproc://probe")
print(reader.busy_loop_s, writer.busy_loop_s)
"""


def _spins(spin: str | None) -> tuple[float, float]:
    """(reader, writer) busy-poll seconds in a process whose WORKER_SPIN_ENV is `spin`."""
    from server.engine import WORKER_SPIN_ENV

    env = {k: v for k, v in os.environ.items() if k != WORKER_SPIN_ENV}
    if spin is not None:
        env[WORKER_SPIN_ENV] = spin
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         env=env, timeout=120, check=True)
    reader, writer = out.stdout.split()[-2:]
    return float(reader), float(writer)


def test_engine_replicas_shorten_the_workers_busy_poll():
    assert _spins("0.01") == (0.01, 0)


def test_a_single_engine_keeps_vllms_own_busy_poll():
    assert _spins(None) == (1, 0)
