"""Health and metrics (both profiles): liveness, readiness (database and enabled locations), Prometheus."""

from __future__ import annotations

from flask import Response
from flask_smorest import Blueprint
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from storage_core.blueprints.common import principal, services
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
    """This instance can serve: the database answers and at least one enabled location is readable.

    ``degraded`` (still 200): some enabled location is not readable. Only admins see which checks failed
    and why (location names, endpoints, paths); anyone else, a load balancer included, sees the status."""
    report = services().health_service().readiness()
    code = 503 if report["status"] == "unavailable" else 200
    if not principal().is_admin:
        report = {"status": report["status"]}
    return report, code


@blp.route("/metrics", methods=["GET"])
@blp.doc(responses={"200": {"description": "Prometheus text format"}})
def metrics() -> Response:
    """Prometheus metrics of this process (or of all workers, in gunicorn multiprocess mode)."""
    container = services()
    figures = RestoreFigures(container.restore_service().job_counts, container.event_outbox().pending)
    return Response(generate_latest(registry()) + generate_latest(database_registry(figures)),
                    mimetype=CONTENT_TYPE_LATEST)
