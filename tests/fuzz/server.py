"""A tiny scripted HTTP/1.1 server on 127.0.0.1 for the stream and reply properties.

Every request gets the current `Script`: a status, headers and body chunks, framed with
chunked encoding, a Content-Length, read-until-close, or cut off mid-body. Real sockets, so
httpx's own framing, decoding and error mapping run as they do against a model server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tests.servers.base import Handler, Recorded, TestHTTPServer

Framing = Literal["chunked", "length", "close", "cut"]


@dataclass(frozen=True)
class Script:
    status: int = 200
    content_type: str = "text/event-stream"
    chunks: tuple[bytes, ...] = ()
    framing: Framing = "chunked"
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


class ScriptedServer(TestHTTPServer):
    def __init__(self) -> None:
        super().__init__()
        self.script = Script()
        self.served = 0

    def record(self, request: Recorded) -> None:
        self.served += 1  # thousands of requests: count them, keep none

    def route(self, handler: Handler, request: Recorded) -> None:
        script = self.script
        handler.send_response(script.status)
        handler.send_header("Content-Type", script.content_type)
        for name, value in script.headers.items():
            handler.send_header(name, value)
        if script.framing == "length":
            handler.send_header("Content-Length", str(len(script.body)))
        elif script.framing == "close":
            handler.send_header("Connection", "close")
            handler.close_connection = True
        else:
            handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        if script.framing in ("length", "close"):
            handler.wfile.write(script.body)
            handler.wfile.flush()
            return
        for chunk in script.chunks:
            handler.write_chunk(chunk)
        if script.framing == "cut":
            handler.cut()
        else:
            handler.end_chunked()
