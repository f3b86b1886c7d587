"""Bound the size of one HTTP request to the app (gradio caps each uploaded file, not a request).

``RequestSizeLimit`` is an ASGI middleware: a request whose ``Content-Length`` is over the cap is
answered HTTP 413 before any of its body is read; a request without one (chunked) is counted as it
streams and stopped at the first chunk over the cap. Gradio's upload route writes each file to its
upload folder while the body streams; the stop is raised as starlette's ``MultiPartException``,
which that route handles by deleting the request's partial files and answering 413, so nothing of
a refused request stays on disk. ``app_kwargs(max_request_mb)`` is what ``Blocks.launch`` takes.
"""
from __future__ import annotations

from starlette.formparsers import MultiPartException
from starlette.middleware import Middleware

MB = 1024 * 1024   # gradio's unit for max_file_size ("100mb")


class RequestTooLarge(MultiPartException):
    """A streamed request body went over the cap (the message holds gradio's 413 wording)."""


class RequestSizeLimit:
    """ASGI middleware: HTTP 413 for any request whose body is over ``max_bytes`` (bytes)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, int(max_bytes)
        self.message = (f"Request size exceeded maximum allowed size of {self.max_bytes} bytes "
                        f"({self.max_bytes / MB:g} MB per request: send fewer or smaller files)")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        received, started = 0, False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise RequestTooLarge(self.message)
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except RequestTooLarge:   # a route that does not handle it itself
            if started:
                raise
            await self._refuse(send)

    async def _refuse(self, send) -> None:
        body = self.message.encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def app_kwargs(max_request_mb: float) -> dict:
    """``Blocks.launch(app_kwargs=...)`` installing ``RequestSizeLimit`` at ``max_request_mb`` MB
    (1 MB = 2**20 bytes, as gradio's ``max_file_size``)."""
    return {"middleware": [Middleware(RequestSizeLimit, max_bytes=int(max_request_mb * MB))]}
