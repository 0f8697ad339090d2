"""Seek moves the subscription's consumer group (checked with XINFO GROUPS) and keeps its
lag computable; bad seek bodies answer 422."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from broker.streams import parse_entry_id
from tests.subscriptions.helpers import RedisView, publish, subscribe


@pytest.fixture
def broker(settings):
    return RedisView(settings.redis_namespace)


def _seek(tenant, sub, **target):
    response = tenant.admin.post(f"/subscriptions/{sub['id']}/seek", target)
    assert response.status_code == 200, response.json
    return response.json


def _next_entry(broker, tenant, queue, consumer_group, partition=0):
    stream = broker.keys.stream(queue["id"], partition)
    reply = broker.redis.xreadgroup(f"{tenant.id}:{consumer_group}", "probe", {stream: ">"},
                                    count=1)
    return reply[0][1][0][0] if reply else None


def _spaced_publish(tenant, topic, count, **fields):
    """Publish with distinct milliseconds, so timestamps single out entries."""
    offsets = []
    for _ in range(count):
        offsets += publish(tenant, topic, 1, **fields)
        time.sleep(0.003)
    return offsets


def test_seek_earliest_then_latest(tenant, broker):
    queue = tenant.create_queue()
    offsets = publish(tenant, queue["name"], 5)
    sub = subscribe(tenant, queue["name"], consumer_group="replay")
    assert broker.group(tenant.id, "replay", queue["id"])["lag"] == 0

    assert _seek(tenant, sub, to="earliest")["id"] == sub["id"]
    group = broker.group(tenant.id, "replay", queue["id"])
    assert group["last-delivered-id"] == "0-0" and group["lag"] == 5
    assert tenant.admin.get(f"/subscriptions/{sub['id']}").json["stats"]["lag"] == 5
    assert _next_entry(broker, tenant, queue, "replay") == offsets[0]

    _seek(tenant, sub, to="latest")
    group = broker.group(tenant.id, "replay", queue["id"])
    assert group["last-delivered-id"] == offsets[-1] and group["lag"] == 0
    assert _next_entry(broker, tenant, queue, "replay") is None
    later = publish(tenant, queue["name"], 1)
    assert _next_entry(broker, tenant, queue, "replay") == later[0]


def test_seek_offset_makes_that_entry_the_next_delivery(tenant, broker):
    queue = tenant.create_queue()
    offsets = publish(tenant, queue["name"], 6)
    sub = subscribe(tenant, queue["name"], consumer_group="jump")
    _seek(tenant, sub, offset=offsets[2])
    group = broker.group(tenant.id, "jump", queue["id"])
    assert group["lag"] == 4
    last = parse_entry_id(group["last-delivered-id"])
    assert parse_entry_id(offsets[1]) <= last < parse_entry_id(offsets[2])
    assert _next_entry(broker, tenant, queue, "jump") == offsets[2]
    _seek(tenant, sub, offset=offsets[0], partition=0)
    assert broker.group(tenant.id, "jump", queue["id"])["lag"] == 6
    assert _next_entry(broker, tenant, queue, "jump") == offsets[0]


def test_seek_offset_on_one_partition_of_several(tenant, broker):
    queue = tenant.create_queue(partition_count=2)
    first = publish(tenant, queue["name"], 3, partition=0)
    second = publish(tenant, queue["name"], 3, partition=1)
    sub = subscribe(tenant, queue["name"], consumer_group="multi")
    response = tenant.admin.post(f"/subscriptions/{sub['id']}/seek", {"offset": second[1]})
    assert response.status_code == 422
    assert "partition" in response.json["error"]["details"]
    _seek(tenant, sub, offset=second[1], partition=1)
    assert broker.group(tenant.id, "multi", queue["id"], 1)["lag"] == 2
    assert broker.group(tenant.id, "multi", queue["id"], 0)["last-delivered-id"] == first[-1]
    assert _next_entry(broker, tenant, queue, "multi", 1) == second[1]


def test_seek_timestamp_moves_every_partition(tenant, broker):
    queue = tenant.create_queue(partition_count=2)
    zero = _spaced_publish(tenant, queue["name"], 4, partition=0)
    one = _spaced_publish(tenant, queue["name"], 2, partition=1)
    sub = subscribe(tenant, queue["name"], consumer_group="clock")
    millis = int(zero[2].split("-")[0])
    moment = datetime.fromtimestamp(millis / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    _seek(tenant, sub, timestamp=moment)
    assert _next_entry(broker, tenant, queue, "clock", 0) == zero[2]
    assert broker.group(tenant.id, "clock", queue["id"], 0)["lag"] == 1  # one read above
    assert _next_entry(broker, tenant, queue, "clock", 1) == one[0]
    # A time before everything replays all; a time after everything skips all.
    _seek(tenant, sub, timestamp="2000-01-01T00:00:00Z")
    assert broker.group(tenant.id, "clock", queue["id"], 0)["lag"] == 4
    _seek(tenant, sub, timestamp="2999-01-01T00:00:00Z")
    assert broker.group(tenant.id, "clock", queue["id"], 0)["last-delivered-id"] == zero[-1]
    assert broker.group(tenant.id, "clock", queue["id"], 1)["lag"] == 0


def test_seek_after_purge_keeps_lag_computable(tenant, broker):
    queue = tenant.create_queue()
    publish(tenant, queue["name"], 3)
    sub = subscribe(tenant, queue["name"], consumer_group="purged")
    assert tenant.admin.post(f"/queues/{queue['name']}/purge").json == {"purged": 3}
    later = publish(tenant, queue["name"], 2)
    _seek(tenant, sub, to="earliest")
    assert broker.group(tenant.id, "purged", queue["id"])["lag"] == 2
    assert _next_entry(broker, tenant, queue, "purged") == later[0]


def test_seek_is_announced(tenant, broker):
    queue = tenant.create_queue()
    sub = subscribe(tenant, queue["name"])
    tip = broker.control_tip()
    _seek(tenant, sub, to="earliest")
    assert broker.control_events(tip) == [
        {"kind": "subscription", "id": sub["id"], "op": "upsert"}]


@pytest.mark.parametrize(("target", "field_name"), [
    ({}, "_schema"),
    ({"to": "middle"}, "to"),
    ({"to": "earliest", "offset": "1-0"}, "_schema"),
    ({"to": "earliest", "timestamp": "2026-01-01T00:00:00Z"}, "_schema"),
    ({"offset": "abc"}, "offset"),
    ({"offset": "1-2-3"}, "offset"),
    ({"offset": "99999999999999999999999-0"}, "offset"),
    ({"offset": 5}, "offset"),
    ({"offset": "1-0", "partition": 3}, "partition"),
    ({"offset": "1-0", "partition": -1}, "partition"),
    ({"partition": 0, "to": "latest"}, "partition"),
    ({"timestamp": "yesterday"}, "timestamp"),
    ({"to": "latest", "extra": 1}, "extra"),
])
def test_bad_seek_bodies(tenant, target, field_name):
    sub = subscribe(tenant, tenant.create_queue()["name"])
    response = tenant.admin.post(f"/subscriptions/{sub['id']}/seek", target)
    assert response.status_code == 422, response.json
    assert field_name in response.json["error"]["details"], response.json


def test_seek_offset_past_the_end_is_refused(tenant):
    queue = tenant.create_queue()
    offsets = publish(tenant, queue["name"], 1)
    sub = subscribe(tenant, queue["name"])
    millis = int(offsets[0].split("-")[0])
    response = tenant.admin.post(f"/subscriptions/{sub['id']}/seek",
                                 {"offset": f"{millis + 60_000}-0"})
    assert response.status_code == 422
    assert "offset" in response.json["error"]["details"]
