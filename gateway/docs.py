"""GET /openapi.json and GET /docs: the API described and shown, offline.

The document is written once, at start-up, from the routes the gateway
serves (gateway/openapi.py). The docs page is Swagger UI, whose assets come
from the swagger-ui-py package and are served by the gateway itself.
"""

from __future__ import annotations

from pathlib import Path

import swagger_ui
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gateway import openapi
from gateway.bindings import Binding
from gateway.transcoder import Spelling

ASSETS = Path(swagger_ui.__file__).parent / "static"
PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>bxb API</title>
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
  <div id="api"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#api", deepLinking: true});</script>
</body>
</html>
"""


def routes(served: list[tuple[Binding, Spelling]]) -> list[Route | Mount]:
    described = openapi.document(served)

    async def document(request: Request) -> Response:
        return JSONResponse(described)

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE)

    return [
        Route("/openapi.json", document, methods=["GET"]),
        Route("/docs", page, methods=["GET"]),
        Mount("/docs/assets", StaticFiles(directory=ASSETS), name="docs-assets"),
    ]
