"""Health and metrics (both profiles): liveness, readiness (database and enabled locations), Prometheus."""

from __future__ import annotations

from flask import Response
from flask_smorest import Blueprint
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from storage_core.blueprints.common import services
from storage_core.metrics import RestoreFigures, database_registry, registry

blp = Blueprint("health", __name__, description="Health and metrics")


@blp.route("/health/live", methods=["GET"])
@blp.doc(responses={"200": {"description": "the process answers"}})
def live() -> dict:
    """The process is up."""
    return {"status": "ok"}


@blp.route("/health/ready", methods=["GET"])
@blp.doc(responses={"200": {"description": "ready"}, "503": {"description": "a dependency is down"}})
def ready() -> tuple[dict, int]:
    """The database answers and every enabled location is healthy."""
    report = services().health_service().readiness()
    return report, 200 if report["status"] == "ok" else 503


@blp.route("/metrics", methods=["GET"])
@blp.doc(responses={"200": {"description": "Prometheus text format"}})
def metrics() -> Response:
    """Prometheus metrics of this process (or of all workers, in gunicorn multiprocess mode)."""
    container = services()
    figures = RestoreFigures(container.restore_service().job_counts, container.event_outbox().pending)
    return Response(generate_latest(registry()) + generate_latest(database_registry(figures)),
                    mimetype=CONTENT_TYPE_LATEST)
