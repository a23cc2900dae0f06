"""Re-reading an in-memory table when a request names something it lacks.

The request path reads memory (the model catalog, the aliases, the API keys), refreshed by
the reconcile loop every `reconcile_interval`. Another process may have just written what a
request names: the CLI, or another ingress replica of a scaled-out server, whose client
expects a version or key it has just been given to work wherever its next request lands.
So a miss re-reads the table (SQL, in a worker thread) once before the 404 or 401.

Misses must not turn into a database load: re-reads run one at a time, at most one per
`gap`, and a re-read that began after a miss answers every miss before it. A client sending
unknown names or keys as fast as it can costs a few small reads a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["MissReread"]


class MissReread:
    def __init__(self, reread: Callable[[], None], gap: float = 0.05) -> None:
        self._reread = reread  # blocking: run in a worker thread
        self.gap = gap
        self.count = 0  # re-reads done
        self._lock: asyncio.Lock | None = None  # made on the loop that first needs it
        self._began = float("-inf")  # monotonic time the last re-read began

    async def after_miss(self, missed_at: float) -> None:
        """Return once a re-read that began at or after `missed_at` has finished."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._began >= missed_at:
                return  # read after the miss: what it did not find is not there
            wait = self._began + self.gap - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._began = time.monotonic()
            self.count += 1
            await asyncio.to_thread(self._reread)
