"""The HTTP side of a sagaline process: FastStream's ASGI app with prefix routes and JSON errors.

FastStream's AsgiFastStream matches exact paths only. `ServiceApp` adds routes that take every
path under a prefix (`/schemas/<type>.json`) and answers any other unknown path with a JSON 404
instead of a plain-text one, so that a client always gets a body it can parse.
"""

from __future__ import annotations

from typing import Any

from faststream.asgi import AsgiFastStream, AsgiResponse
from faststream.asgi.response import JSONResponse
from faststream.asgi.types import ASGIApp, Receive, Scope, Send

_PATH_ECHO_LIMIT = 200


def json_error(status: int, message: str, **details: Any) -> AsgiResponse:
    return JSONResponse({"error": message, **details}, status_code=status)


def request_path(scope: Scope) -> str:
    """The request's path, shortened for echoing back (it is client input)."""
    return str(scope.get("path", ""))[:_PATH_ECHO_LIMIT]


class ServiceApp(AsgiFastStream):
    """AsgiFastStream plus prefix routes; unknown paths get a JSON 404."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.prefix_routes: list[tuple[str, ASGIApp]] = []
        super().__init__(*args, **kwargs)

    def mount_prefix(self, prefix: str, route: ASGIApp) -> None:
        """Serve `prefix` itself and every path below it with `route` (exact routes win)."""
        if not prefix.endswith("/"):
            raise ValueError(f"a prefix route ends with '/': {prefix!r}")
        self.mount(prefix, route)
        self.prefix_routes.append((prefix, route))

    async def not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().not_found(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        for prefix, route in self.prefix_routes:
            if path.startswith(prefix):
                await route(scope, receive, send)
                return
        await json_error(404, "not found", path=request_path(scope))(scope, receive, send)
