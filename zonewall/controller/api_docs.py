"""The API documentation, served offline: Swagger UI at /docs and Redoc at /redoc from
assets vendored into the package (web/static/vendor, see its README), never a CDN.

Both describe the API (/openapi.json) and carry no data; every /api call needs a token
(Swagger UI's "Authorize" takes one).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "web" / "static"
ICON = "data:,"  # no favicon request at all


def install(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    title = f"{app.title} {app.version}"

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=title,
            swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js", swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url=ICON,
            swagger_ui_parameters={"validatorUrl": None},  # else a badge is fetched from validator.swagger.io
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=app.openapi_url or "/openapi.json", title=title,
                              redoc_js_url="/static/vendor/redoc/redoc.standalone.js", redoc_favicon_url=ICON, with_google_fonts=False)
