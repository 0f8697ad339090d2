"""An open-loop HTTP/1.1 load generator and a recording webhook sink, for bench/publish.py.

Open loop: request i is due at `start + i / rate` whatever became of the earlier requests,
and its latency counts from that due time, so time spent waiting for a free connection
counts too (no coordinated omission). Both ends speak just enough HTTP/1.1 over asyncio
streams to keep their own CPU use low: the machine that runs the benchmark also runs the
server, the worker and PostgreSQL. Times are `time.monotonic()`, one clock for every process
of the machine, so the sink's arrival times compare with the generator's due times.
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

#: What ends one exchange on a connection: the peer went away or spoke something else.
BROKEN = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


@dataclass
class Answer:
    """One request of an open-loop run: when it was due, when its response came, and its
    status (0: the connection failed)."""

    due: float
    done: float
    status: int

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class OpenLoop:
    """The answers of a run by request index; None: not answered before the deadline."""

    start: float
    answers: list[Answer | None]


# --- HTTP/1.1, just enough --------------------------------------------------------------------

async def read_message(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    """One request or response with a Content-Length body: start line, headers, body."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in head[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise ValueError("chunked bodies are not spoken here")
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return head[0], headers, body


def post_request(host: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# --- the generator --------------------------------------------------------------------------

def run_open_loop(base_url: str, path: str, headers: dict[str, str],
                  body: Callable[[int], bytes], rate: float, seconds: float,
                  connections: int, grace_s: float) -> OpenLoop:
    """POST `body(i)` to `path` for i in range(rate * seconds), each at its due time, over
    up to `connections` keep-alive connections; requests not answered `grace_s` after the
    last one was due are left unanswered."""
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80

    def request(index: int) -> bytes:
        return post_request(url.netloc, path, headers, body(index))

    return asyncio.run(_open_loop(host, port, request, int(rate * seconds), rate,
                                  connections, grace_s))


async def _open_loop(host: str, port: int, request: Callable[[int], bytes], count: int,
                     rate: float, connections: int, grace_s: float) -> OpenLoop:
    due: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    run = OpenLoop(time.monotonic() + 0.05, [None] * count)
    senders = [asyncio.create_task(_connection(host, port, request, due, run))
               for _ in range(connections)]
    for index in range(count):
        at = run.start + index / rate
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        due.put_nowait((index, at))
    for _ in senders:
        due.put_nowait(None)
    deadline = run.start + count / rate + grace_s
    _, late = await asyncio.wait(senders, timeout=max(0.0, deadline - time.monotonic()))
    for sender in late:
        sender.cancel()
    await asyncio.gather(*senders, return_exceptions=True)
    return run


async def _connection(host: str, port: int, request: Callable[[int], bytes],
                      due: asyncio.Queue[tuple[int, float] | None], run: OpenLoop) -> None:
    """Take the next due request, send it, wait for its answer; reconnect after a failure
    or a `Connection: close`."""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        while (item := await due.get()) is not None:
            index, at = item
            try:
                if reader is None or writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                writer.write(request(index))
                await writer.drain()
                status_line, headers, _ = await read_message(reader)
                status = int(status_line.split()[1])
                keep = headers.get("connection", "").lower() != "close"
            except BROKEN:
                status, keep = 0, False
            run.answers[index] = Answer(at, time.monotonic(), status)
            if not keep and writer is not None:
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


# --- the webhook sink -----------------------------------------------------------------------

class Sink:
    """The recording webhook sink: a forked process serving HTTP/1.1 on 127.0.0.1 that notes
    (X-MQ-Message-Id, arrival time) of every POST and answers 200 at once. A process of its
    own, so that neither the generator nor the sink waits for the other's GIL."""

    def __init__(self, url: str) -> None:
        self.url = url

    def count(self) -> int:
        """How many distinct message ids arrived."""
        return int(httpx.get(self.url + "/count", timeout=10).text)

    def arrivals(self) -> list[tuple[str, float]]:
        """(message id, arrival time) of every request, duplicates included, in order."""
        records = httpx.get(self.url + "/records", timeout=60).json()
        return [(str(message_id), float(arrived)) for message_id, arrived in records]

    def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until `count` distinct message ids arrived; False if they did not in time."""
        deadline = time.monotonic() + timeout
        while self.count() < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True


@contextmanager
def webhook_sink() -> Iterator[Sink]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    port = listener.getsockname()[1]
    process = multiprocessing.get_context("fork").Process(target=_serve_sink, args=(listener,),
                                                          daemon=True)
    process.start()
    listener.close()
    try:
        yield Sink(f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join(10)


def _serve_sink(listener: socket.socket) -> None:
    # Ctrl-C is the bench's to handle (it stops the sink); SIGTERM ends the sink at once.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    asyncio.run(_sink(listener))


async def _sink(listener: socket.socket) -> None:
    records: list[tuple[str, float]] = []
    distinct: set[str] = set()

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                start_line, headers, _ = await read_message(reader)
                arrived = time.monotonic()
                if start_line.startswith("GET /records"):
                    body = json.dumps(records).encode()
                elif start_line.startswith("GET /count"):
                    body = str(len(distinct)).encode()
                else:
                    message_id = headers.get("x-mq-message-id", "")
                    records.append((message_id, arrived))
                    distinct.add(message_id)
                    body = b"{}"
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except BROKEN:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(exchange, sock=listener)
    async with server:
        await server.serve_forever()


# --- figures --------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    """The q-th percentile, interpolated like `statistics.quantiles(method="inclusive")`;
    `inf` entries (never answered, never delivered) sort last and stay `inf`."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low, high = ordered[math.floor(rank)], ordered[math.ceil(rank)]
    fraction = rank - math.floor(rank)
    if fraction == 0 or low == high:
        return low
    return math.inf if math.isinf(high) else low + (high - low) * fraction


def summarize(run: OpenLoop, message_id: Callable[[int], str],
              arrivals: list[tuple[str, float]]) -> dict[str, float]:
    """Publish rate and RTT from the answers; publish -> webhook from the sink's arrivals,
    matched by message id. Never answered / never delivered count as `inf` milliseconds."""
    answered = [a for a in run.answers if a is not None]
    ok = [(i, a) for i, a in enumerate(run.answers) if a is not None and a.ok]
    first: dict[str, float] = {}
    for received, arrived in arrivals:
        first.setdefault(received, arrived)
    published = {message_id(i): a for i, a in ok}
    delivered = [mid for mid in published if mid in first]
    rtt = [(a.done - a.due) * 1000 if a is not None and a.ok else math.inf
           for a in run.answers]
    webhook = [(first[mid] - a.due) * 1000 if mid in first else math.inf
               for mid, a in published.items()]
    last = max((a.done for _, a in ok), default=run.start)
    return {
        "offered": len(run.answers),
        "rate": len(ok) / (last - run.start) if last > run.start else 0.0,
        "non2xx": sum(1 for a in answered if a.status and not a.ok),
        "failed": sum(1 for a in answered if not a.status),
        "unanswered": len(run.answers) - len(answered),
        "rtt_p50": percentile(rtt, 50), "rtt_p99": percentile(rtt, 99),
        "hook_p50": percentile(webhook, 50), "hook_p99": percentile(webhook, 99),
        "hook_max": max(webhook, default=math.nan),
        "published": len(published), "delivered": len(delivered),
        "duplicates": sum(1 for received, _ in arrivals if received in published)
        - len(delivered),
    }
