"""Acknowledgements of one pool consumer, group-committed.

Acks of concurrent worker threads that arrive while one round trip is in flight go together
in the next one (`ack_many.lua`: XACK, plus XDEL on a pool's direct stream, and the outcome
counted only if the entry was still pending).
"""

from __future__ import annotations

import logging
import threading

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
        self._ack_many = LuaScript(redis_client, "broker", "ack_many")
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
            keys: list[str] = []
            args: list[str] = []
            for handle, counters, field in chunk:
                keys += [handle.stream, counters]
                args += [handle.group, handle.entry_id, "1" if handle.direct else "0", field]
            self._ack_many(keys=keys, args=args)
            self._done(chunk)

    def _done(self, acked: list[Ack]) -> None:
        self.leases.release(handle for handle, _, _ in acked)
