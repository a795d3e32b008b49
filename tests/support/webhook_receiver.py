"""A real HTTP receiver for webhook tests and the benchmark: a threading HTTP server on a
loopback port that keeps every request it gets and answers from a script."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int  # what we answered
    at: float  # time.time() when it arrived

    def json(self) -> dict:
        return json.loads(self.body)


class Receiver:
    """`statuses` are answered in order, then `default` (which a test may change); the first
    requests wait `delays` seconds each before they are answered."""

    def __init__(self, statuses: list[int] | None = None, default: int = 204,
                 delays: list[float] | None = None) -> None:
        self.script = list(statuses or [])
        self.delays = list(delays or [])
        self.default = default
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver._lock:
                    status = receiver.script.pop(0) if receiver.script else receiver.default
                    delay = receiver.delays.pop(0) if receiver.delays else 0.0
                    receiver.requests.append(Received(
                        {k.lower(): v for k, v in self.headers.items()}, body, status, time.time()))
                time.sleep(delay)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name="webhook-receiver")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def of_type(self, kind: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.json().get("type") == kind]

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
