"""Combining concurrent work on one key into batches, with no added latency when idle.

The first caller for a key becomes the leader: it takes every request queued for the key (its own
included), runs them as one batch, hands each caller its result, then passes the lead to the first
request that queued meanwhile. While one batch runs, the next one fills up. Works with threads and
with gevent greenlets (gunicorn's gevent worker patches ``threading``).

``gather``: a leader that was handed the lead (requests were queueing: the key is busy) first waits
that long for more to join its batch, so that under load a batch costs fewer round trips per request;
a leader that found the key idle runs at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

R = TypeVar("R")

# how long a busy key's next leader waits for more requests (the download path's resolve and charge): at
# hundreds of reads per second per worker this about doubles a batch, for a millisecond more latency
BUSY_GATHER_SECONDS = 0.001


class _Slot:
    __slots__ = ("item", "lead", "ready", "result")

    def __init__(self, item: Any):
        self.item = item
        self.ready = threading.Event()
        self.lead = False
        self.result: Any = None


class Combiner(Generic[R]):
    """``submit(key, item)`` returns the result ``run(key, items)`` gave for ``item`` (or raises it)."""

    def __init__(self, run: Callable[[Any, list[Any]], list[R | Exception]], gather: float = 0.0):
        self._run = run
        self._gather = gather
        self._lock = threading.Lock()
        self._queues: dict[Hashable, list[_Slot]] = {}
        self._busy: set[Hashable] = set()

    def submit(self, key: Hashable, item: Any) -> R:
        slot = _Slot(item)
        with self._lock:
            self._queues.setdefault(key, []).append(slot)
            lead = key not in self._busy
            if lead:
                self._busy.add(key)
        if not lead:
            slot.ready.wait()
            if not slot.lead:
                return self._unwrap(slot)
            if self._gather:  # handed the lead: others are arriving, let a few more join
                time.sleep(self._gather)
        self._lead(key)
        return self._unwrap(slot)

    def _lead(self, key: Hashable) -> None:
        with self._lock:
            batch = self._queues.pop(key, [])
        try:
            try:
                results: list[Any] = self._run(key, [s.item for s in batch])
            except Exception as exc:  # the whole batch failed (database down): every caller gets the error
                results = [exc] * len(batch)
            for slot, result in zip(batch, results, strict=True):
                slot.result = result
                slot.lead = False
                slot.ready.set()
        finally:
            with self._lock:
                waiting = self._queues.get(key)
                if waiting:
                    waiting[0].lead = True
                    waiting[0].ready.set()
                else:
                    self._busy.discard(key)

    @staticmethod
    def _unwrap(slot: _Slot) -> Any:
        if isinstance(slot.result, Exception):
            raise slot.result
        return slot.result
