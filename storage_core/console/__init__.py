"""The web console (storage profile): one page and its assets, served from the package; it calls the public API only.

The page keeps the bearer token in ``sessionStorage`` and sends it in the ``Authorization`` header of
each API call; no cookie is ever set, so there is nothing for another site to ride on (no CSRF). Every
console response carries a Content-Security-Policy that allows scripts, styles and connections from
this origin only: no inline script, no ``eval``, no third-party asset (the console works offline).
"""

from __future__ import annotations

import functools
from importlib import resources

from flask import Blueprint, Response, current_app

from profiles import profile

blp = profile("storage")(Blueprint("console", __name__, url_prefix="/console", static_folder="static",
                                   static_url_path="/static"))

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
])

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # presigned links and the page's hash (bucket and key names) stay on this site
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@functools.cache
def page_template() -> str:
    return resources.files(__package__).joinpath("static/index.html").read_text(encoding="utf-8")


@blp.route("/", methods=["GET"])
def index() -> Response:
    """The console's only page; it routes by the URL's fragment."""
    settings = current_app.extensions["container"].settings()
    html = page_template().replace("{{part_size}}", str(settings.console_part_size))
    return Response(html, mimetype="text/html", headers={"Cache-Control": "no-cache"})


@blp.after_request
def secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response
