"""The background loops of a process: restore jobs, webhook events and cache expiry.

Each storage-service worker process runs ``STORAGE_RESTORE_WORKERS`` loops (started by gunicorn's
``post_worker_init`` hook: greenlets under the gevent worker, whose threading is monkey-patched);
``storage-admin restore work`` runs them on a dedicated host. Any number of loops, processes and hosts share
the work through the database (``restore_jobs``), so stopping one loses nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

import profiles
from storage_core.container import Container

log = logging.getLogger(__name__)

# how often the first loop of a process removes expired cached copies and forgets dead leases
HOUSEKEEPING_SECONDS = 30.0


class BackgroundWorkers:
    """The loops of one process, each named ``host:pid:n`` (the owner written on the jobs it holds)."""

    def __init__(self, container: Container, count: int):
        self.container = container
        self.count = count
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.poll = container.settings().restore_poll_seconds

    def owner(self, number: int) -> str:
        return f"{socket.gethostname()}:{os.getpid()}:{number}"

    def start(self) -> None:
        for number in range(self.count):
            thread = threading.Thread(target=self.loop, args=(number,), name=f"restore-worker-{number}",
                                      daemon=True)
            thread.start()
            self.threads.append(thread)
        log.info("%d restore worker loop(s) started in process %d", self.count, os.getpid())

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        self.container.restore_wakeup().notify()
        for thread in self.threads:
            thread.join(timeout)

    def run_until_idle(self, owner: str) -> int:
        """Do every job step and delivery that is due, then return how many were done (``--once``)."""
        worker, outbox = self.container.restore_worker(), self.container.event_outbox()
        done = 0
        while worker.run_once(owner, self.stop_event) | outbox.deliver_once(owner):
            done += 1
        return done

    def loop(self, number: int) -> None:
        owner = self.owner(number)
        worker, outbox, cache = (self.container.restore_worker(), self.container.event_outbox(),
                                 self.container.restore_cache())
        wakeup = self.container.restore_wakeup()
        next_housekeeping = 0.0
        while not self.stop_event.is_set():
            busy = False
            try:
                busy = worker.run_once(owner, self.stop_event)
                busy = outbox.deliver_once(owner) or busy
                if number == 0 and time.monotonic() >= next_housekeeping:
                    next_housekeeping = time.monotonic() + HOUSEKEEPING_SECONDS
                    purged = cache.purge()
                    cache.forget_expired_leases()
                    if purged["removed"]:
                        log.info("cache: %d expired cached copies removed", purged["removed"])
            except Exception:  # the database or a location is down: try again after a pause
                log.exception("restore worker %s: step failed", owner)
                busy = False
            if not busy:
                wakeup.wait(self.poll)  # the poll, or sooner when a request of this process creates jobs


def start_for_app(app: Any) -> BackgroundWorkers | None:
    """Start the loops of a storage-profile app's process (``STORAGE_RESTORE_WORKERS``, 0: none)."""
    container: Container = app.extensions["container"]
    if profiles.STORAGE not in app.extensions["profiles"]:
        return None
    count = container.settings().restore_workers
    if count < 1:
        return None
    workers = BackgroundWorkers(container, count)
    workers.start()
    app.extensions["background_workers"] = workers
    return workers


def stop_for_app(app: Any) -> None:
    workers = app.extensions.get("background_workers") if app is not None else None
    if workers is not None:
        workers.stop()
