"""The built-in chat page: ``GET /`` and its files under ``/ui/``, with no build step.

The page only talks to this server (same origin). Its Content-Security-Policy
allows scripts, styles and connections from this origin alone and no inline
script, so even model text that slipped into the DOM as HTML could not run.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).with_name("static")
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def register(app: FastAPI) -> None:
    """Serve the page at ``/`` and its assets at ``/ui/``."""

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers=PAGE_HEADERS)

    app.mount("/ui", StaticFiles(directory=STATIC_DIR), name="ui")
