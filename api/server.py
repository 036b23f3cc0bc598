"""How uvicorn runs the app: connection limits and a header-read timeout.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) and answers 503 past
``limit_concurrency``, but it never times out a connection that is still sending its
request headers: a client that opens a connection and sends nothing, or a byte now and
then, holds it forever, and a few hundred such connections use up
``limit_concurrency`` for everyone. :class:`HeaderTimeoutProtocol` (uvicorn's own HTTP
protocol plus a timer) closes a connection whose request headers have not all arrived
within ``header_timeout_s`` of the connection opening, or of the previous response
ending. A request whose headers did arrive is not affected (its work has budgets of its
own, :class:`~hear_features.api.worker.Worker`).

The protocol class is named to uvicorn by import path, so every worker process gets it;
it reads its timeout from ``HEAR_API_HEADER_TIMEOUT_S`` (``hear-features serve`` sets it).
With several workers it also keeps their keep-alive connections even
(:mod:`hear_features.api.balance`), and it sends each response's head and body in one
write (:class:`CoalescingTransport`).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from hear_features.api.balance import worker_table
from hear_features.api.errors import error_body
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.h11_impl import H11Protocol

try:  # uvicorn[standard] brings httptools; uvicorn alone falls back to h11, and so do we
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Fast
except ImportError:  # pragma: no cover
    _Fast = H11Protocol  # type: ignore[assignment,misc]

#: The environment variable that carries the timeout to every worker process.
HEADER_TIMEOUT_ENV = "HEAR_API_HEADER_TIMEOUT_S"
DEFAULT_HEADER_TIMEOUT_S = 10.0
#: Largest request head (request line + headers) buffered before the request is refused
#: (h11: 400 by uvicorn; httptools: 431 by :class:`HeaderTimeoutProtocol`).
MAX_HEADER_BYTES = 16 * 1024
#: End of a request head.
_HEAD_END = b"\r\n\r\n"


def header_timeout_s() -> float:
    try:
        return float(os.environ.get(HEADER_TIMEOUT_ENV, DEFAULT_HEADER_TIMEOUT_S))
    except ValueError:
        return DEFAULT_HEADER_TIMEOUT_S


class CoalescingTransport:
    """A transport that sends what one event-loop step wrote in one piece.

    uvicorn writes a response's status line and headers, then its body, each with its own
    ``write``: two system calls, and on a keep-alive connection two wake-ups of the
    client (on loopback the writer also pays for the reader's TCP work). Writes made in
    the same step of the event loop (a response that fits in one body message makes both
    in one step) are joined and written once, by a callback that runs right after that
    step; a streamed body still goes out chunk by chunk, as its chunks arrive."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Write what is held now (also called before the transport closes on its own: a
        client's half-close makes asyncio close it without a call to :meth:`close`)."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()  # what was written before close() still goes out, as with any transport
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HeaderTimeoutProtocol(_Fast):
    """uvicorn's HTTP protocol, closing connections that are slow to send headers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s = header_timeout_s()
        self._header_timer: asyncio.TimerHandle | None = None
        self._table = worker_table()
        self._counted = False
        self._peer_done = False  # the client half-closed: answer what it sent, then close
        # Bytes of the request head so far (None: in a body, or h11, which bounds heads).
        self._head_bytes: int | None = None if _Fast is H11Protocol else 0
        self._tail = b""  # the last 3 bytes received, for an end of head split in two

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        if self._table is not None:
            self._table.opened()
            self._counted = True
        self._arm_header_timer()

    def eof_received(self) -> bool | None:  # type: ignore[override]  # True: keep writing
        # The client will send nothing more (it half-closed its socket). uvicorn lets the
        # transport close at once, losing the answer to a request still being served (a
        # search in a batch); the connection stays open for writing until the last
        # request received whole is answered, then closes (a request whose body never
        # came whole is dropped, as before: its body will not come now). A response
        # already written goes out first either way.
        if isinstance(self.transport, CoalescingTransport):
            self.transport.flush()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and not cycle.more_body:
            self._peer_done = True
            if not self.pipeline:
                cycle.keep_alive = False  # closes the connection after this answer
            return True
        super().eof_received()
        return None

    def data_received(self, data: bytes) -> None:
        # httptools buffers a request head whole, however long (uvicorn bounds heads only
        # for h11): 50 MB of headers were read, held and parsed, stalling the worker.
        if self._head_bytes is not None:
            self._head_bytes += _head_part(self._tail, data)
            if self._head_bytes > MAX_HEADER_BYTES:
                self._refuse(
                    b"431 Request Header Fields Too Large",
                    "HeadersTooLarge",
                    f"the request line and headers exceed {MAX_HEADER_BYTES} bytes",
                )
                return
        self._tail = (self._tail + data[-3:])[-3:]
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._head_bytes = 0  # the next request's head starts here
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()  # the next request's headers are due from now

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        self._uncount()
        super().connection_lost(exc)

    def _uncount(self) -> None:
        if self._counted and self._table is not None:
            self._counted = False
            self._table.closed()

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        # Over the connection limit uvicorn answers with a plain-text 503; ours is JSON,
        # like every other refusal. (httptools' protocol; h11's keeps the plain one.)
        if app is service_unavailable:
            app = _json_service_unavailable
        if self._peer_done and not self.pipeline:
            cycle.keep_alive = False  # the last request of a client that half-closed
        if self._counted and cycle.keep_alive and self._table.should_shed(self.loop.time()):
            # More than this worker's share of connections: this answer says
            # "Connection: close", and the client reconnects (api.balance). It no longer
            # counts here, so that one connection leaves for each one too many.
            cycle.keep_alive = False
            self._uncount()
        super()._start_asgi_task(cycle, app)

    def send_400_response(self, msg: str) -> None:
        # A request that is not valid HTTP (a bad Content-Length, an unknown method) is
        # answered by uvicorn itself, in plain text; ours is JSON like every refusal.
        self._refuse(b"400 Bad Request", "BadRequest", f"not a valid HTTP/1.1 request: {msg}")

    def _refuse(self, status: bytes, kind: str, message: str) -> None:
        """Answer ``status`` with a JSON error body and close the connection."""
        body = json.dumps(error_body(kind, message)).encode()
        head = [b"HTTP/1.1 " + status + b"\r\n"]
        head += [
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        ]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"x-content-type-options: nosniff\r\n",
            b"cache-control: no-store\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        if not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self._header_timeout_s, self._header_timeout)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            return  # a request is being served: its headers arrived in time
        if not self.transport.is_closing():
            self.transport.close()


def _head_part(tail: bytes, data: bytes) -> int:
    """How many bytes of ``data`` belong to a request head that is not complete yet, given
    the bytes just before it (``tail``): up to the first blank line, or all of them."""
    joint = (tail + data[:3]).find(_HEAD_END)
    if joint >= 0:
        return joint + len(_HEAD_END) - len(tail)
    end = data.find(_HEAD_END)
    return len(data) if end < 0 else end + len(_HEAD_END)


_BUSY = json.dumps(
    error_body("Overloaded", "the server has too many open connections; try again shortly")
).encode()


async def _json_service_unavailable(scope: Any, receive: Any, send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_BUSY)).encode()),
                (b"retry-after", b"1"),
                (b"x-content-type-options", b"nosniff"),
                (b"cache-control", b"no-store"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _BUSY})


def uvicorn_options(header_timeout: float, max_connections: int) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``: the protocol above, a connection limit and
    a bound on request heads. Also sets :data:`HEADER_TIMEOUT_ENV` for the workers."""
    os.environ[HEADER_TIMEOUT_ENV] = str(header_timeout)
    return {
        "http": HeaderTimeoutProtocol,
        "limit_concurrency": max_connections,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "timeout_keep_alive": 5,
        "server_header": False,
    }
