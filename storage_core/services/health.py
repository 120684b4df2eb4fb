"""Readiness: this instance can serve (the database answers and at least one enabled online location is readable).

A broken location does not make the instance unready, since downloads fail over to the other copies: it
makes it ``degraded``, in the report and in the ``storage_location_up`` gauge. The locations are checked in
parallel and for at most ``ready_timeout`` seconds, so one endpoint that does not answer cannot make a load
balancer's probe time out; a check still running from an earlier probe is waited for, not started again.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from storage_core.db import transaction
from storage_core.errors import StorageError
from storage_core.metrics import LOCATION_UP
from storage_core.models import Access, StorageLocation
from storage_core.plugin import LocationPlugin
from storage_core.services.sources import PluginCache

OK, DEGRADED, UNAVAILABLE = "ok", "degraded", "unavailable"


def probe(plugin: LocationPlugin) -> str:
    try:
        plugin.health()
    except StorageError as exc:
        return f"{UNAVAILABLE}: {exc.detail}"
    except Exception as exc:  # readiness reports, it does not raise
        return f"{UNAVAILABLE}: {type(exc).__name__}"
    return OK


class HealthService:
    def __init__(self, session_factory: sessionmaker[Session], plugins: PluginCache, timeout: float = 2.0):
        self.session_factory = session_factory
        self.plugins = plugins
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="location-health")
        self._running: dict[int, Future[str]] = {}
        self._lock = threading.Lock()
        self._gauged: set[str] = set()

    def readiness(self) -> dict[str, Any]:
        """``{"status": ok | degraded | unavailable, "checks": {"database": ..., "location:<name>": ...}}``."""
        checks: dict[str, str] = {}
        try:
            with transaction(self.session_factory) as session:
                session.execute(text("SELECT 1"))
                locations = list(session.scalars(select(StorageLocation).where(StorageLocation.enabled.is_(True))
                                                 .order_by(StorageLocation.name)))
            checks["database"] = OK
        except Exception as exc:  # readiness reports, it does not raise
            checks["database"] = f"{UNAVAILABLE}: {type(exc).__name__}"
            locations = []
        results = self._check(locations)
        checks.update({f"location:{name}": result for name, result in results.items()})
        # a nearline location (tape, Glacier) is reported, but it cannot serve a read by itself
        online = {location.name for location in locations if location.access == Access.ONLINE}
        readable = [name for name, result in results.items() if result == OK and name in online]
        if checks["database"] != OK or not readable:
            status = UNAVAILABLE
        elif any(result != OK for result in results.values()):
            status = DEGRADED
        else:
            status = OK
        return {"status": status, "checks": checks}

    def _check(self, locations: list[StorageLocation]) -> dict[str, str]:
        futures: dict[str, Future[str]] = {}
        with self._lock:
            for location in locations:
                running = self._running.get(location.id)
                if running is None or running.done():
                    running = self._running[location.id] = self._pool.submit(probe, self.plugins.plugin_for(location))
                futures[location.name] = running
        wait(futures.values(), timeout=self.timeout)
        results = {name: future.result() if future.done() else f"{UNAVAILABLE}: no answer within {self.timeout:g} s"
                   for name, future in futures.items()}
        for name, result in results.items():
            LOCATION_UP.labels(name).set(1 if result == OK else 0)
        for gone in self._gauged - set(results):  # deleted or disabled since the last probe
            with contextlib.suppress(KeyError):
                LOCATION_UP.remove(gone)
        self._gauged = set(results)
        return results
