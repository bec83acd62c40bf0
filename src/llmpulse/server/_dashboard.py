"""The live dashboard: the page at ``/`` and its static files at ``/static/...``.

The page is a static HTML shell; its script reads the dashboard endpoints (`_dashboard_api`) every
few seconds and draws with uPlot, vendored in ``static/vendor/uplot`` with its licence. Nothing is
fetched from another origin: the page's Content-Security-Policy allows only the server itself, so
the dashboard works offline. The shell and the static files need no API key; the API calls do when
keys are configured, and the page asks for one when an API call answers 401.

The files are found with `importlib.resources`, so they are served from the installed package (the
wheel includes everything under ``src/llmpulse``, non-Python files too).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Final

from fastapi import FastAPI
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

#: Where the page's files are, inside the installed package.
STATIC_DIR: Final = Path(str(files("llmpulse.server") / "static"))

#: The page may load and fetch only from its own origin; no inline script or style.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_PAGE_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def install_dashboard(app: FastAPI) -> None:
    """Serve the dashboard page at ``/`` and its files at ``/static`` from `app`.

    Reads the page once (a small file); blocks only for that.
    """
    page = (STATIC_DIR / "index.html").read_bytes()

    async def get_dashboard() -> Response:
        """The dashboard page (HTML). Needs no API key."""
        return Response(page, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    app.add_api_route("/", get_dashboard, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=True), name="static")
