"""A real HTTP server on 127.0.0.1 standing in for a chat's incoming webhook (no mocks)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class ChatServer:
    """What the server answers (``status``, ``body``, after ``delay`` seconds) and what it received."""

    url: str = ""
    status: int = 200
    body: bytes = b"ok"
    delay: float = 0.0
    received: list[dict[str, Any]] = field(default_factory=list)  # {"path", "headers", "json"}


@contextmanager
def chat_server() -> Iterator[ChatServer]:
    """Serve on a free loopback port; the webhook path holds a secret, as Slack's do."""
    state = ChatServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            state.received.append({"path": self.path, "headers": dict(self.headers), "json": json.loads(raw)})
            if state.delay:
                time.sleep(state.delay)
            try:
                self.send_response(state.status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(state.body)))
                self.end_headers()
                self.wfile.write(state.body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                pass

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="chat-webhook", daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/s3cr3t-token"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
