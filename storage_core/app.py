"""The app factory: builds the container, registers the blueprints of the active profiles and the error handler."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from flask import Flask, Response, g, request
from flask_smorest import Api

import profiles
from storage_core.blueprints import ALL_BLUEPRINTS
from storage_core.blueprints.common import OPEN_ENDPOINTS, authenticate, install_error_handlers, reject_unsafe_text
from storage_core.blueprints.inputs import JsonLimitedRequest, check_json_body, check_request_target, view_takes_json
from storage_core.console import blp as console_blueprint
from storage_core.container import Container, build_container
from storage_core.logs import REQUEST_ID, account_when_sent, request_id_from
from storage_core.openapi import ProblemsPlugin, drop_smorest_schemas
from storage_core.settings import Settings

log = logging.getLogger(__name__)

API_TITLE = "Storage service"
API_VERSION = "1"



def start_request() -> None:
    g.started = time.perf_counter()
    REQUEST_ID.set(request_id_from(request.headers.get("X-Request-ID")))


def finish_request(response: Response) -> Response:
    """Echo the request id; count and log the request when its body has been sent (or abandoned)."""
    request_id = REQUEST_ID.get()
    response.headers["X-Request-ID"] = request_id or ""
    account_when_sent(response, route=request.url_rule.rule if request.url_rule is not None else "unmatched",
                      method=request.method, path=request.path, started=g.get("started"),
                      account=g.principal.account if "principal" in g else None, request_id=request_id)
    return response


class StorageFlask(Flask):
    """Flask, with the answer to "is this hook or view a coroutine function?" kept per function: Flask asks it
    (``inspect.iscoroutinefunction``) for every hook and the view of every request, eight times for a download."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._sync: dict[Any, Any] = {}

    def ensure_sync(self, func: Any) -> Any:
        try:
            return self._sync[func]
        except KeyError:
            made = super().ensure_sync(func)
            if len(self._sync) < 1000:  # the app's hooks, views and handlers: a bounded set
                self._sync[func] = made
            return made
        except TypeError:  # not hashable
            return super().ensure_sync(func)


class StorageApi(Api):
    """smorest's Api without its ``default`` error response: every error is documented as the problem it is
    (``storage_core.openapi``)."""

    DEFAULT_ERROR_RESPONSE_NAME = None


def create_app(default_profiles: Iterable[str] = (profiles.STORAGE,), settings: Settings | None = None,
               container: Container | None = None) -> Flask:
    """Build the WSGI app. ``STORAGE_PROFILES`` overrides ``default_profiles``."""
    settings = settings or Settings.from_env()
    active = profiles.active_profiles(default_profiles)
    if container is None:
        container = build_container(settings, active)

    app = StorageFlask("storage_core", static_folder=None)
    app.request_class = JsonLimitedRequest
    app.config.update(
        API_TITLE=API_TITLE,
        API_VERSION=API_VERSION,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
    )
    # keys may begin with "/" or hold "//": werkzeug would otherwise redirect them to another key
    app.url_map.merge_slashes = False
    app.extensions["container"] = container
    app.extensions["profiles"] = active
    plugin = ProblemsPlugin(app, OPEN_ENDPOINTS, view_takes_json)
    api = StorageApi(app, spec_kwargs={"info": {"description": f"Active profiles: {', '.join(sorted(active))}"},
                                       "extra_plugins": [plugin]})
    for blueprint in ALL_BLUEPRINTS:
        if profiles.is_active(blueprint, active):
            api.register_blueprint(blueprint)
    drop_smorest_schemas(api.spec)
    if profiles.is_active(console_blueprint, active):  # pages, not API: kept out of the OpenAPI document
        app.register_blueprint(console_blueprint)
    install_error_handlers(app)
    container.authenticator()  # a missing key stops the start here, not at the first request
    app.before_request(start_request)
    app.before_request(check_request_target)
    app.before_request(reject_unsafe_text)
    app.before_request(authenticate)
    app.before_request(check_json_body)
    app.after_request(finish_request)

    log.info("app ready with profiles %s", ", ".join(sorted(active)))
    return app


class Listeners:
    """The WSGI app of a process with two listeners: requests that arrived on the S3 listener's socket go
    to the S3 door, all others to the native app. The socket decides, never a header a client controls."""

    def __init__(self, native: Any, s3: Any, s3_bind: str, native_bind: str):
        self.native = native
        self.s3 = s3
        host, _, port = s3_bind.rpartition(":")
        self._port = int(port)
        # with both listeners on one port (different addresses), the address must tell them apart
        self._host = host.strip("[]") if native_bind.rpartition(":")[2] == port else None

    @property
    def extensions(self) -> dict[str, Any]:
        """The native app's (container, profiles, background workers): the worker hooks find them here."""
        return self.native.extensions

    def is_s3(self, environ: dict[str, Any]) -> bool:
        sock = environ.get("gunicorn.socket")
        if sock is None:
            return False
        try:
            local = sock.getsockname()
        except OSError:
            return False
        if not isinstance(local, tuple):
            return False
        return local[1] == self._port and (self._host is None or local[0] == self._host)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return (self.s3 if self.is_s3(environ) else self.native)(environ, start_response)


def create_wsgi(default_profiles: Iterable[str] = (profiles.STORAGE,), settings: Settings | None = None) -> Any:
    """The WSGI app of the service processes: the native app, and the S3 door when STORAGE_S3_BIND is set."""
    settings = settings or Settings.from_env()
    app = create_app(default_profiles, settings)
    if not settings.s3_bind:
        return app
    from storage_core.s3.door import create_s3_app
    from storage_core.services.access_keys import require_sealing

    require_sealing(settings)
    s3 = create_s3_app(app.extensions["container"], app.extensions["profiles"])
    log.info("S3 API on %s (region %s)", settings.s3_bind, settings.s3_region)
    return Listeners(app, s3, settings.s3_bind, settings.bind)
