"""Readiness: the database answers and every enabled location is healthy."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from storage_core.db import transaction
from storage_core.errors import StorageError
from storage_core.models import StorageLocation
from storage_core.services.sources import PluginCache


class HealthService:
    def __init__(self, session_factory: sessionmaker[Session], plugins: PluginCache):
        self.session_factory = session_factory
        self.plugins = plugins

    def readiness(self) -> dict[str, Any]:
        checks: dict[str, str] = {}
        try:
            with transaction(self.session_factory) as session:
                session.execute(text("SELECT 1"))
                locations = list(session.scalars(select(StorageLocation).where(StorageLocation.enabled.is_(True))))
            checks["database"] = "ok"
        except Exception as exc:  # readiness reports, it does not raise
            checks["database"] = f"unavailable: {type(exc).__name__}"
            locations = []
        for location in locations:
            try:
                self.plugins.plugin_for(location).health()
                checks[f"location:{location.name}"] = "ok"
            except StorageError as exc:
                checks[f"location:{location.name}"] = f"unavailable: {exc.detail}"
            except Exception as exc:
                checks[f"location:{location.name}"] = f"unavailable: {type(exc).__name__}"
        status = "ok" if all(v == "ok" for v in checks.values()) else "unavailable"
        return {"status": status, "checks": checks}
