"""The OpenAPI document (both profiles): valid, and saying what the service really answers.

Errors are application/problem+json with the Problem schema and the statuses each route gives (no smorest
422 ``Error``), a bearer security scheme, the presign query parameters, HEAD operations and the download
response headers. That the service keeps to it is checked by schemathesis in ``tests/test_fuzz.py``.
"""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

import profiles
from storage_core.app import create_app
from storage_core.blueprints import ALL_BLUEPRINTS
from storage_core.blueprints.common import OPEN_ENDPOINTS
from tests.conftest import make_container

PROBLEM_REF = "#/components/schemas/Problem"
METHODS = ("get", "head", "post", "put", "patch", "delete")


def document(settings, engine, active: str) -> dict:
    """The document of a service of profile ``active``, whatever STORAGE_PROFILES this run has."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("STORAGE_PROFILES", raising=False)
        app = create_app([active], settings=settings, container=make_container(settings, engine, frozenset({active})))
    return app.test_client().get("/openapi.json").get_json()


def operations(doc: dict):
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


@pytest.fixture(params=["storage", "downloader"])
def doc(request, settings, engine) -> dict:
    return document(settings, engine, request.param)


def response_of(doc: dict, response: dict) -> dict:
    ref = response.get("$ref")
    return doc["components"]["responses"][ref.rsplit("/", 1)[1]] if ref else response


def test_the_document_is_valid_openapi(doc):
    validate(doc)


def test_errors_are_problems_and_never_smorest_422(doc):
    assert "Error" not in doc["components"]["schemas"]
    problem = doc["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "code"}
    for path, method, operation in operations(doc):
        responses = operation["responses"]
        assert "422" not in responses and "default" not in responses, (path, method)
        assert "400" in responses, (path, method)
        for status, response in responses.items():
            if int(status) < 400 or path == "/health/ready":
                continue
            content = response_of(doc, response)["content"]
            assert list(content) == ["application/problem+json"], (path, method, status)
            assert content["application/problem+json"]["schema"] == {"$ref": PROBLEM_REF}


EXPECTED = {
    ("/api/v1/buckets/{bucket}/objects/{key}", "get"): {400, 401, 403, 404, 409, 412, 416, 429, 503},
    ("/api/v1/buckets/{bucket}/objects/{key}", "head"): {400, 401, 403, 404, 409, 412, 416, 429, 503},
    ("/api/v1/files/{checksum}/download", "get"): {400, 401, 403, 404, 409, 412, 416, 429, 503},
    ("/api/v1/files/availability", "post"): {400, 401, 403, 413, 415, 503},
    ("/api/v1/buckets/{bucket}/read-quota", "get"): {400, 401, 403, 404, 503},
    ("/health/live", "get"): {400},
    ("/metrics", "get"): {400},
}
STORAGE_EXPECTED = {
    ("/api/v1/buckets/{bucket}/objects/{key}", "put"): {400, 401, 403, 404, 411, 413, 503, 507},
    ("/api/v1/buckets", "post"): {400, 401, 403, 409, 413, 415, 503},
    ("/api/v1/buckets/{bucket}", "delete"): {400, 401, 403, 404, 409, 503},
    ("/api/v1/storage-locations", "post"): {400, 401, 403, 409, 413, 415, 503},
    ("/api/v1/buckets/{bucket}/objects/{key}/presign", "post"): {400, 401, 403, 404, 413, 415, 501, 503},
}


def test_each_route_documents_the_statuses_it_gives(settings, engine):
    for active, expected in [("downloader", EXPECTED), ("storage", {**EXPECTED, **STORAGE_EXPECTED})]:
        doc = document(settings, engine, active)
        for (path, method), statuses in expected.items():
            responses = doc["paths"][path][method]["responses"]
            errors = {int(status) for status in responses if int(status) >= 400}
            assert errors == statuses, (active, path, method, sorted(errors))
        assert set(doc["paths"]["/health/ready"]["get"]["responses"]) == {"200", "503", "400"}


def test_retry_after_and_content_range_are_documented(doc):
    responses = doc["components"]["responses"]
    assert "Retry-After" in responses["Problem429"]["headers"]
    assert "Retry-After" in responses["Problem503"]["headers"]
    assert "Content-Range" in responses["Problem416"]["headers"]
    assert "WWW-Authenticate" in responses["Problem401"]["headers"]


def test_bearer_security_scheme(doc):
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"]}
    for path, method, operation in operations(doc):
        if path in ("/health/live", "/health/ready", "/metrics"):
            assert operation["security"] == [], path
        elif path.endswith("/download") or (path.endswith("/objects/{key}") and method in ("get", "head")):
            assert operation["security"] == [{}, {"bearer": []}], (path, method)  # anonymous reads public buckets
        else:
            assert operation["security"] == [{"bearer": []}], (path, method)


def test_downloads_document_head_headers_and_presign_parameters(doc):
    for path in ("/api/v1/buckets/{bucket}/objects/{key}", "/api/v1/files/{checksum}/download"):
        item = doc["paths"][path]
        assert "head" in item and "get" in item
        ok = item["get"]["responses"]["200"]["headers"]
        for header in ("ETag", "Last-Modified", "Accept-Ranges", "Content-Disposition", "Content-Length"):
            assert ok[header]["required"] is True, (path, header)
        assert "Content-Range" in item["get"]["responses"]["206"]["headers"]
        assert "multipart/byteranges" in item["get"]["responses"]["206"]["content"]
        assert "304" in item["get"]["responses"]
        headers = {p["name"] for p in item["get"]["parameters"] if p["in"] == "header"}
        assert {"Range", "If-Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"} <= headers
    query = {p["name"] for p in doc["paths"]["/api/v1/buckets/{bucket}/objects/{key}"]["get"]["parameters"]
             if p["in"] == "query"}
    assert query == {"X-Storage-Expires", "X-Storage-Account", "X-Storage-Signature"}


def test_every_view_declares_its_problems(settings, engine):
    """The one mechanism: a view without ``@problems(...)`` (even empty) fails here, before a client meets an
    undocumented status."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("STORAGE_PROFILES", raising=False)
        app = create_app([profiles.STORAGE], settings=settings,
                         container=make_container(settings, engine, frozenset({profiles.STORAGE})))
    api = {blueprint.name for blueprint in ALL_BLUEPRINTS}  # the console's pages are not API
    undeclared = [endpoint for endpoint, view in app.view_functions.items()
                  if endpoint.split(".")[0] in api and not hasattr(view, "__problems__")]
    assert "health.ready" in [endpoint for endpoint in app.view_functions if endpoint.split(".")[0] in api]
    assert undeclared == []
    assert "health.ready" in OPEN_ENDPOINTS


def test_a_status_without_a_problem_response_is_refused():
    from storage_core.blueprints.common import problems

    with pytest.raises(ValueError, match="418"):
        problems(404, 418)
