"""A fault-injecting HTTP/1.1 proxy in front of the loopback S3 server (moto).

The faults are those a real object store shows under load: ``503 SlowDown`` throttling, other
5xx errors, connections reset before or during a response, responses that stall past the
client's read timeout, and an object that never comes back. They are chosen deterministically
from the object key and the number of GETs of that key so far, and every injection is
recorded, so a test can compare what a job reports against what was done to it, exactly.

Only object GETs are faulted (and only under ``only_under``); listings, bucket operations,
HEADs and PUTs pass through untouched. Requests go on to moto with ``http.client``, one
upstream connection per request; the client side keeps its connections alive.

Every loop is bounded in count and time: a client connection serves at most
``MAX_REQUESTS_PER_CONNECTION`` requests and is closed after ``IDLE_TIMEOUT_S`` idle; upstream
requests time out after ``UPSTREAM_TIMEOUT_S``; a stall lasts ``stall_s`` or until the proxy
closes; ``close`` shuts every open connection and joins the server thread with a timeout.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import pytest

IDLE_TIMEOUT_S = 60.0  # longer than aiobotocore's 12 s keep-alive: the client closes first
UPSTREAM_TIMEOUT_S = 60.0
MAX_REQUESTS_PER_CONNECTION = 10_000
MAX_BODY_BYTES = 64 * 2**20
MAX_CHUNKS = 100_000
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "expect",  # answered here (100 Continue) before the body is read
        "content-length",  # set from the body actually forwarded
    }
)


@dataclass(frozen=True)
class Fault:
    """What to do to the GETs of keys containing ``marker``.

    ``kind`` is the retry kind a client should count for it (``schemas.output.RETRY_KINDS``);
    ``times`` is how many of the first GETs of a key get the fault (None: all of them).
    """

    marker: str
    action: str  # error | reset | cut | stall
    kind: str
    times: int | None
    status: int = 0
    code: str = ""


FAULTS: tuple[Fault, ...] = (
    # 503 SlowDown (an S3 XML error body) on the first two GETs.
    Fault("slowdown", "error", "throttled", 2, 503, "SlowDown"),
    # 500 InternalError on the first GET.
    Fault("flaky500", "error", "server_error", 1, 500, "InternalError"),
    # TCP reset (SO_LINGER 0) right after the request, before any response byte.
    Fault("reset", "reset", "connection", 1),
    # Status, headers and half the body, then a TCP reset.
    Fault("cut", "cut", "connection", 1),
    # Nothing at all for stall_s (longer than the client's read timeout), then a close.
    Fault("stall", "stall", "timeout", 1),
    # 503 ServiceUnavailable on every GET: the object never comes back.
    Fault("dead", "error", "server_error", None, 503, "ServiceUnavailable"),
)


def fault_for(key: str, attempt: int) -> Fault | None:
    """The fault for the ``attempt``-th GET (1-based) of ``key``, or None."""
    for fault in FAULTS:
        if fault.marker in key:
            return fault if fault.times is None or attempt <= fault.times else None
    return None


@dataclass(frozen=True)
class Injection:
    """One fault done to one GET."""

    key: str  # bucket/key
    attempt: int  # the key's GET number, from 1
    fault: Fault


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with an RST instead of a FIN (SO_LINGER on, timeout 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    os.close(sock.detach())  # now, not when the handler's file objects let go of it


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: FaultProxy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    timeout = IDLE_TIMEOUT_S
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.proxy._opened(self.connection)

    def finish(self) -> None:
        self.server.proxy._closed(self.connection)
        with contextlib.suppress(OSError):  # the socket may have been reset on purpose
            super().finish()

    def handle(self) -> None:
        self.close_connection = True
        for _ in range(MAX_REQUESTS_PER_CONNECTION):
            self.handle_one_request()
            if self.close_connection or self.server.proxy.stopping.is_set():
                return

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: pytest shows failures, not every request

    def do_GET(self) -> None:
        self._proxy()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    # -- one request --------------------------------------------------------------------------

    def _proxy(self) -> None:
        body = self._read_body()
        key = self._object_key()
        fault = None
        if self.command == "GET" and key is not None:
            fault = self.server.proxy._count_get(key)
        if fault is not None and fault.action == "reset":
            self.close_connection = True
            _reset(self.connection)
            return
        if fault is not None and fault.action == "stall":
            self.server.proxy.stopping.wait(self.server.proxy.stall_s)
            self.close_connection = True
            return
        if fault is not None and fault.action == "error":
            self._send_error_xml(fault, key or "")
            return
        status, reason, headers, data = self._forward(body)
        self.send_response_only(status, reason)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        if self.command == "HEAD":
            length = next((v for n, v in headers if n.lower() == "content-length"), None)
            if length is not None:
                self.send_header("Content-Length", length)
        elif status >= 200 and status not in (204, 304):
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command == "HEAD" or not data:
            return
        if fault is not None and fault.action == "cut":
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            _reset(self.connection)
            return
        self.wfile.write(data)

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            for _ in range(MAX_CHUNKS):
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024).strip():  # trailers, then the blank line
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(1024)
            return b"".join(parts)
        length = self.headers.get("Content-Length")
        if length is None:
            return None
        if int(length) > MAX_BODY_BYTES:
            raise ValueError(f"request body of {length} bytes; the proxy takes {MAX_BODY_BYTES}")
        return self.rfile.read(int(length))

    def _object_key(self) -> str | None:
        """``bucket/key`` of a path-style object request under ``only_under``, else None."""
        parts = urlsplit(self.path)
        bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
        if not bucket or not key or not key.startswith(self.server.proxy.only_under):
            return None
        return f"{bucket}/{key}"

    def _forward(self, body: bytes | None) -> tuple[int, str, list[tuple[str, str]], bytes]:
        host, port = self.server.proxy.upstream
        conn = http.client.HTTPConnection(host, port, timeout=UPSTREAM_TIMEOUT_S)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, resp.getheaders(), data
        finally:
            conn.close()

    def _send_error_xml(self, fault: Fault, key: str) -> None:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{fault.code}</Code><Message>injected {fault.marker} fault</Message>"
            f"<Key>{key}</Key><RequestId>fault-proxy</RequestId></Error>"
        ).encode()
        self.send_response_only(fault.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class FaultProxy:
    """The proxy, serving on a free 127.0.0.1 port until ``close``; a context manager."""

    def __init__(self, upstream_url: str, stall_s: float = 10.0, only_under: str = "") -> None:
        upstream = urlsplit(upstream_url)
        self.upstream = (upstream.hostname or "127.0.0.1", upstream.port or 80)
        self.stall_s = stall_s
        self.only_under = only_under
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._gets: Counter[str] = Counter()
        self._injections: list[Injection] = []
        self._connections: set[socket.socket] = set()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    # -- what was done ------------------------------------------------------------------------

    def gets(self, key: str) -> int:
        """Object GETs of ``bucket/key`` seen so far (faulted or not)."""
        with self._lock:
            return self._gets[key]

    def injections(self) -> list[Injection]:
        with self._lock:
            return list(self._injections)

    def injected_by_key(self) -> dict[str, Counter[str]]:
        """Per ``bucket/key``, faults injected by retry kind."""
        out: dict[str, Counter[str]] = {}
        for injection in self.injections():
            out.setdefault(injection.key, Counter())[injection.fault.kind] += 1
        return out

    # -- server side --------------------------------------------------------------------------

    def _count_get(self, key: str) -> Fault | None:
        with self._lock:
            self._gets[key] += 1
            fault = fault_for(key, self._gets[key])
            if fault is not None:
                self._injections.append(Injection(key, self._gets[key], fault))
            return fault

    def _opened(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.add(sock)

    def _closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.discard(sock)

    def close(self) -> None:
        """Stop serving, wake stalls, shut open connections, join the server thread."""
        self.stopping.set()
        self._server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):  # already closed, or reset on purpose
                sock.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def s3_fault_proxy(s3_endpoint: str) -> Iterator[FaultProxy]:
    """A ``FaultProxy`` in front of the moto server, faulting keys under ``photos/``."""
    with FaultProxy(s3_endpoint, stall_s=10.0, only_under="photos/") as proxy:
        yield proxy
