"""Health and metrics (both profiles): liveness, readiness (database and enabled locations), Prometheus."""

from __future__ import annotations

from flask import Response
from flask_smorest import Blueprint
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from storage_core.blueprints.common import principal, problems, services
from storage_core.metrics import RestoreFigures, database_registry, registry

blp = Blueprint("health", __name__, description="Health and metrics")

READINESS = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "degraded", "unavailable"]},
        "checks": {"type": "object", "additionalProperties": {"type": "string"},
                   "description": "admins only: `database` and `location:<name>`, each `ok` or `unavailable: why`"},
    },
}


@blp.route("/health/live", methods=["GET"])
@problems()
@blp.doc(responses={"200": {"description": "the process answers", "content": {"application/json": {
    "schema": {"type": "object", "properties": {"status": {"type": "string", "enum": ["ok"]}}}}}}})
def live() -> dict:
    """The process is up."""
    return {"status": "ok"}


@blp.route("/health/ready", methods=["GET"])
@problems()
@blp.doc(responses={"200": {"description": "ready: ok, or degraded (some enabled location not readable)",
                             "content": {"application/json": {"schema": READINESS}}},
                     "503": {"description": "unavailable: the database, or no enabled location readable",
                             "content": {"application/json": {"schema": READINESS}}}})
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
@problems()
@blp.doc(responses={"200": {"description": "Prometheus text format", "content": {"text/plain": {
    "schema": {"type": "string"}}}}})
def metrics() -> Response:
    """Prometheus metrics of this process (or of all workers, in gunicorn multiprocess mode)."""
    container = services()
    figures = RestoreFigures(container.restore_service().job_counts, container.event_outbox().pending)
    return Response(generate_latest(registry()) + generate_latest(database_registry(figures)),
                    mimetype=CONTENT_TYPE_LATEST)
