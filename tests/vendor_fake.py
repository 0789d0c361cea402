"""What the analytics tools' fakes share (tests/baremetrics_fake.py,
tests/profitwell_fake.py): a Starlette app served by uvicorn on 127.0.0.1
(port 0) in the running event loop, every request recorded, and faults put
on the next matching requests:

- `fail(status)`: answered `status` without acting (the tool failing on its
  side, or throttling with 429), with `body` (JSON, or text when a str);
- `lose_answer()`: served (the tool acts), then the answer is held until the
  fake stops, so the caller times out: an answer lost after the work was done."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

Handler = Callable[[Request, Any], Awaitable[Response]]


@dataclass(frozen=True)
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str  # as sent, %-quoted
    query: dict[str, str]
    body: Any  # parsed JSON, None without a body
    authorization: str


@dataclass
class Fault:
    kind: str  # "fail" or "lose"
    method: str  # "" for any
    path: str  # a part of the path; "" for any
    status: int = 500
    body: Any = None
    times: int = 1


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test process keeps its own signal handlers
        yield


class FakeTool:
    """The HTTP side of a fake: subclasses list their routes as (method,
    path, handler); a handler gets the request and its parsed JSON body."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._faults: list[Fault] = []
        self._held = asyncio.Event()
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    def routes(self) -> list[tuple[str, str, Handler]]:
        raise NotImplementedError

    # -- faults and what was received

    def fail(self, status: int = 500, *, method: str = "", path: str = "", body: Any = None, times: int = 1) -> None:
        self._faults.append(Fault("fail", method, path, status, body, times))

    def lose_answer(self, *, method: str = "", path: str = "", times: int = 1) -> None:
        self._faults.append(Fault("lose", method, path, times=times))

    def received(self, method: str = "", path: str = "") -> list[Recorded]:
        """The requests received, of `method` to paths containing `path` when given."""
        return [r for r in self.requests if (not method or r.method == method) and path in r.path]

    def clear(self) -> None:
        self.requests.clear()
        self._faults.clear()

    # -- serving

    @property
    def url(self) -> str:
        assert self._socket is not None, "the fake is not started"
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    async def __aenter__(self) -> FakeTool:
        app = Starlette(routes=[Route(path, self._endpoint(h), methods=[m]) for m, path, h in self.routes()])
        # Listening before uvicorn serves: connections made meanwhile wait in the backlog.
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._server = _Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None and self._task is not None
        self._held.set()
        self._server.should_exit = True
        await self._task
        assert self._socket is not None
        self._socket.close()

    def _fault(self, request: Request) -> Fault | None:
        for fault in self._faults:
            if (not fault.method or fault.method == request.method) and fault.path in request.url.path:
                fault.times -= 1
                if fault.times == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _endpoint(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            raw = await request.body()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            self.requests.append(
                Recorded(
                    request.method,
                    request.scope["raw_path"].decode(),  # as sent: quoted
                    dict(request.query_params),
                    body,
                    request.headers.get("authorization", ""),
                )
            )
            fault = self._fault(request)
            if fault is not None and fault.kind == "fail":
                if isinstance(fault.body, str):  # not JSON: a proxy's page, or nothing
                    return Response(fault.body, fault.status, media_type="text/html")
                return JSONResponse(fault.body if fault.body is not None else {"error": "fault"}, fault.status)
            response = await handler(request, body)
            if fault is not None:  # "lose": done, but the answer never comes
                await self._held.wait()
            return response

        return serve
