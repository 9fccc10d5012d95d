"""The connection layer of the server (mmrole.serve): uvicorn's HTTP/1.1 server (h11) with the limits it lacks.

Measured on uvicorn 0.54 (h11), with a client per case: a connection that never sends a byte stays open
(uvicorn arms no timer before the first request); one that sends a request head a byte every 0.3 s was
still open after 11 s (each byte is welcome, no deadline covers the head); with `limit_concurrency` N, N
idle connections make every real request get a plain-text 503 and are themselves not closed; h11's head
limit (h11_max_incomplete_event_size) only bounds a head still incomplete, so a 40 kB head arriving in one
read is accepted. So:

- `GuardedH11Protocol` (uvicorn's H11Protocol, given to uvicorn as its `http` protocol) closes a connection
  whose request head is not complete within `header_timeout` seconds of the connection's start (or of the
  end of its previous answer), however it trickles; it answers 408 first. Connections beyond
  `max_connections` get a 503 and are closed (after REFUSAL_LINGER_SECONDS, so that the client can read the
  503), so idle ones cannot pile up file descriptors
  (uvicorn's limit_concurrency keeps them open; it is therefore not used). Unparsable requests get a JSON
  400 (uvicorn's is plain text). Everything else is uvicorn's: the bound on a head being buffered
  (h11_max_incomplete_event_size), the idle keep-alive timeout, chunked responses, 100-continue.
- `HttpGuard` (an ASGI wrapper around the application) answers 505 to any HTTP version but 1.0/1.1 and 431
  to a head larger than max_header_bytes, closes the connection after any answer that left a request body
  unread (uvicorn would otherwise read and discard it with no deadline), logs one access line per request
  (499 when the client left first), and logs an unexpected error once (the application has answered 500).
The body deadline is the application's (mmrole.serve reads bodies under `body_timeout`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Dict, List, Optional, Tuple

from uvicorn.protocols.http.h11_impl import H11Protocol

from .api import error_body

logger = logging.getLogger("mmrole.serve")

CLIENT_CLOSED = 499  # nginx's code for "the client closed the connection before the answer"
SUPPORTED_HTTP_VERSIONS = ("1.0", "1.1")  # h11 parses any n.m; answered as HTTP/1.1
# File descriptors kept beyond max_connections (model files, logs, the listening socket, threads).
RESERVED_FILE_DESCRIPTORS = 128
# After a refusal written outside a request cycle, the connection reads (and drops) what the client still
# sends for this long before closing: closing with unread data would reset the connection, and a reset can
# destroy the refusal before the client reads it.
REFUSAL_LINGER_SECONDS = 1.0


def error_bytes(status: int, message: str, *, code: Optional[str] = None, type: str = "invalid_request_error") -> bytes:
    """A complete HTTP/1.1 error response with an OpenAI-shaped body that closes the connection (written
    straight to a transport, for answers outside a request/response cycle)."""
    body = json.dumps(error_body(message, type=type, code=code)).encode("utf-8")
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode("ascii") + body


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    header_timeout: float


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a request-head deadline and a connection cap (see the module doc).
    Give it to uvicorn as `http=functools.partial(GuardedH11Protocol, limits=...)`."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._head_deadline: Optional[asyncio.TimerHandle] = None
        self._cycle_seen = None  # the request whose head was last seen complete
        self._refused = False  # an error was written outside a cycle: drop input until the connection closes

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._close_with(error_bytes(503, "the server has too many open connections; retry shortly",
                                         code="overloaded", type="server_error"))
            return
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        self._note_request_head()

    def on_response_complete(self) -> None:
        self._arm_head_deadline()  # the next request's head has header_timeout from now
        super().on_response_complete()  # may start a pipelined request
        self._note_request_head()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self._close_with(error_bytes(400, "the request is not valid HTTP/1.1", code="invalid_http"))

    def _note_request_head(self) -> None:
        if self.cycle is not None and self.cycle is not self._cycle_seen:
            self._cycle_seen = self.cycle
            self._disarm()

    def _arm_head_deadline(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self._head_deadline = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being answered (its head arrived)
        logger.debug("%s: no complete request head within %ss; closed", self.client, self.limits.header_timeout)
        self._close_with(error_bytes(408, f"no complete request head within {self.limits.header_timeout:g} s",
                                     code="request_timeout"))

    def _close_with(self, response: bytes) -> None:
        """Write a complete response, end our side of the connection, and close it after the linger."""
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self._disarm()
        self.transport.write(response)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(REFUSAL_LINGER_SECONDS, self.transport.close)


def _header(scope: Dict[str, Any], name: bytes) -> Optional[bytes]:
    return next((value for key, value in scope["headers"] if key == name), None)


def _head_bytes(scope: Dict[str, Any]) -> int:
    """The size of a request head as sent (request line and header lines)."""
    line = len(scope.get("method", "")) + len(scope.get("raw_path", b"")) + len(scope.get("query_string", b"")) + 12
    return line + sum(len(name) + len(value) + 4 for name, value in scope["headers"])


def _has_body(scope: Dict[str, Any]) -> bool:
    length = _header(scope, b"content-length")
    return _header(scope, b"transfer-encoding") is not None or (length is not None and length.strip() not in (b"0", b""))


class HttpGuard:
    """The ASGI wrapper of the module doc. The application may set scope["mmrole.client_gone"] = True when its
    client left before the answer (logged as 499)."""

    def __init__(self, app, max_header_bytes: int):
        self.app = app
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        state = {"status": None, "body_read": not _has_body(scope)}

        async def receive_noting_body():
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                state["body_read"] = True
            return message

        async def send_closing_if_unread(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                if not state["body_read"]:
                    message = dict(message, headers=list(message.get("headers", [])) + [(b"connection", b"close")])
            await send(message)

        try:
            if scope.get("http_version") not in SUPPORTED_HTTP_VERSIONS:
                await _send_error(send_closing_if_unread, 505, "this server speaks HTTP/1.1 only")
            elif _head_bytes(scope) > self.max_header_bytes:
                await _send_error(send_closing_if_unread, 431, f"the request head is larger than "
                                                               f"{self.max_header_bytes} bytes")
            else:
                await self.app(scope, receive_noting_body, send_closing_if_unread)
        except Exception:  # noqa: BLE001  a bug: the application has answered 500; keep the trace in our log
            logger.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
        finally:
            status = CLIENT_CLOSED if scope.get("mmrole.client_gone") else state["status"] or "-"
            client = (scope.get("client") or ("-",))[0]
            logger.info('%s "%s %s" %s %.2fs', client, scope.get("method"), scope.get("path"), status,
                        time.monotonic() - started)


async def _send_error(send, status: int, message: str) -> None:
    body = json.dumps(error_body(message)).encode("utf-8")
    headers: List[Tuple[bytes, bytes]] = [(b"content-type", b"application/json"),
                                          (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def ensure_file_descriptors(max_connections: int) -> None:
    """Raise the soft open-files limit to what max_connections needs (up to the hard limit); ValueError when
    the hard limit is too low, naming both numbers."""
    needed = max_connections + RESERVED_FILE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise ValueError(f"--max_connections {max_connections} needs {needed} open files but the limit is "
                             f"{hard} (raise `ulimit -n` or lower --max_connections)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
