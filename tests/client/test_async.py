"""The asyncio twin against the real API: the same calls, errors, retries and batching."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from mq_client import (
    AsyncBatchPublisher,
    AsyncClient,
    Client,
    RetryPolicy,
    TopicNotFound,
    Unauthorized,
)

from tests.client.conftest import Tenant, stored
from tests.client.proxy import DROP, Proxy, answer

FAST = RetryPolicy(backoff_s=0.05, max_backoff_s=0.2)
TASKS, EACH = 20, 100


def test_calls_and_typed_errors(tenant: Tenant) -> None:
    async def scenario() -> None:
        name = f"async-{uuid.uuid4().hex[:8]}"
        async with AsyncClient(tenant.base, tenant.admin_key) as client:
            assert (await client.create_topic(name))["name"] == name
            published = await client.publish(name, {"n": 1}, key="k")
            assert published["duplicate"] is False
            assert (await client.get_message(published["message_id"]))["payload"] == {"n": 1}
            assert (await client.get_topic(name))["stats"]["length"] == 1
            with pytest.raises(TopicNotFound) as missing:
                await client.publish("no-such-topic", {"n": 1})
            assert missing.value.status == 404 and missing.value.request_id
            assert await client.delete_topic(name) is None
        async with AsyncClient(tenant.base, "not-a-key") as stranger:
            with pytest.raises(Unauthorized):
                await stranger.list_topics()

    asyncio.run(scenario())


def test_a_retried_publish_is_stored_once(direct: Client, tenant: Tenant, topic: str,
                                          via_proxy: Proxy) -> None:
    via_proxy.then(DROP, answer(429, retry_after="0.5"))

    async def scenario() -> dict[str, object]:
        async with AsyncClient(via_proxy.url, tenant.admin_key, retry=FAST) as client:
            return await client.publish(topic, {"order": 7})

    published = asyncio.run(scenario())
    dropped, refused, accepted = via_proxy.requests("/publish")
    assert accepted.at - refused.at >= 0.5
    assert len({seen.json()["message_id"] for seen in (dropped, refused, accepted)}) == 1
    assert published["duplicate"] is True
    assert stored(direct, topic) == 1


def test_the_batch_publisher_gathers_many_tasks(direct: Client, tenant: Tenant, topic: str,
                                                via_proxy: Proxy) -> None:
    async def produce(publisher: AsyncBatchPublisher, n: int) -> list[str]:
        futures = [publisher.publish({"task": n, "i": i}) for i in range(EACH)]
        await asyncio.sleep(0)
        return list(await asyncio.gather(*futures))

    async def scenario() -> list[str]:
        async with (AsyncClient(via_proxy.url, tenant.admin_key) as client,
                    client.batch_publisher(topic) as publisher):
            results = await asyncio.gather(*(produce(publisher, n) for n in range(TASKS)))
            lone = publisher.publish({"alone": True})
            await publisher.flush()
            assert lone.done()
            with pytest.raises(TopicNotFound):
                async with client.batch_publisher("no-such-topic") as nowhere:
                    await nowhere.publish({"n": 1})
        return [message_id for some in results for message_id in some]

    ids = asyncio.run(scenario())
    assert len(set(ids)) == TASKS * EACH
    sizes = [len(seen.json()["messages"]) for seen in via_proxy.requests(f"{topic}/publish")]
    assert sum(sizes) == TASKS * EACH + 1
    assert len(sizes) <= 5, sizes
    assert stored(direct, topic) == TASKS * EACH + 1
