"""Redis clients: the one function every process connects through.

A single server (`REDIS_URL`, `redis://` or `rediss://` for TLS) or a Redis Cluster
(`REDIS_CLUSTER_NODES`: `host:port,…`; the scheme and credentials of `REDIS_URL` then apply
to every node, so `rediss://:secret@/` gives a cluster over TLS with a password). Every client
gets the same timeouts; a pool either fails at once when it has no free connection or, with
`wait_s`, waits for one (the workers' threads share a few connections that way).
"""

from __future__ import annotations

from typing import Any, TypeGuard
from urllib.parse import unquote, urlsplit

from redis import BlockingConnectionPool, ConnectionPool, Redis
from redis.client import Pipeline
from redis.cluster import ClusterNode, ClusterPipeline, RedisCluster

from mq.settings import Settings

RedisClient = Redis | RedisCluster
RedisPipeline = Pipeline | ClusterPipeline

#: Seconds to open a connection; a reply that takes longer than `REPLY_TIMEOUT_S` is an error.
CONNECT_TIMEOUT_S = 5
REPLY_TIMEOUT_S = 10


def connect(settings: Settings, *, max_connections: int = 64, wait_s: float | None = None,
            reply_timeout_s: float | None = REPLY_TIMEOUT_S) -> RedisClient:
    """A client for `REDIS_CLUSTER_NODES` when set, else for `REDIS_URL`.

    `max_connections` is per server (per node of a cluster). `reply_timeout_s=None` is for
    connections that block on reads (XREAD BLOCK) for as long as they ask. Replies are decoded
    as UTF-8 text; every value the service stores is text.
    """
    common: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": reply_timeout_s,
        "health_check_interval": 30,
        "max_connections": max_connections,
    }
    if wait_s is not None:
        common |= {"timeout": wait_s}
    if settings.redis_password is not None:
        common["password"] = settings.redis_password
    pool_class = BlockingConnectionPool if wait_s is not None else ConnectionPool
    if settings.redis_cluster_nodes:
        return _cluster(settings, common, pool_class)
    return Redis(connection_pool=pool_class.from_url(settings.redis_url, **common))


def is_cluster(client: RedisClient) -> TypeGuard[RedisCluster]:
    return isinstance(client, RedisCluster)


def _cluster(settings: Settings, common: dict[str, Any],
             pool_class: type[ConnectionPool]) -> RedisCluster:
    url = urlsplit(settings.redis_url)
    if url.scheme == "rediss":
        common["ssl"] = True
    if url.username:
        common["username"] = unquote(url.username)
    if url.password and "password" not in common:
        common["password"] = unquote(url.password)
    nodes = [ClusterNode(*_host_port(node)) for node in settings.redis_cluster_nodes]
    return RedisCluster(startup_nodes=nodes, connection_pool_class=pool_class, **common)


def _host_port(node: str) -> tuple[str, int]:
    host, _, port = node.rpartition(":")
    return host or "127.0.0.1", int(port)


def close_client(client: RedisClient) -> None:
    """Close every connection of `client` (`Redis.close` alone leaves a pool it was given
    open)."""
    client.close()
    if isinstance(client, Redis):
        client.connection_pool.disconnect()
