"""Profiles: expressions, activation from the environment, and the route table of each deployment."""

from __future__ import annotations

import pytest

import profiles
from storage_core.app import create_app
from storage_core.container import ProfileInactive
from storage_core.errors import ConfigurationError

DOWNLOADER_ROUTES = {
    ("GET", "/openapi.json"),
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/buckets/<bucket>/objects/<path:key>"),
    ("GET", "/api/v1/files/<checksum>/download"),
    ("POST", "/api/v1/files/availability"),
    ("POST", "/api/v1/files/restore"),
    ("GET", "/api/v1/buckets/<bucket>/read-quota"),
    ("GET", "/api/v1/buckets/<bucket>/read-records"),
    ("GET", "/api/v1/buckets/<bucket>/read-quota/history"),
}

STORAGE_ONLY_REQUESTS = [
    ("GET", "/api/v1/storage-locations"),
    ("POST", "/api/v1/storage-locations"),
    ("GET", "/api/v1/storage-locations/hot"),
    ("PATCH", "/api/v1/storage-locations/hot"),
    ("DELETE", "/api/v1/storage-locations/hot"),
    ("GET", "/api/v1/buckets"),
    ("POST", "/api/v1/buckets"),
    ("GET", "/api/v1/buckets/bucket"),
    ("PATCH", "/api/v1/buckets/bucket"),
    ("DELETE", "/api/v1/buckets/bucket"),
    ("PUT", "/api/v1/buckets/bucket/objects/a/key"),
    ("DELETE", "/api/v1/buckets/bucket/objects/a/key"),
    ("GET", "/api/v1/buckets/bucket/objects"),
    ("GET", "/api/v1/files/" + "0" * 64),
    ("POST", "/api/v1/files/" + "0" * 64 + "/copies"),
    ("DELETE", "/api/v1/files/" + "0" * 64 + "/copies/hot"),
    ("POST", "/api/v1/buckets/bucket/objects/a/key/presign"),
]


@pytest.mark.parametrize("expression,active,expected", [
    (None, {"downloader"}, True),
    ("storage", {"storage"}, True),
    ("storage", {"downloader"}, False),
    ("!downloader", {"storage"}, True),
    ("!downloader", {"downloader"}, False),
    ("!downloader", {"storage", "downloader"}, False),
    ("storage, downloader", {"downloader"}, True),
    ("!storage, downloader", {"storage"}, False),
])
def test_expressions(expression, active, expected):
    assert profiles.matches(expression, frozenset(active)) is expected


def test_environment_overrides_the_bootstrap():
    assert profiles.active_profiles(["storage"], {"STORAGE_PROFILES": "downloader"}) == {"downloader"}
    assert profiles.active_profiles(["storage"], {"STORAGE_PROFILES": " storage , downloader "}) == {
        "storage", "downloader"}
    assert profiles.active_profiles(["downloader"], {}) == {"downloader"}


def test_unknown_profile_stops_the_start(settings, monkeypatch):
    monkeypatch.setenv("STORAGE_PROFILES", "storage,uploader")
    with pytest.raises(ConfigurationError, match=r"STORAGE_PROFILES: unknown profile.*uploader"):
        create_app(settings=settings)
    with pytest.raises(ConfigurationError):
        profiles.profile("nonsense")


def test_unknown_profile_stops_the_service_command(monkeypatch, capsys):
    from bootstrap_downloader.__main__ import main

    monkeypatch.setenv("STORAGE_PROFILES", "downloadr")
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    assert "STORAGE_PROFILES: unknown profile(s) downloadr" in capsys.readouterr().err


def routes(app) -> set[tuple[str, str]]:
    return {(method, rule.rule) for rule in app.url_map.iter_rules()
            for method in rule.methods - {"HEAD", "OPTIONS"}}


def test_downloader_route_table_is_exactly_downloads_quota_health_metrics_openapi(settings, monkeypatch):
    monkeypatch.delenv("STORAGE_PROFILES", raising=False)
    app = create_app(["downloader"], settings=settings)
    assert routes(app) == DOWNLOADER_ROUTES
    storage_app = create_app(["storage"], settings=settings)
    assert routes(storage_app) > DOWNLOADER_ROUTES


@pytest.mark.parametrize("method,path", STORAGE_ONLY_REQUESTS)
def test_storage_only_paths_answer_404_in_the_downloader(settings, monkeypatch, method, path):
    monkeypatch.delenv("STORAGE_PROFILES", raising=False)
    client = create_app(["downloader"], settings=settings).test_client()
    response = client.open(path, method=method, json={})
    assert response.status_code == 404
    assert response.json["code"] == "NotFound"


def test_openapi_documents_only_the_active_profile(settings, monkeypatch):
    monkeypatch.delenv("STORAGE_PROFILES", raising=False)
    downloader = create_app(["downloader"], settings=settings).test_client().get("/openapi.json").json
    storage = create_app(["storage"], settings=settings).test_client().get("/openapi.json").json
    assert "/api/v1/buckets" not in downloader["paths"]
    assert "/api/v1/buckets" in storage["paths"]
    assert "put" in storage["paths"]["/api/v1/buckets/{bucket}/objects/{key}"]
    assert set(downloader["paths"]["/api/v1/buckets/{bucket}/objects/{key}"]) - {"parameters"} == {"get", "head"}
    assert "BucketSchema" not in downloader["components"]["schemas"]


def test_services_of_inactive_profiles_cannot_be_built(settings, engine):
    from tests.conftest import make_container

    downloader = make_container(settings, engine, frozenset({"downloader"}))
    with pytest.raises(ProfileInactive):
        downloader.object_service()
    assert downloader.download_service() is not None
