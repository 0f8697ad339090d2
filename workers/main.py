"""Worker process entry point (`mq worker`)."""

from __future__ import annotations

import signal
import threading

from broker.connection import connect
from broker.heartbeats import Heartbeat
from broker.keys import Keys
from mq.settings import Settings

HEARTBEAT_S = 5.0


def run(settings: Settings, *, pools: list[str], processes: int, threads: int) -> int:
    """Run a worker until SIGINT/SIGTERM; returns the exit code."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    heartbeat = Heartbeat(connect(settings, max_connections=4), Keys(settings.redis_namespace),
                          "worker", ttl_s=3 * HEARTBEAT_S)
    while not stop.is_set():
        heartbeat.beat(subscriptions=0, pools=pools)
        stop.wait(HEARTBEAT_S)
    heartbeat.stop()
    return 0
