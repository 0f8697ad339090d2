"""Retention of the day-partitioned records: look-ups over many full days, and dropping one.

    python bench/retention.py [--days 7] [--messages 1000000] [--deliveries 3000000]
                              [--lookups 2000]

On a fresh PostgreSQL database (migrated; 100 tenants, a topic each, three subscriptions per
topic) it loads `--days` complete past days (yesterday and before) by COPY: per day
`--messages` message records and `--deliveries` consumption records, spread evenly over the
day. The COPY rate, printed per day, is this machine's loading ceiling. Then:

- what the database holds (`pg_database_size`, rows and bytes per table);
- with every day present, through the real API (`api.create_app`, Flask's test client, a
  tenant's bearer key): `GET /messages/{message_id}` of `--lookups` random messages of all
  days, and `GET /subscriptions/{id}/deliveries?limit=100`, its first page and the next one
  (`next_cursor`). Beside them, the floor measured in the same run: a bare `SELECT 1` round
  trip and the look-up's SQL sent directly (interleaved with the API calls, message by
  message), and what `EXPLAIN (ANALYZE, BUFFERS)` says about the partitions each query read;
- the oldest day dropped by the scheduler's storage job (`RecordStorage.run`, its clock and
  retentions set so that exactly that day of both tables has expired), timed; for contrast,
  a `DELETE` of 100,000 message records of another day, timed and rolled back.

The database is dropped at the end. Environment: `BENCH_DATABASE_URL` (an admin URL of a
PostgreSQL server, default local), `BENCH_REDIS_URL` (default local; the API's cache reads
it). Prints figures; never asserts.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy import Engine, Select, event, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api import create_app  # noqa: E402
from api.pagination import DEFAULT_LIMIT  # noqa: E402
from api.services.messages import newest_record  # noqa: E402
from api.services.subscriptions import deliveries_query  # noqa: E402
from models import (  # noqa: E402
    ConsumptionRecord,
    Database,
    Subscription,
    Topic,
    upgrade,
)
from models.base import fast_id, utcnow  # noqa: E402
from models.database import temporary_database  # noqa: E402
from models.partitions import (  # noqa: E402
    PARTITIONED,
    Partition,
    analyze_partition,
    day_start,
    ensure_partitions,
    storage,
)
from models.tenancy import create_tenant  # noqa: E402
from mq.settings import Settings  # noqa: E402
from mq.urls import libpq_url  # noqa: E402
from scheduler.storage import RecordStorage  # noqa: E402

ADMIN_URL = os.environ.get("BENCH_DATABASE_URL",
                           "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
API = "/api/v1/mq"
TENANTS = 100
SUBSCRIPTIONS_PER_TOPIC = 3
HANDLER = {"type": "http", "url": "http://127.0.0.1:9/hook"}
DAY_US = 86_400_000_000
DAY_MS = 86_400_000
#: Days of retention beyond the loaded ones while looking up (nothing is hidden yet).
SPARE_DAYS = 2
DELETE_ROWS = 100_000
COPY_CHUNK = 1 << 18
WARM_UP = 20
QUIET_LOAD = 0.5
MESSAGE_COLUMNS = ("id", "tenant_id", "topic_id", "message_id", "headers", "payload",
                   "payload_size", "content_type", "partition_id", "offset_value", "status",
                   "retry_count", "published_at")
DELIVERY_COLUMNS = ("id", "tenant_id", "subscription_id", "message_id", "consumer_instance",
                    "partition_id", "offset_value", "status", "processing_time_ms",
                    "error_message", "retry_count", "consumed_at")


@dataclass(frozen=True)
class Layout:
    """The loaded days (oldest first) and the rows of each."""

    today: date
    days: list[date]
    messages: int
    deliveries: int

    @classmethod
    def of(cls, args: argparse.Namespace, today: date) -> Layout:
        days = [today - timedelta(days=n) for n in range(args.days, 0, -1)]
        return cls(today, days, args.messages, args.deliveries)


@dataclass
class Fleet:
    """Tenants (and a key of each), their topics, and the subscriptions in topic order."""

    tenants: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    subscriptions: list[str] = field(default_factory=list)


@dataclass
class Timings:
    """Milliseconds of one kind of call, and how many were answered other than 200."""

    ms: list[float] = field(default_factory=list)
    failures: int = 0


# --- the data -------------------------------------------------------------------------------

def create_fleet(database: Database, retention_ms: int) -> Fleet:
    fleet = Fleet()
    with database.session() as session:
        for n in range(TENANTS):
            tenant, key = create_tenant(session, f"bench-{n:03d}")
            fleet.tenants.append(tenant.id)
            fleet.keys.append(key)
        topics = [Topic(tenant_id=tenant, name="orders", retention_ms=retention_ms)
                  for tenant in fleet.tenants]
        session.add_all(topics)
        session.flush()
        subscriptions = [
            Subscription(tenant_id=topic.tenant_id, topic_id=topic.id, consumer_group=f"g{k}",
                         consumer_name="c1", subscription_type="webhook",
                         handler_config=HANDLER)
            for topic in topics for k in range(SUBSCRIPTIONS_PER_TOPIC)]
        session.add_all(subscriptions)
        session.commit()
        fleet.topics = [topic.id for topic in topics]
        fleet.subscriptions = [subscription.id for subscription in subscriptions]
    return fleet


def message_id(day: date, index: int) -> str:
    return f"m{day:%Y%m%d}-{index}"


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def message_lines(fleet: Fleet, day: date, count: int) -> Iterator[str]:
    """COPY lines of a day's message records; message `i` is of topic `i % TENANTS`."""
    start = day_start(day)
    start_ms = epoch_ms(start)
    for i in range(count):
        t = i % TENANTS
        us = i * DAY_US // count
        payload = f'{{"n": {i}}}'
        yield (f"{fast_id()}\t{fleet.tenants[t]}\t{fleet.topics[t]}\t{message_id(day, i)}\t"
               f"{{}}\t{payload}\t{len(payload)}\tapplication/json\t0\t"
               f"{start_ms + us // 1000}-0\tpublished\t0\t"
               f"{(start + timedelta(microseconds=us)).isoformat()}\n")


def delivered_message(j: int, topic: int, messages: int, deliveries: int) -> int:
    """The newest message of `topic` published by the time delivery `j` is made (the
    topic's first message for the day's first few deliveries)."""
    newest = j * messages // deliveries
    index = newest - (newest - topic) % TENANTS
    return index if index >= 0 else index + TENANTS


def delivery_lines(fleet: Fleet, day: date, messages: int, count: int) -> Iterator[str]:
    """COPY lines of a day's consumption records: subscriptions round-robin, each delivery
    of a message of the subscription's topic published shortly before; one in 50 failed."""
    start = day_start(day)
    start_ms = epoch_ms(start)
    for j in range(count):
        s = j % len(fleet.subscriptions)
        t = s // SUBSCRIPTIONS_PER_TOPIC
        i = delivered_message(j, t, messages, count)
        status, error = ("failed", "HTTP 500") if j % 50 == 49 else ("success", "\\N")
        at = start + timedelta(microseconds=j * DAY_US // count)
        yield (f"{fast_id()}\t{fleet.tenants[t]}\t{fleet.subscriptions[s]}\t"
               f"{message_id(day, i)}\tworker-{j % 8}\t0\t"
               f"{start_ms + i * DAY_MS // messages}-0\t{status}\t{3 + j * 7 % 120}\t"
               f"{error}\t0\t{at.isoformat()}\n")


class LineStream:
    """A file over a generator of COPY lines, read chunk by chunk by `copy_expert`: the
    rows are never all in memory."""

    def __init__(self, lines: Iterator[str]) -> None:
        self.lines = lines

    def read(self, size: int = -1) -> str:
        chunk: list[str] = []
        length = 0
        for line in self.lines:
            chunk.append(line)
            length += len(line)
            if 0 <= size <= length:
                break
        return "".join(chunk)


def copy_table(connection: Any, table: str, columns: Sequence[str],
               lines: Iterator[str]) -> float:
    """COPY `lines` into `table` and commit; returns the seconds taken."""
    start = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN",
                           LineStream(lines), size=COPY_CHUNK)
    connection.commit()
    return time.perf_counter() - start


def load(db_url: str, fleet: Fleet, layout: Layout) -> dict[str, float]:
    """Load every day; returns the seconds each table's COPYs took in all."""
    seconds = dict.fromkeys(PARTITIONED, 0.0)
    connection = psycopg2.connect(libpq_url(db_url))
    try:
        for day in layout.days:
            took = {
                "message_records": copy_table(connection, "message_records", MESSAGE_COLUMNS,
                                              message_lines(fleet, day, layout.messages)),
                "consumption_records": copy_table(
                    connection, "consumption_records", DELIVERY_COLUMNS,
                    delivery_lines(fleet, day, layout.messages, layout.deliveries)),
            }
            for table, elapsed in took.items():
                seconds[table] += elapsed
            print(f"  {day}: message_records {rate(layout.messages, took['message_records'])}"
                  f"; consumption_records "
                  f"{rate(layout.deliveries, took['consumption_records'])}", flush=True)
    finally:
        connection.close()
    return seconds


def rate(rows: int, seconds: float) -> str:
    return f"{rows:,} rows in {seconds:.1f} s ({rows / seconds:,.0f} rows/s)"


def analyze(engine: Engine, layout: Layout) -> float:
    """ANALYZE the loaded days' partitions, as the storage job does (`analyze_partition`).
    Not the parent tables: that would give them a row estimate of their own, which
    `storage()` would add to their partitions'."""
    start = time.perf_counter()
    with engine.begin() as connection:
        for table in PARTITIONED:
            for day in layout.days:
                analyze_partition(connection, Partition(day, table))
    return time.perf_counter() - start


# --- what the database holds ----------------------------------------------------------------

def mib(size: float) -> str:
    return f"{size / 2**20:,.1f} MiB"


def print_storage(engine: Engine, label: str) -> None:
    with engine.connect() as connection:
        size = connection.scalar(text("SELECT pg_database_size(current_database())"))
        tables = storage(connection, PARTITIONED)
        counts = {table: connection.scalar(text(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = CAST(:t AS regclass)"),
            {"t": table}) for table in PARTITIONED}
    print(f"{label}: database {mib(size or 0)}")
    for held in tables:
        print(f"  {held.table:22}{held.rows:>14,} rows{mib(held.bytes):>14}   "
              f"{counts[held.table]} partitions, oldest {held.oldest_day}")


# --- latency --------------------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


def lookup_statement(tenant_id: str, message: str, since: datetime) -> Select[Any]:
    """The query of `api.services.messages.find_message`, over the days since `since`."""
    now = utcnow()
    return newest_record(tenant_id, message, now, now - since)


def compiled(engine: Engine, stmt: Select[Any]) -> tuple[str, Mapping[str, Any]]:
    """SQL text and parameters as the driver gets them."""
    done = stmt.compile(dialect=engine.dialect)
    return str(done), done.params


def timed_ms(call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """Milliseconds `call(*args, **kwargs)` took, and what it returned."""
    start = time.perf_counter()
    result = call(*args, **kwargs)
    return (time.perf_counter() - start) * 1000, result


def fetch(cursor: Any, sql: str, params: Mapping[str, Any] | None = None) -> list[Any]:
    cursor.execute(sql, params)
    return list(cursor.fetchall())


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sample_messages(layout: Layout, count: int, rng: random.Random) -> list[tuple[int, str]]:
    """(tenant index, message id) of `count` random messages of all days."""
    out = []
    for _ in range(count):
        i = rng.randrange(layout.messages)
        out.append((i % TENANTS, message_id(rng.choice(layout.days), i)))
    return out


def measure_lookups(client: FlaskClient, db_url: str, engine: Engine, fleet: Fleet,
                    samples: list[tuple[int, str]], since: datetime) -> dict[str, Timings]:
    """Per message: `SELECT 1`, the look-up's SQL, then `GET /messages/{id}`."""
    out = {name: Timings() for name in ("select1", "sql", "http")}
    connection = psycopg2.connect(libpq_url(db_url))
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            for n, (t, message) in enumerate(samples):
                sql, params = compiled(engine, lookup_statement(fleet.tenants[t], message, since))
                select1, _ = timed_ms(fetch, cursor, "SELECT 1")
                direct, _ = timed_ms(fetch, cursor, sql, params)
                http, answer = timed_ms(client.get, f"{API}/messages/{message}",
                                        headers=bearer(fleet.keys[t]))
                if n < WARM_UP:
                    continue
                for name, ms in (("select1", select1), ("sql", direct), ("http", http)):
                    out[name].ms.append(ms)
                out["http"].failures += answer.status_code != 200
    finally:
        connection.close()
    return out


def measure_pages(client: FlaskClient, fleet: Fleet, count: int,
                  rng: random.Random) -> dict[str, Timings]:
    """A random subscription's newest page of deliveries, then the page after it."""
    out = {"first": Timings(), "next": Timings()}
    for n in range(count + WARM_UP):
        s = rng.randrange(len(fleet.subscriptions))
        path = f"{API}/subscriptions/{fleet.subscriptions[s]}/deliveries"
        headers = bearer(fleet.keys[s // SUBSCRIPTIONS_PER_TOPIC])
        first_ms, first = timed_ms(client.get, path, query_string={"limit": DEFAULT_LIMIT},
                                   headers=headers)
        cursor = (first.json or {}).get("next_cursor") if first.status_code == 200 else None
        next_ms, after = timed_ms(client.get, path, headers=headers,
                                  query_string={"limit": DEFAULT_LIMIT, "cursor": cursor})
        if n < WARM_UP:
            continue
        out["first"].ms.append(first_ms)
        out["next"].ms.append(next_ms)
        out["first"].failures += first.status_code != 200
        out["next"].failures += after.status_code != 200 or cursor is None
    return out


def print_latency(label: str, timings: Timings) -> None:
    ms = timings.ms
    print(f"  {label:44}{percentile(ms, 0.5):>9.2f}{percentile(ms, 0.99):>9.2f}"
          f"{max(ms, default=math.nan):>9.2f}{len(ms):>7}{timings.failures:>9}")


# --- plans ----------------------------------------------------------------------------------

def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def plan_facts(cursor: Any, sql: str, params: Mapping[str, Any], partitions: int) -> str:
    """One line: partitions in the plan (of the table's), scanned and never executed,
    rows, buffers and execution time of `EXPLAIN (ANALYZE, BUFFERS)`."""
    cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
    root = cursor.fetchone()[0][0]
    top = root["Plan"]
    scans = [node for node in plan_nodes(top) if "Relation Name" in node]
    ran = [node for node in scans if node.get("Actual Loops", 0) > 0]
    kinds = ", ".join(sorted({node["Node Type"] for node in ran}))
    return (f"{len(scans)} of {partitions} partitions in the plan, {len(ran)} scanned "
            f"({kinds}), {len(scans) - len(ran)} never executed; {top['Actual Rows']} rows, "
            f"{top['Shared Hit Blocks'] + top['Shared Read Blocks']} buffers, "
            f"{root['Execution Time']:.2f} ms")


def explain(db_url: str, database: Database, fleet: Fleet, layout: Layout,
            since: datetime) -> None:
    engine = database.engine
    with database.session() as session:
        subscription = session.get(Subscription, fleet.subscriptions[0])
        if subscription is None:
            raise SystemExit("the first subscription is gone")
        kept = Settings(mq_delivery_record_retention_days=len(layout.days) + SPARE_DAYS)
        page = (deliveries_query(subscription, {}, kept)
                .order_by(ConsumptionRecord.consumed_at.desc(), ConsumptionRecord.id.desc())
                .limit(DEFAULT_LIMIT + 1))
    queries = {
        f"message look-up, oldest day ({layout.days[0]})": (
            "message_records", lookup_statement(fleet.tenants[0],
                                                message_id(layout.days[0], 0), since)),
        f"message look-up, newest day ({layout.days[-1]})": (
            "message_records", lookup_statement(fleet.tenants[0],
                                                message_id(layout.days[-1], 0), since)),
        "deliveries, first page": ("consumption_records", page),
    }
    connection = psycopg2.connect(libpq_url(db_url))
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            for label, (table, stmt) in queries.items():
                cursor.execute("SELECT count(*) FROM pg_inherits "
                               "WHERE inhparent = CAST(%s AS regclass)", (table,))
                partitions = cursor.fetchone()[0]
                print(f"  {label}: {plan_facts(cursor, *compiled(engine, stmt), partitions)}")
    finally:
        connection.close()


# --- dropping a day -------------------------------------------------------------------------

@contextmanager
def statement_ms(engine: Engine, prefix: str) -> Iterator[list[float]]:
    """Milliseconds of each statement starting with `prefix` the engine runs meanwhile."""
    times: list[float] = []

    def before(connection: Any, *_: Any) -> None:
        connection.info["bench_started"] = time.perf_counter()

    def after(connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith(prefix):
            times.append((time.perf_counter() - connection.info["bench_started"]) * 1000)

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield times
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


def drop_oldest(database: Database, settings: Settings, layout: Layout) -> None:
    """The storage job with its clock at noon today and both retentions one day shorter
    than the days loaded: the oldest day of both tables is past them, no other day is."""
    clock = day_start(layout.today) + timedelta(hours=12)
    kept = len(layout.days) - 1
    job = RecordStorage(replace(settings, mq_record_retention_days=kept,
                                mq_delivery_record_retention_days=kept), database)
    with statement_ms(database.engine, "DROP TABLE") as drops:
        first_ms, report = timed_ms(job.run, now=clock)
    again_ms, _ = timed_ms(job.run, now=clock)
    print(f"storage job: RecordStorage.run(now={clock.isoformat()}) with "
          f"MQ_RECORD_RETENTION_DAYS = MQ_DELIVERY_RECORD_RETENTION_DAYS = {kept} (the topics "
          f"keep {len(layout.days) + SPARE_DAYS} days: the cap applies)")
    print(f"  pass dropping {', '.join(p.name for p in report.dropped) or 'nothing'}: "
          f"{first_ms:,.0f} ms in all; its DROP TABLE statements: "
          f"{', '.join(f'{ms:.1f}' for ms in drops)} ms")
    print(f"  the same pass again, nothing to drop (partitions ahead, ANALYZE of today's and "
          f"yesterday's, key trim): {again_ms:,.0f} ms")


def delete_contrast(db_url: str, layout: Layout) -> None:
    """DELETE the first rows of the second-oldest day by `published_at`; rolled back."""
    day = layout.days[1]
    rows = min(DELETE_ROWS, layout.messages)
    start = day_start(day)
    end = start + timedelta(microseconds=rows * DAY_US // layout.messages)
    connection = psycopg2.connect(libpq_url(db_url))
    try:
        with connection.cursor() as cursor:
            took_ms, _ = timed_ms(
                cursor.execute,
                "DELETE FROM message_records WHERE published_at >= %s AND published_at < %s",
                (start, end))
            deleted = cursor.rowcount
        connection.rollback()
    finally:
        connection.close()
    seconds = took_ms / 1000
    print(f"for contrast, DELETE of {deleted:,} message_records of {day} (published_at range):"
          f" {seconds:.3f} s ({deleted / seconds:,.0f} rows/s), rolled back; a whole day of "
          f"{layout.messages:,} at that rate: {seconds * layout.messages / deleted:,.2f} s "
          f"(and the consumption records' day, and the vacuum after, on top)")


# --- the run --------------------------------------------------------------------------------

def app_settings(db_url: str, namespace: str, retention_days: int) -> Settings:
    return Settings(database_url=db_url, redis_url=REDIS_URL, redis_namespace=namespace,
                    mq_record_retention_days=retention_days,
                    mq_delivery_record_retention_days=retention_days,
                    log_format="text", log_level="WARNING")


def prepare(db_url: str, database: Database, layout: Layout, retention_days: int) -> Fleet:
    upgrade(db_url)
    fleet = create_fleet(database, retention_days * DAY_MS)
    with database.engine.begin() as connection:
        ensure_partitions(connection, utcnow(), since=layout.days[0])
    return fleet


def load_all(db_url: str, database: Database, fleet: Fleet, layout: Layout) -> None:
    print(f"loading {len(layout.days)} days ({layout.days[0]} .. {layout.days[-1]}) by COPY:",
          flush=True)
    seconds = load(db_url, fleet, layout)
    days = len(layout.days)
    for table, rows in (("message_records", layout.messages * days),
                        ("consumption_records", layout.deliveries * days)):
        print(f"COPY ceiling, {table} (indexes and foreign keys in place): "
              f"{rate(rows, seconds[table])}")
    print(f"ANALYZE of the loaded partitions: {analyze(database.engine, layout):.1f} s",
          flush=True)


def latency(client: FlaskClient, db_url: str, database: Database, fleet: Fleet,
            layout: Layout, args: argparse.Namespace, since: datetime) -> None:
    rng = random.Random(20240601)
    samples = sample_messages(layout, args.lookups + WARM_UP, rng)
    lookups = measure_lookups(client, db_url, database.engine, fleet, samples, since)
    pages = measure_pages(client, fleet, args.lookups, rng)
    print(f"latency with all {len(layout.days)} days present (ms; {WARM_UP} warm-up calls "
          f"of each kind not counted):")
    print(f"  {'':44}{'p50':>9}{'p99':>9}{'max':>9}{'n':>7}{'failed':>9}   (failed: "
          f"not 200, or no next_cursor)")
    print_latency("GET /messages/{id} (Flask test client)", lookups["http"])
    print_latency("  floor: the same look-up's SQL, direct", lookups["sql"])
    print_latency("  floor: SELECT 1 round trip", lookups["select1"])
    print_latency(f"GET .../deliveries?limit={DEFAULT_LIMIT}, first page", pages["first"])
    print_latency("GET .../deliveries, next page (next_cursor)", pages["next"])
    print("plans (EXPLAIN (ANALYZE, BUFFERS)):")
    explain(db_url, database, fleet, layout, since)
    sys.stdout.flush()


def run(db_url: str, namespace: str, args: argparse.Namespace) -> None:
    layout = Layout.of(args, utcnow().date())
    retention_days = len(layout.days) + SPARE_DAYS
    database = Database(db_url)
    try:
        fleet = prepare(db_url, database, layout, retention_days)
        load_all(db_url, database, fleet, layout)
        print_storage(database.engine, "stored")
        settings = app_settings(db_url, namespace, retention_days)
        client = create_app(settings, database=database).test_client()
        since = utcnow() - timedelta(days=retention_days)
        latency(client, db_url, database, fleet, layout, args, since)
        drop_oldest(database, settings, layout)
        print_storage(database.engine, "after the drop")
        delete_contrast(db_url, layout)
    finally:
        database.dispose()


def cleanup_redis(namespace: str) -> None:
    client = Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{namespace}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start:start + 500])


def header(args: argparse.Namespace) -> None:
    load = os.getloadavg()
    print(f"retention benchmark: {args.days} days x ({args.messages:,} message records + "
          f"{args.deliveries:,} consumption records), {TENANTS} tenants, "
          f"{TENANTS * SUBSCRIPTIONS_PER_TOPIC} subscriptions, {args.lookups:,} look-ups")
    print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f}")
    if load[0] > QUIET_LOAD:
        print(f"WARNING: 1-minute load average {load[0]:.2f} > {QUIET_LOAD}: "
              f"the machine is not quiet, figures will be noisy")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--days", type=int, default=7, help="complete past days loaded")
    parser.add_argument("--messages", type=int, default=1_000_000, help="message records a day")
    parser.add_argument("--deliveries", type=int, default=3_000_000,
                        help="consumption records a day")
    parser.add_argument("--lookups", type=int, default=2000,
                        help="message look-ups, and deliveries pages, timed")
    args = parser.parse_args()
    if args.days < 2 or args.messages < TENANTS or args.deliveries < 1 or args.lookups < 1:
        parser.error(f"needs --days >= 2, --messages >= {TENANTS}, --deliveries and "
                     f"--lookups >= 1")
    # A plain `kill` of the bench still drops its database (the `finally` blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    header(args)
    namespace = f"mqbench{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    try:
        with temporary_database(ADMIN_URL, "mqbench") as db_url:
            run(db_url, namespace, args)
    finally:
        cleanup_redis(namespace)
    print(f"whole run: {time.perf_counter() - started:,.0f} s")


if __name__ == "__main__":
    main()
