"""End-to-end delivery fixtures: real worker and scheduler processes, a real webhook server.

The API runs in-process (the `tenant` fixture's Flask client); workers and the scheduler run
as subprocesses configured through the environment from the `settings` fixture, against the
same PostgreSQL database and Redis namespace. Webhooks go to a threaded HTTP server on
127.0.0.1 that records every request and answers as each test tells it to.

Every test here runs twice: on a single Redis, and on a Redis Cluster of 3 masters with a
replica each (`tests.cluster`), through the same `settings` (`REDIS_CLUSTER_NODES` set);
those marked `single_redis` (what they check does not depend on how Redis is deployed: a
handler kind, an address check, an API crash) run on the single Redis only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from broker.connection import connect
from broker.keys import Keys
from mq.settings import Settings
from publishing.writer import GroupWriter
from tests.conftest import TenantHandle
from tests.processes import wait_until_up

ROOT = Path(__file__).resolve().parents[2]
MQ = Path(sys.executable).parent / "mq"
pytestmark = pytest.mark.e2e


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def attempt(self) -> int:
        return int(self.headers["x-mq-attempt"])


@dataclass
class Webhook:
    """The recording webhook server. `script(path, [500, 500])` makes the next two requests
    to `path` answer 500 (then 200); `always(path, 404)` answers 404 for good."""

    port: int
    requests: list[Request] = field(default_factory=list)
    scripts: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    fixed: dict[str, int] = field(default_factory=dict)
    delay_s: dict[str, float] = field(default_factory=dict)
    #: path -> called with each request before it is answered (e.g. to kill a worker).
    on_request: dict[str, Callable[[Request], None]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, statuses: list[int]) -> None:
        with self.lock:
            self.scripts[path] = list(statuses)

    def always(self, path: str, status: int) -> None:
        with self.lock:
            self.fixed[path] = status

    def answer(self, path: str) -> int:
        with self.lock:
            if self.scripts.get(path):
                return self.scripts[path].pop(0)
            return self.fixed.get(path, 200)

    def received(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def wait_for(self, path: str, count: int, timeout: float = 30.0) -> list[Request]:
        """Wait until `path` got at least `count` requests; returns them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received(path)
            if len(got) >= count:
                return got
            time.sleep(0.02)
        got = self.received(path)
        raise AssertionError(f"{path}: {len(got)} of {count} requests after {timeout}s")

    def settle(self, path: str, quiet_s: float = 1.0, timeout: float = 30.0) -> list[Request]:
        """Wait until `path` got no request for `quiet_s`; returns every request."""
        deadline = time.monotonic() + timeout
        seen, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            count = len(self.received(path))
            if count != seen:
                seen, since = count, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                break
            time.sleep(0.05)
        return self.received(path)


def _handler_class(hook: Webhook) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            request = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                              time.time())
            callback = hook.on_request.get(self.path)
            if callback is not None:
                callback(request)
            delay = hook.delay_s.get(self.path)
            if delay:
                time.sleep(delay)
            with hook.lock:
                hook.requests.append(request)
            status = hook.answer(self.path)
            reply = json.dumps({"status": status}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextlib.contextmanager
def webhook_server() -> Iterator[Webhook]:
    """The recording webhook server on a free loopback port, for the block."""
    hook = Webhook(port=0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(hook))
    server.daemon_threads = True
    # A worker killed mid-request leaves a broken pipe: expected here, not worth a traceback.
    server.handle_error = lambda *_args: None  # type: ignore[method-assign]
    hook.port = server.server_address[1]
    # Polled often, so that `shutdown()` returns at once rather than after up to half a second
    # (the default poll interval), at the end of every test that has a webhook.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(name="settings", scope="session", params=["redis", "cluster"])
def on_each_redis(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Settings]:
    """The run's settings, on a single Redis or on the run's Redis Cluster (whose in-process
    publishers stop before the cluster does). A test module elsewhere imports it to run its
    tests on both too."""
    if request.param == "redis":
        yield settings
        return
    cluster = request.getfixturevalue("redis_cluster")
    yield dataclasses.replace(settings, redis_cluster_nodes=tuple(cluster.nodes))
    GroupWriter.stop_all()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    with webhook_server() as hook:
        yield hook


class Processes:
    """Worker and scheduler subprocesses of one test; all stopped at teardown."""

    def __init__(self, settings: Settings, tmp: Path) -> None:
        self.settings = settings
        self.env = {**os.environ, **settings.as_environ(), "LOG_FORMAT": "text",
                    "MQ_WEBHOOK_ALLOW_PRIVATE": "true", "PYTHONUNBUFFERED": "1"}
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.redis = connect(settings)
        self.keys = Keys.of(settings)

    def _start(self, command: str, *args: str, env: dict[str, str] | None = None
               ) -> subprocess.Popen[bytes]:
        """`mq <command>`: the Procfile's process, through the installed console script."""
        log = open(self.tmp / f"{command}-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([str(MQ), command, *args], cwd=ROOT,
                                env={**self.env, **(env or {})},
                                stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def worker(self, *, threads: int = 8, wait: bool = True, extra: tuple[str, ...] = (),
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc = self._start("worker", "--threads", str(threads), *extra, env=env)
        if wait:
            self.wait_ready(proc, "worker")
        return proc

    def api(self, port: int) -> subprocess.Popen[bytes]:
        """`mq api` (gunicorn, two workers) on `port`, once it answers."""
        proc = self._start("api", env={"PORT": str(port), "WEB_CONCURRENCY": "2"})
        wait_until_up(f"http://127.0.0.1:{port}/api/v1/mq/health")
        return proc

    def scheduler(self) -> subprocess.Popen[bytes]:
        proc = self._start("scheduler")
        self.wait_ready(proc, "scheduler")
        return proc

    def beats(self, kind: str) -> list[dict[str, Any]]:
        raw = self.redis.hgetall(f"{self.settings.redis_namespace}:procs")
        return [b for b in map(json.loads, raw.values()) if b["kind"] == kind]

    def wait_ready(self, proc: subprocess.Popen[bytes], kind: str, timeout: float = 30) -> None:
        """Wait for the process's first heartbeat (it beats once it is serving)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"{kind} exited with {proc.returncode}:\n{self.logs()}")
            if any(b["pid"] == proc.pid for b in self.beats(kind)):
                return
            time.sleep(0.05)
        raise AssertionError(f"{kind} did not start:\n{self.logs()}")

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout)

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def running(self) -> list[subprocess.Popen[bytes]]:
        return [proc for proc in self.procs if proc.poll() is None]

    def kill_all(self) -> None:
        for proc in self.running():
            self.kill(proc)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-6000:]}"
                         for p in sorted(self.tmp.glob("*.log")))

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.redis.close()


@contextlib.contextmanager
def own_processes_of(settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
                     ) -> Iterator[Processes]:
    """Processes of one test, stopped after it; their logs printed if it failed."""
    procs = Processes(settings, tmp_path)
    yield procs
    procs.close()
    print_logs_if_failed(procs, request)


def print_logs_if_failed(procs: Processes, request: pytest.FixtureRequest) -> None:
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        print(procs.logs())


@pytest.fixture
def processes(settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
              ) -> Iterator[Processes]:
    with own_processes_of(settings, tmp_path, request) as procs:
        yield procs


class SharedProcesses(Processes):
    """The worker and scheduler of a test module whose tests only need them running: a test's
    first `worker()` (and first `scheduler()`) returns the module's running one when it was
    started with the same options and environment, so the module pays one start-up and one
    stop (about 2 s with a scheduler) instead of one per test. Otherwise that one is stopped
    and a new shared one started; one a test killed or stopped is started again. A second call
    in one test starts a process of the test's own, stopped after it.

    Only for modules whose tests all start the same kinds of process: a shared one keeps
    running through a test that did not ask for it."""

    def __init__(self, settings: Settings, tmp: Path) -> None:
        super().__init__(settings, tmp)
        self.shared: dict[str, tuple[object, subprocess.Popen[bytes]]] = {}
        self.used: set[str] = set()
        self.own: list[subprocess.Popen[bytes]] = []

    def _reuse(self, kind: str, options: object,
               start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        if kind in self.used:  # the test's second one of this kind: its own
            proc = start()
            self.own.append(proc)
            return proc
        self.used.add(kind)
        key = (options, dict(self.env))
        current = self.shared.get(kind)
        if current is not None and current[0] == key and current[1].poll() is None:
            return current[1]
        if current is not None:
            self.stop(current[1])
        proc = start()
        self.shared[kind] = (key, proc)
        return proc

    def worker(self, *, threads: int = 8, wait: bool = True, extra: tuple[str, ...] = (),
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        options = (threads, extra, sorted((env or {}).items()))
        return self._reuse("worker", options, lambda: super(SharedProcesses, self).worker(
            threads=threads, wait=wait, extra=extra, env=env))

    def scheduler(self) -> subprocess.Popen[bytes]:
        return self._reuse("scheduler", (), super().scheduler)

    def begin_test(self) -> None:
        self.used.clear()

    def end_test(self) -> None:
        """Stop the processes the test started for itself."""
        for proc in self.own:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.own:
            self.stop(proc)
        self.own.clear()

    def stop_shared(self) -> None:
        """Stop the shared processes, for a test that must be alone with its own; the next
        test that asks starts them again."""
        for _, proc in self.shared.values():
            self.stop(proc)
        self.shared.clear()


@contextlib.contextmanager
def for_one_test(procs: SharedProcesses, request: pytest.FixtureRequest
                 ) -> Iterator[SharedProcesses]:
    """`procs` for one test; their logs printed if it failed."""
    procs.begin_test()
    yield procs
    procs.end_test()
    print_logs_if_failed(procs, request)


@pytest.fixture(scope="module")
def module_processes(settings: Settings, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[SharedProcesses]:
    procs = SharedProcesses(settings, tmp_path_factory.mktemp("processes"))
    yield procs
    procs.close()


@pytest.fixture
def shared_processes(module_processes: SharedProcesses, request: pytest.FixtureRequest
                     ) -> Iterator[SharedProcesses]:
    """The module's `SharedProcesses`; a module opts in by answering `processes` with it."""
    with for_one_test(module_processes, request) as procs:
        yield procs


@dataclass
class Subscriptions:
    """Creates subscriptions through the API and deletes them after the test."""

    tenant: TenantHandle
    created: list[str] = field(default_factory=list)

    def create(self, topic: str, group: str, url: str, **fields: Any) -> dict[str, Any]:
        body = {"topic": topic, "consumer_group": group,
                "consumer_name": fields.pop("consumer_name", f"{group}-{uuid.uuid4().hex[:4]}"),
                "subscription_type": "webhook",
                "handler_config": {"type": "http", "url": url, "timeout_ms": 5000,
                                   **fields.pop("handler", {})},
                "session_timeout_ms": 2000, "retry_delay_ms": 200, "max_retry_delay_ms": 2000,
                **fields}
        response = self.tenant.admin.post("/subscriptions", body)
        assert response.status_code == 201, response.json
        self.created.append(response.json["id"])
        return response.json

    def cleanup(self) -> None:
        for sid in self.created:
            self.tenant.admin.delete(f"/subscriptions/{sid}")


@pytest.fixture
def subscriptions(tenant: TenantHandle) -> Iterator[Subscriptions]:
    subs = Subscriptions(tenant)
    yield subs
    subs.cleanup()


def publish_many(tenant: TenantHandle, topic: str, count: int,
                 payload: Callable[[int], Any] = lambda i: {"n": i}) -> list[str]:
    """Publish `count` messages in batches; returns their message ids in order."""
    ids: list[str] = []
    for start in range(0, count, 500):
        batch = [{"payload": payload(i)} for i in range(start, min(count, start + 500))]
        response = tenant.admin.post("/publish/batch", {"topic": topic, "messages": batch})
        assert response.status_code == 201, response.json
        ids += response.json["message_ids"]
    return ids


