"""Acknowledgements of one pool consumer, group-committed.

Acks of concurrent worker threads that arrive while one round trip is in flight go together
in the next one: one `ack.lua` per stream (XACK, plus XDEL on a pool's direct stream), all in
one pipeline, then the outcomes of the entries that were still pending counted on their
subscriptions' counters in a second one. The counters live under another hash tag than the
stream, so counting is its own step: a crash between the two loses a count, never an ack.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import redis

from broker.connection import RedisClient
from broker.leases import Leases
from broker.proxy import Handle
from broker.scripts import LuaScript

log = logging.getLogger(__name__)

#: Acks per script call.
ACK_CHUNK = 500

#: One ack: the delivery, its subscription's counters key, the counter field ("" for none).
Ack = tuple[Handle, str, str]


class AckBatcher:
    """Sends acks in batches and releases their leases once sent."""

    def __init__(self, redis_client: RedisClient, leases: Leases) -> None:
        self.leases = leases
        self.redis = redis_client
        self._ack = LuaScript(redis_client, "broker", "ack")
        self._acks: list[Ack] = []
        self._acks_lock = threading.Lock()
        self._flusher = threading.Lock()

    def add(self, handle: Handle, counters: str, field: str) -> None:
        with self._acks_lock:
            self._acks.append((handle, counters, field))

    def flush(self) -> None:
        """Send every queued ack; the thread that finds the flusher busy leaves its acks to
        the one in flight, whose loop picks them up."""
        while self._acks and self._flusher.acquire(blocking=False):
            try:
                self._flush_queued()
            finally:
                self._flusher.release()
            # An ack queued after the last look but before the release is flushed by the loop.

    def _flush_queued(self) -> None:
        while True:
            with self._acks_lock:
                batch, self._acks = self._acks, []
            if not batch:
                return
            try:
                self._send(batch)
            except (redis.ConnectionError, redis.TimeoutError):
                with self._acks_lock:  # kept for the next flush once Redis is back
                    self._acks[:0] = batch
                raise
            except Exception:
                # Never wedge later acks behind a batch Redis refuses: these entries stay
                # pending and are reclaimed (delivered again) after the timeout.
                log.exception("dropping %d acks Redis refused", len(batch))
                self._done(batch)

    def _send(self, batch: list[Ack]) -> None:
        for start in range(0, len(batch), ACK_CHUNK):
            chunk = batch[start:start + ACK_CHUNK]
            acked = ack_handles(self.redis, self._ack, [handle for handle, _, _ in chunk])
            pipe = self.redis.pipeline(transaction=False)
            for (_, counters, field), done in zip(chunk, acked, strict=True):
                if done and field:
                    pipe.hincrby(counters, field, 1)
            if len(pipe):
                pipe.execute()
            self._done(chunk)

    def _done(self, acked: list[Ack]) -> None:
        self.leases.release(handle for handle, _, _ in acked)


def ack_handles(redis_client: RedisClient, script: LuaScript,
                handles: Sequence[Handle]) -> list[bool]:
    """Acknowledge `handles` (`ack.lua`, one call per stream, one round trip); True for each
    one that was still pending."""
    by_stream: dict[str, list[int]] = {}
    for position, handle in enumerate(handles):
        by_stream.setdefault(handle.stream, []).append(position)
    pipe = redis_client.pipeline(transaction=False)
    for stream, positions in by_stream.items():
        args: list[str] = []
        for position in positions:
            handle = handles[position]
            args += [handle.group, handle.entry_id, "1" if handle.direct else "0"]
        script.queue(pipe, [stream], args)
    acked = [False] * len(handles)
    for positions, flags in zip(by_stream.values(), pipe.execute(), strict=True):
        for position, flag in zip(positions, flags, strict=True):
            acked[position] = flag == 1
    return acked
