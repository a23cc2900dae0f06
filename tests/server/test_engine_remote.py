"""The ingress's side of the engine replicas, against a stand-in for a Ray Serve handle:
how long a request may wait for a busy cluster (the real cluster: test_scale_out.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from server.engine_remote import RemoteEngine
from server.errors import QueueTimeout, describe


class _Call:
    """One handle call: its outputs come after `delay` seconds (None: never)."""

    def __init__(self, outputs: list[str], delay: float | None) -> None:
        self.outputs, self.delay, self.cancelled = list(outputs), delay, False

    def __aiter__(self):
        return self

    async def __anext__(self) -> str:
        if self.delay is None:
            await asyncio.Event().wait()
        await asyncio.sleep(self.delay)
        self.delay = 0.0
        if not self.outputs:
            raise StopAsyncIteration
        return self.outputs.pop(0)

    def __await__(self):
        return self.__anext__().__await__()

    def cancel(self) -> None:
        self.cancelled = True


class _Handle:
    def __init__(self, delay: float | None) -> None:
        self.delay, self.calls = delay, []
        self.generate, self.prepare = self, self

    def options(self, **_):
        return self

    def remote(self, *_):
        call = _Call(["one", "two"], self.delay)
        self.calls.append(call)
        return call


def _engine(delay: float | None, queue_timeout: float) -> tuple[RemoteEngine, _Handle]:
    handle = _Handle(delay)
    return RemoteEngine(handle, None, max_loras=4, max_cpu_loras=8,
                        queue_timeout=queue_timeout), handle


async def _outputs(engine: RemoteEngine) -> list[str]:
    return [out async for out in engine.generate("req_1", [1, 2], None, None)]


def test_a_request_that_gets_output_in_time_streams_all_of_it():
    engine, _ = _engine(delay=0.05, queue_timeout=2.0)
    assert asyncio.run(_outputs(engine)) == ["one", "two"]
    assert engine.queue_timeouts == 0


def test_a_request_no_replica_begins_in_time_is_cancelled_with_a_retryable_503():
    engine, handle = _engine(delay=None, queue_timeout=0.2)

    async def run() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(QueueTimeout) as caught:
            await _outputs(engine)
        status, body = describe(caught.value)
        assert (status, body["error"]["code"]) == (503, "queue_timeout")
        return loop.time() - started

    took = asyncio.run(run())
    assert 0.2 <= took < 2.0
    assert [c.cancelled for c in handle.calls] == [True]  # dropped where it waited
    assert engine.queue_timeouts == 1


def test_loading_an_adapter_for_a_stream_is_bounded_the_same_way():
    engine, handle = _engine(delay=None, queue_timeout=0.2)
    with pytest.raises(QueueTimeout):
        asyncio.run(engine.prepare(SimpleNamespace(ref="a@1")))
    assert handle.calls[0].cancelled


def test_no_timeout_waits_for_as_long_as_it_takes():
    engine, _ = _engine(delay=0.3, queue_timeout=0.0)
    assert asyncio.run(_outputs(engine)) == ["one", "two"]


class _Remote:
    """`handle.method.remote(...)` over a plain object's coroutine method."""

    def __init__(self, target, fail: list[bool]) -> None:
        self.target, self.fail = target, fail

    def __getattr__(self, name: str):
        method = getattr(self.target, name)

        async def call(*args):
            if self.fail[0]:
                raise ConnectionError("the cluster state is restarting")
            return await method(*args)

        return SimpleNamespace(remote=call)


def test_of_two_ingresses_exactly_one_runs_the_experiment_decisions():
    from server.cluster_state import ClusterState

    fail = [False]
    state = _Remote(ClusterState(), fail)
    a, b = (RemoteEngine(_Handle(0.0), state, max_loras=4, max_cpu_loras=8, ingress=n)
            for n in ("a", "b"))

    async def run():
        for engine in (a, b, a, b):
            await engine.refresh()
        leads = (a.leads, b.leads)
        fail[0] = True  # a beat that fails is a lease not confirmed
        with pytest.raises(ConnectionError):
            await a.refresh()
        return leads, a.leads

    assert asyncio.run(run()) == ((True, False), False)
    assert [(i["ingress"], i["leader"]) for i in b.ingresses] == [("a", True), ("b", False)]
    # Either ingress's /metrics shows both, and which leads.
    from server.metrics import Metrics

    metrics = Metrics()
    metrics.show_ingresses(b.ingresses)
    text = metrics.render().decode()
    assert 'loraswap_ingress_leader{ingress="a"} 1.0' in text
    assert 'loraswap_ingress_leader{ingress="b"} 0.0' in text
