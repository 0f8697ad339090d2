"""Worker and scheduler expositions after real traffic, the metrics API's delivery figures, and
structured delivery logs (real `mq worker` / `mq scheduler` processes, a real webhook)."""

from __future__ import annotations

import json
import uuid

from tests.delivery.conftest import publish_many
from tests.observability.conftest import scrape, value
from tests.processes import free_port, wait_until


def _start(processes, kind, **env):
    port = free_port()
    processes.env.update(PROMETHEUS_PORT=str(port), **env)
    proc = processes.worker() if kind == "worker" else processes.scheduler()
    return proc, port


def test_worker_counts_outcomes_and_latency_and_the_api_reports_rates(
        tenant, subscriptions, webhook, processes):
    # Names of their own: histograms are labelled by topic, and every worker of the test run
    # serves every tenant's subscriptions.
    orders, audit = f"orders-{uuid.uuid4().hex[:8]}", f"audit-{uuid.uuid4().hex[:8]}"
    tenant.create_queue(orders)
    sub = subscriptions.create(orders, "billing", webhook.url("/hook"),
                               retry_delay_ms=100, max_retry_attempts=3)
    tenant.create_queue(audit)
    doomed = subscriptions.create(audit, "archive", webhook.url("/down"),
                                  retry_delay_ms=100, max_retry_attempts=1)
    webhook.script("/hook", [500, 500])  # two failed attempts, then every answer is 200
    webhook.always("/down", 500)
    _, scheduler_port = _start(processes, "scheduler")
    _, port = _start(processes, "worker")
    publish_many(tenant, orders, 10)
    publish_many(tenant, audit, 2)
    webhook.wait_for("/hook", 12)
    webhook.wait_for("/down", 4)
    labels = {"topic": orders, "tenant_id": tenant.id, "type": "http"}
    samples = wait_until(lambda: (s := scrape(port)) and value(
        s, "mq_messages_total", status="consumed", **labels) == 10 and s)

    assert value(samples, "mq_messages_total", status="failed", **labels) == 2
    assert value(samples, "mq_messages_total", status="dead_letter", **labels) == 0
    latency = {"topic": orders, "handler_type": "http"}
    assert value(samples, "mq_message_latency_seconds_count", **latency) == 10
    assert value(samples, "mq_message_latency_seconds_bucket", le="10.0", **latency) == 10
    assert value(samples, "mq_message_latency_seconds_sum", **latency) > 0
    assert value(samples, "mq_handler_duration_seconds_count", **latency) == 12
    assert value(samples, "mq_delivery_retries_total", **latency) == 2  # one per failure
    assert not any("message_id" in ls for _, ls, _ in samples)
    audit = {"topic": audit, "tenant_id": tenant.id, "type": "http"}
    samples = wait_until(lambda: (s := scrape(port)) and value(
        s, "mq_messages_total", status="dead_letter", **audit) == 2 and s)
    assert value(samples, "mq_messages_total", status="failed", **audit) == 4
    assert value(samples, "mq_messages_total", status="consumed", **audit) == 0
    wait_until(lambda: value(scrape(scheduler_port), "mq_dead_letter_size",
                             subscription_id=doomed["id"]) == 2, timeout=15)

    consumer = wait_until(lambda: _consumer(tenant, sub["id"], processing_rate=round(10 / 60, 3)))
    assert consumer["error_rate"] == round(2 / 60, 3)
    assert consumer["lag"] == 0 and consumer["pending"] == 0
    assert consumer["active_consumers"] == 1
    overview = tenant.admin.get("/metrics").json
    performance = overview["performance"]
    assert 0 < performance["average_latency_ms"] <= performance["p99_latency_ms"]
    assert performance["p95_latency_ms"] <= performance["p99_latency_ms"] < 10_000
    assert performance["throughput"] == round((12 + 4) / 60, 3)  # attempts of both
    assert _consumer(tenant, doomed["id"], error_rate=round(4 / 60, 3), processing_rate=0.0)


def test_scheduler_exports_lag_of_a_paused_subscription_and_queue_sizes(
        tenant, subscriptions, webhook, processes):
    tenant.create_queue("orders")
    sub = subscriptions.create("orders", "billing", webhook.url("/hook"))
    _, scheduler_port = _start(processes, "scheduler")
    _start(processes, "worker")
    publish_many(tenant, "orders", 3)
    webhook.wait_for("/hook", 3)
    assert tenant.admin.post(f"/subscriptions/{sub['id']}/pause").status_code == 200
    publish_many(tenant, "orders", 4)

    # The third delivery's ack may land just after its webhook answered.
    wait_until(lambda: _consumer(tenant, sub["id"], lag=4, pending=0))
    assert len(webhook.received("/hook")) == 3
    labels = {"subscription_id": sub["id"], "tenant_id": tenant.id}
    samples = wait_until(lambda: (s := scrape(scheduler_port)) and value(
        s, "mq_subscription_lag", **labels) == 4 and s, timeout=15)
    assert value(samples, "mq_subscription_pending", **labels) == 0
    assert 0 <= value(samples, "mq_subscription_oldest_pending_age_seconds", **labels) < 60
    assert value(samples, "mq_dead_letter_size", **labels) == 0
    topic = f"{tenant.name}/orders"
    assert value(samples, "mq_queue_size", queue_name=topic, type="topic") == 7
    assert any(n == "mq_queue_size" and ls["type"] == "retry" for n, ls, _ in samples)
    assert any(n == "mq_queue_size" and ls["type"] == "delayed" for n, ls, _ in samples)
    for table in ("message_records", "consumption_records", "idempotency_keys"):
        assert value(samples, "mq_storage_bytes", table=table) > 0
        assert value(samples, "mq_storage_rows", table=table) >= 0
    # The test database's oldest day is today's, or one a test made a few days back.
    assert 0 < value(samples, "mq_storage_oldest_partition_age_seconds",
                     table="message_records") < 7 * 86_400

    assert tenant.admin.post(f"/subscriptions/{sub['id']}/resume").status_code == 200
    webhook.wait_for("/hook", 7)
    wait_until(lambda: value(scrape(scheduler_port), "mq_subscription_lag", **labels) == 0,
               timeout=15)


def test_failed_deliveries_log_one_json_line_with_their_context(
        tenant, subscriptions, webhook, processes):
    tenant.create_queue("orders")
    sub = subscriptions.create("orders", "billing", webhook.url("/hook"), retry_delay_ms=100)
    webhook.script("/hook", [500])
    processes.scheduler()
    proc, _ = _start(processes, "worker", LOG_FORMAT="json")
    message_id = tenant.admin.post("/publish", {"topic": "orders", "payload": {"a": 1},
                                                "trace_id": "trace-42"}).json["message_id"]
    webhook.wait_for("/hook", 2)

    def failure_line():
        """The line of this message's failure: the worker serves every subscription of the
        run, and one an earlier test left may fail first."""
        log = next(processes.tmp.glob(f"worker-{processes.procs.index(proc)}.log"))
        for line in log.read_text().splitlines():
            if line.startswith("{") and "will retry" in line \
                    and json.loads(line).get("message_id") == message_id:
                return json.loads(line)
        return None

    line = wait_until(failure_line, timeout=10)
    assert line["level"] == "warning"
    assert line["message_id"] == message_id
    assert line["topic"] == "orders"
    assert line["subscription_id"] == sub["id"]
    assert line["attempt"] == 1
    assert line["trace_id"] == "trace-42"


def _consumer(tenant, subscription_id, **expected):
    items = tenant.admin.get("/metrics/consumers").json["items"]
    found = next(i for i in items if i["id"] == subscription_id)
    return found if all(found[k] == v for k, v in expected.items()) else None


def test_filtered_messages_are_counted_as_filtered(tenant, subscriptions, webhook, processes):
    topic = f"payments-{uuid.uuid4().hex[:8]}"
    tenant.create_queue(topic)
    sub = subscriptions.create(topic, "big", webhook.url("/big"),
                               message_filter={"payload.amount": [{"numeric": [">", 100]}]})
    _, port = _start(processes, "worker")
    ids = publish_many(tenant, topic, 5, payload=lambda i: {"amount": 50 if i < 2 else 500})
    webhook.wait_for("/big", 3)
    labels = {"topic": topic, "tenant_id": tenant.id, "type": "http"}
    # The webhook answers before the worker counts the delivery: wait for both counters.
    samples = wait_until(lambda: (s := scrape(port)) and value(
        s, "mq_messages_total", status="filtered", **labels) == 2 and value(
        s, "mq_messages_total", status="consumed", **labels) == 3 and s)
    assert value(samples, "mq_message_latency_seconds_count", topic=topic) == 3

    def states(message_id: str) -> list[str]:
        deliveries = tenant.admin.get(f"/messages/{message_id}").json["deliveries"]
        return [d["status"] for d in deliveries if d["subscription_id"] == sub["id"]]

    # The message's state for the subscription says the filter rejected it.
    assert wait_until(lambda: states(ids[0]) == ["filtered"] and states(ids[1]) == ["filtered"])
    assert wait_until(lambda: states(ids[4]) == ["delivered"])
    listed = tenant.admin.get(f"/subscriptions/{sub['id']}/deliveries?status=filtered").json
    assert sorted(item["message_id"] for item in listed["items"]) == sorted(ids[:2])
