"""Serves the web console: `/` (the single page) and `/static/...` (its files).

Everything is plain files shipped in the package (src/hostpower/web/static):
no build step, no CDN. The page talks to the REST API under /api with the
session cookie and the CSRF header (see hostpower.api.auth).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(str(resources.files("hostpower.web").joinpath("static")))

# The console needs nothing but its own origin: no inline script or style, no
# framing, no third-party anything.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # Files carry no hashed names: revalidate (ETag) so an upgrade shows at once.
    "Cache-Control": "no-cache",
}


class ConsoleStatic(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def mount_console(app: FastAPI) -> None:
    """Add the console's routes to the API application."""
    app.mount("/static", ConsoleStatic(directory=STATIC_DIR), name="console-static")

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers=SECURITY_HEADERS)

    @app.get("/index.html", include_in_schema=False)
    def index_html() -> Response:
        return RedirectResponse("/", status_code=308)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return FileResponse(STATIC_DIR / "img" / "favicon.svg", media_type="image/svg+xml",
                            headers=SECURITY_HEADERS)
