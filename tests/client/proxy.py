"""A small HTTP proxy in front of the real API, for the client tests: it forwards requests
and records them, and can be told what to do with the next ones — forward the request but
drop the connection before the answer (the client cannot know whether it was stored), or
answer a status itself (429/503 with or without `Retry-After`) without forwarding."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

#: Request headers not passed on (httpx sets its own).
HOP_HEADERS = {"host", "content-length", "connection", "accept-encoding", "keep-alive",
               "transfer-encoding"}


@dataclass(frozen=True)
class Action:
    kind: str  # "forward", "drop" (forward, then close without answering) or "answer"
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)


FORWARD = Action("forward")
DROP = Action("drop")


def answer(status: int, retry_after: str | None = None) -> Action:
    """Answer `status` with the contract's error body, without forwarding."""
    return Action("answer", status, {"Retry-After": retry_after} if retry_after else {})


@dataclass
class Seen:
    """One request the proxy received, and the service's answer to it (when forwarded)."""

    at: float
    method: str
    path: str
    body: bytes
    action: Action
    status: int | None = None
    answer: bytes | None = None

    def json(self) -> Any:
        return json.loads(self.body)

    def answer_json(self) -> Any:
        return json.loads(self.answer or b"null")


class Proxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = httpx.Client(base_url=upstream, timeout=30)
        self.actions: deque[Action] = deque()
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def then(self, *actions: Action) -> None:
        """What to do with the next requests, in order (then forward as usual)."""
        with self.lock:
            self.actions.extend(actions)

    def reset(self) -> None:
        with self.lock:
            self.actions.clear()
            self.seen.clear()

    def requests(self, path_end: str = "") -> list[Seen]:
        with self.lock:
            return [seen for seen in self.seen if seen.path.endswith(path_end)]

    def receive(self, method: str, path: str, body: bytes) -> Seen:
        with self.lock:
            action = self.actions.popleft() if self.actions else FORWARD
            seen = Seen(time.monotonic(), method, path, body, action)
            self.seen.append(seen)
        return seen

    def forward(self, seen: Seen, headers: dict[str, str]) -> httpx.Response:
        response = self.upstream.request(seen.method, seen.path, content=seen.body,
                                         headers=headers)
        seen.status, seen.answer = response.status_code, response.content
        return response

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.upstream.close()


def _handler(proxy: Proxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._handle()

        do_POST = do_PUT = do_DELETE = do_GET

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen = proxy.receive(self.command, self.path, body)
            if seen.action.kind == "answer":
                error = {"error": {"code": "QUOTA_EXCEEDED" if seen.action.status == 429
                                   else "CONNECTION_ERROR", "message": "from the test proxy",
                                   "details": {}}, "request_id": "proxy"}
                self._reply(seen.action.status, json.dumps(error).encode(), seen.action.headers)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
            response = proxy.forward(seen, headers)
            if seen.action.kind == "drop":
                self.close_connection = True  # stored, but the client never hears of it
                return
            passed = {k: v for k, v in response.headers.items() if k.lower() == "retry-after"}
            self._reply(response.status_code, response.content, passed)

        def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler
