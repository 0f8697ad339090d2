"""`broker.connection.connect`: the one way every process gets a Redis client, with the same
timeouts and pool sizes for a single server, TLS, a password and a cluster."""

from __future__ import annotations

import dataclasses

from redis import BlockingConnectionPool, Redis
from redis.cluster import RedisCluster
from redis.connection import SSLConnection

from broker.connection import CONNECT_TIMEOUT_S, connect
from mq.settings import Settings
from tests.cluster import RedisClusterProcesses


def test_a_tls_url_gives_tls_connections_with_the_urls_password() -> None:
    client = connect(Settings(redis_url="rediss://:s3cret@cache.internal:6380/2"))
    assert isinstance(client, Redis)
    pool = client.connection_pool
    assert issubclass(pool.connection_class, SSLConnection)
    kwargs = pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.internal", 6380, 2)
    assert kwargs["password"] == "s3cret"
    assert kwargs["socket_connect_timeout"] == CONNECT_TIMEOUT_S
    assert kwargs["decode_responses"] is True


def test_redis_password_applies_when_the_url_has_none() -> None:
    client = connect(Settings(redis_url="redis://127.0.0.1:6379/0", redis_password="pw"),
                     max_connections=3, wait_s=7, reply_timeout_s=None)
    pool = client.connection_pool
    assert isinstance(pool, BlockingConnectionPool)
    assert pool.max_connections == 3 and pool.timeout == 7
    assert pool.connection_kwargs["password"] == "pw"
    assert pool.connection_kwargs["socket_timeout"] is None


def test_a_cluster_client_has_the_same_pools_on_every_node(
        settings: Settings, redis_cluster: RedisClusterProcesses) -> None:
    client = connect(dataclasses.replace(settings, redis_cluster_nodes=(redis_cluster.nodes[0],)),
                     max_connections=4, wait_s=5)
    try:
        assert isinstance(client, RedisCluster)
        assert client.ping()
        primaries = client.get_primaries()
        assert sorted(node.name for node in primaries) == sorted(redis_cluster.masters())
        for node in primaries:
            pool = node.redis_connection.connection_pool
            assert isinstance(pool, BlockingConnectionPool) and pool.max_connections == 4
            assert pool.connection_kwargs["decode_responses"] is True
    finally:
        client.close()
