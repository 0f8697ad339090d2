"""Redis clients for one process: a single server or a Redis Cluster."""

from __future__ import annotations

from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.cluster import ClusterNode, ClusterPipeline, RedisCluster

from mq.settings import Settings

RedisClient = Redis | RedisCluster
RedisPipeline = Pipeline | ClusterPipeline


def connect(settings: Settings, *, max_connections: int = 64) -> RedisClient:
    """A client for `REDIS_CLUSTER_NODES` when set, else for `REDIS_URL`.

    Replies are decoded as UTF-8 text; every value the service stores is text.
    """
    common: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": 5,
        "socket_timeout": 10,
        "health_check_interval": 30,
        "password": settings.redis_password,
    }
    if settings.redis_cluster_nodes:
        nodes = [ClusterNode(*_host_port(node)) for node in settings.redis_cluster_nodes]
        return RedisCluster(startup_nodes=nodes, max_connections=max_connections, **common)
    if settings.redis_password is None:
        del common["password"]
    return Redis.from_url(settings.redis_url, max_connections=max_connections, **common)


def _host_port(node: str) -> tuple[str, int]:
    host, _, port = node.rpartition(":")
    return host or "127.0.0.1", int(port)
