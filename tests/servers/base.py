"""Shared plumbing for the protocol-faithful test servers: a threaded HTTP/1.1 server on
127.0.0.1 that records every request and serves scripted faults.

Each server subclass implements `route(request) -> None` writing through the handler.
Faults are queued (`server.fault("status", times=1, status=429)`) and consumed per request,
or set over HTTP (`POST /__control/fault`) by a process that does not hold the object.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Fault:
    name: str
    times: int = 1  # -1: until cleared
    options: dict[str, Any] = field(default_factory=dict)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart
    server: TestHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    # --- request plumbing --------------------------------------------------------------------

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._read_body()
        request = Recorded(
            self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
        )
        if self.path.startswith("/__control/"):
            self._control(request)
            return
        self.server.record(request)
        try:
            self.server.route(self, request)
        except (BrokenPipeError, ConnectionResetError):
            self.server.disconnects += 1  # the client closed the connection mid-reply

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _handle

    def _control(self, request: Recorded) -> None:
        data = request.json() or {}
        if request.path == "/__control/fault":
            self.server.fault(data.pop("name"), times=data.pop("times", 1), **data)
        elif request.path == "/__control/reset":
            self.server.reset()
        self.send_json(200, {"ok": True})

    # --- responses ---------------------------------------------------------------------------

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.send_bytes(status, json.dumps(payload).encode(), "application/json", headers)

    def send_bytes(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def start_chunked(self, status: int = 200, content_type: str = "text/event-stream") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def write_chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def cut(self) -> None:
        """Drop the connection mid-body, without the terminating chunk."""
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(2)

    def stream_fault(self, fault: Fault, error_event: bytes, *, stall: float = 2.0) -> bool:
        """Act out a fault due at this point of a stream; True when it ended the stream.

        error_event: the server's own error event, then a clean end. cut: the connection
        drops. truncated: a clean end without the last event. stall: a pause (`seconds`).
        """
        if fault.name == "error_event":
            self.write_chunk(error_event)
            self.end_chunked()
            return True
        if fault.name == "cut":
            self.cut()
            return True
        if fault.name == "truncated":
            self.end_chunked()
            return True
        if fault.name == "stall":
            time.sleep(fault.options.get("seconds", stall))
        return False

    def write_events(self, events: Iterable[bytes], delay: float = 0.0) -> None:
        for i, event in enumerate(events):
            if delay and i:
                time.sleep(delay)
            self.write_chunk(event)


class TestHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.disconnects = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TestHTTPServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # dropped connections are often on purpose here

    def record(self, request: Recorded) -> None:
        with self._lock:
            self.requests.append(request)

    def fault(self, name: str, times: int = 1, **options: Any) -> None:
        with self._lock:
            self.faults.append(Fault(name, times, options))

    def take_fault(self) -> Fault | None:
        with self._lock:
            if not self.faults:
                return None
            fault = self.faults[0]
            if fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    self.faults.pop(0)
            return fault

    def remember_settings(self, names: Iterable[str]) -> None:
        """Call at the end of __init__: the attributes (a test may change them) that reset()
        puts back as they are now."""
        self._settings = {name: getattr(self, name) for name in names}

    def reset(self) -> None:
        """Back to the state the server started in: no faults, quirks or recorded requests."""
        with self._lock:
            self.requests.clear()
            self.faults.clear()
            self.disconnects = 0
        for name, value in getattr(self, "_settings", {}).items():
            setattr(self, name, value)

    @property
    def url(self) -> str:
        return self.root

    def route(self, handler: Handler, request: Recorded) -> None:
        raise NotImplementedError
