"""Request-size limits enforced before a body is parsed.

A pure ASGI middleware: a declared ``Content-Length`` over the limit is refused at once
with 413, and a body that streams past the limit (chunked uploads, lying headers) is cut
off with the same answer, so an oversized upload never reaches the multipart parser.
The limit is exact: a body of ``limit`` bytes passes, one more byte does not.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from hear_features.api.asgi import HttpMiddleware
from hear_features.api.errors import STATUS, error_body
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hear_features.errors import PayloadTooLarge


class BodySizeLimit(HttpMiddleware):
    """Limit request bodies to ``limit_for(path)`` bytes."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        super().__init__(app)
        self.limit_for = limit_for

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limit_for(scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        seen = 0
        over = False
        started = False

        async def counting_receive() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = True
                    raise PayloadTooLarge(_message(limit))
            return message

        async def guarded_send(message: Message) -> None:
            # Once the body went over the limit, whatever the app answers (a parser's 400,
            # say) is replaced by the 413.
            nonlocal started
            if over:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _too_large(send, limit)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except PayloadTooLarge:
            if not started:
                await _too_large(send, limit)


def _message(limit: int) -> str:
    return f"request body is larger than the limit of {limit} bytes ({limit / 2**20:.1f} MiB)"


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps(error_body(PayloadTooLarge.__name__, _message(limit))).encode()
    await send(
        {
            "type": "http.response.start",
            "status": STATUS[PayloadTooLarge],
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
