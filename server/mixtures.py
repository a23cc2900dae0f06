"""Per-request adapter mixtures (`merged_adapters`): one merged version per distinct mixture.

Why a registered version: a mixture is then validated, checksummed, loaded, evicted and
logged like any adapter, and the engine never sees anything new. The version is named by
the mixture's content hash (the parents' file hashes, the weights, the method and its
options: training/merge.py), so a mixture is merged once, whoever asks, and a second request
for it is a catalog hit. Merging needs training/ (peft), which server/ does not import:
the composition root hands in `make`, which returns the version's ref or raises a refusal.
A merge that runs past `timeout` keeps running; the request gets a retryable 503 and the
next one finds the version made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from server.errors import InvalidRequest, NotReady
from server.openai_requests import MergedAdapters

__all__ = ["MIXTURE_TAG", "Mixtures", "MixtureSpec"]

MIXTURE_TAG = "mixture"


@dataclass(frozen=True)
class MixtureSpec:
    parents: tuple[tuple[str, float], ...]
    method: str
    density: float | None
    majority_sign: str


Make = Callable[[MixtureSpec], str]  # blocking: the merged version's ref


class Mixtures:
    def __init__(self, make: Make, *, base_id: str, timeout: float, refresh: Callable[[], None]
                 ) -> None:
        self.make, self.base_id, self.timeout, self.refresh = make, base_id, timeout, refresh
        self._made: dict[MixtureSpec, str] = {}
        self._locks: dict[MixtureSpec, asyncio.Lock] = {}
        self._running: dict[MixtureSpec, asyncio.Future] = {}

    async def model_for(self, model: str, mixture: MergedAdapters | None) -> str:
        """`model` as the request named it, or the mixture's version ref."""
        if mixture is None:
            return model
        if model != self.base_id:
            raise InvalidRequest(f"with merged_adapters, `model` names the base model "
                                 f"({self.base_id}); the adapters are in merged_adapters.ids",
                                 param="model")
        spec = MixtureSpec(tuple(zip(mixture.ids, mixture.weights, strict=True)),
                           mixture.merge_strategy, mixture.density,
                           mixture.majority_sign_method)
        if spec in self._made:
            return self._made[spec]
        if len(self._locks) > 10_000:  # many distinct mixtures: forget the idle locks
            self._locks = {k: v for k, v in self._locks.items() if v.locked()}
        lock = self._locks.setdefault(spec, asyncio.Lock())
        async with lock:
            if spec in self._made:
                return self._made[spec]
            running = self._running.get(spec)
            if running is None:
                running = asyncio.ensure_future(asyncio.to_thread(self._make, spec))
                self._running[spec] = running
            try:
                ref = await asyncio.wait_for(asyncio.shield(running), self.timeout)
            except TimeoutError:
                raise NotReady(f"the mixture is still being merged (over {self.timeout:g} s); "
                               "retry shortly", code="mixture_merging") from None
            finally:
                if running.done():
                    self._running.pop(spec, None)
            if all("@" in ref_ for ref_, _ in spec.parents):  # pinned: the same forever
                self._made[spec] = ref
            return ref

    def _make(self, spec: MixtureSpec) -> str:
        ref = self.make(spec)
        self.refresh()  # the catalog learns of the version before the request resolves it
        return ref
