"""Running CPU-bound calls on real threads, off the event loop: hashing and writing an upload's bytes.

hashlib (sha256, md5) and blake3 release the GIL while they hash a large buffer, and ``os.pwrite``
releases it while the kernel copies; run on threads, they run in parallel with each other and with
the request's next socket read. Under gunicorn's gevent worker ``threading`` is monkey-patched (a
``ThreadPoolExecutor`` would make greenlets), so the calls go to the hub's pool of real threads,
whose results a greenlet waits for without blocking the loop; elsewhere (tests, the CLI, a sync
worker) to one process-wide ``ThreadPoolExecutor``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

THREADS = 4  # process-wide pool outside gevent: enough for the three calls of one upload round


class Pending(Protocol):
    def wait(self) -> Any:
        """The call's result once it has run; raises what it raised."""

    def done(self) -> bool:
        """Whether the call has finished (returned or raised)."""


class _Future:
    __slots__ = ("_future",)

    def __init__(self, future: Any):
        self._future = future

    def wait(self) -> Any:
        return self._future.result()

    def done(self) -> bool:
        return bool(self._future.done())


class _AsyncResult:
    __slots__ = ("_result",)

    def __init__(self, result: Any):
        self._result = result

    def wait(self) -> Any:
        return self._result.get()

    def done(self) -> bool:
        return bool(self._result.ready())


_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _gevent_pool() -> Any | None:
    """The gevent hub's thread pool when this process runs gevent with patched threads, else None."""
    try:
        from gevent import get_hub, monkey
    except ImportError:  # pragma: no cover - gevent is a dependency of the services
        return None
    if not monkey.is_module_patched("threading"):
        return None
    return get_hub().threadpool


def submit(function: Callable[..., Any], *args: Any) -> Pending:
    """Start ``function(*args)`` on a real thread; ``wait()`` on the result gives its value."""
    pool = _gevent_pool()
    if pool is not None:
        return _AsyncResult(pool.spawn(function, *args))
    global _executor
    if _executor is None:
        with _lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="offload")
    return _Future(_executor.submit(function, *args))


def wait_all(pending: list[Pending]) -> None:
    """Wait until every call has finished, then raise the first failure, if any.

    Even a failure or an interruption of the waiting greenlet (a timeout, a kill) waits for the
    calls still running: they use the caller's buffers and descriptors, which it frees next. A call
    takes milliseconds (one buffer), so the interruption is late by that much at most."""
    error: BaseException | None = None
    for call in pending:
        while True:
            try:
                call.wait()
            except BaseException as exc:  # re-raised below, once every call finished
                if error is None:
                    error = exc
                if not call.done():
                    continue
            break
    pending.clear()
    if error is not None:
        raise error
