"""Make the README's dashboard screenshots from a running `mq dev`, with sample traffic.

    mq dev &                                   # in another terminal
    python docs/screenshots/make.py [--base http://127.0.0.1:3010] [--minutes 4]

It signs in with the dev tenant's admin key (`.mq/dev-admin-key`, written by `mq dev`),
creates a few queues and webhook subscriptions that deliver to a small local sink (one of
them fails a third of its deliveries, so there are retries and dead letters), publishes a
varying load for `--minutes`, then opens headless Chromium (Debian's `chromium` and
`chromium-driver`) and saves `overview.png` and `subscription.png` beside this script.
Run it again on the same `mq dev`: existing queues and subscriptions are reused.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.browser import chromium, sign_in, wait_for  # noqa: E402

HERE = Path(__file__).resolve().parent
API = "/api/v1/mq"
#: queue -> (consumer group, sink path) of each subscription
LAYOUT: dict[str, list[tuple[str, str]]] = {
    "orders": [("billing", "/ok"), ("shipping", "/ok")],
    "payments": [("ledger", "/flaky")],
    "emails": [("sender", "/ok")],
    "audit": [],
}
WEIGHTS = {"orders": 5, "payments": 3, "emails": 2, "audit": 1}


class Sink(BaseHTTPRequestHandler):
    """Answers 200 on /ok; on /flaky, 500 a third of the time."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        failing = self.path == "/flaky" and random.random() < 0.33
        self.send_response(500 if failing else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="http://127.0.0.1:3010")
    parser.add_argument("--key-file", default=str(ROOT / ".mq" / "dev-admin-key"))
    parser.add_argument("--minutes", type=float, default=4.0)
    args = parser.parse_args()
    key = Path(args.key_file).read_text().strip()
    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    api = httpx.Client(base_url=args.base + API, headers={"Authorization": f"Bearer {key}"})
    ledger = set_up(api, f"http://127.0.0.1:{sink.server_address[1]}")
    traffic(api, args.minutes)
    shoot(args.base, key, ledger)
    print(f"saved {HERE / 'overview.png'} and {HERE / 'subscription.png'}")


def set_up(api: httpx.Client, sink: str) -> str:
    """Queues and subscriptions (reused when they exist); the flaky subscription's id."""
    existing = {s["consumer_group"]: s for s in api.get("/subscriptions?limit=100").json()["items"]}
    flaky = ""
    for queue, subscriptions in LAYOUT.items():
        made = api.post("/queues", json={"name": queue, "partition_count": 2})
        assert made.status_code in (201, 409), made.text
        for group, path in subscriptions:
            found = existing.get(group)
            if found is None:
                body = {"topic": queue, "consumer_group": group, "max_retry_attempts": 1,
                        "retry_delay_ms": 200, "handler_config": {"type": "http",
                                                                  "url": sink + path}}
                created = api.post("/subscriptions", json=body)
                assert created.status_code == 201, created.text
                found = created.json()
            else:  # a new sink port each run
                api.put(f"/subscriptions/{found['id']}",
                        json={"handler_config": {"type": "http", "url": sink + path}})
            if path == "/flaky":
                flaky = found["id"]
    return flaky


def traffic(api: httpx.Client, minutes: float) -> None:
    """A load that rises and falls, in batches, each queue by its weight."""
    started = time.monotonic()
    end = started + minutes * 60
    while time.monotonic() < end:
        phase = (time.monotonic() - started) / 60
        per_second = 20 + 15 * math.sin(phase * 2.5)
        for queue, weight in WEIGHTS.items():
            count = max(1, int(per_second * weight / sum(WEIGHTS.values())))
            batch = [{"payload": {"queue": queue, "n": n, "amount": random.randint(1, 500)},
                      "key": f"customer-{random.randint(1, 40)}"} for n in range(count)]
            api.post("/publish/batch", json={"topic": queue, "messages": batch})
        time.sleep(1)


def shoot(base: str, key: str, subscription_id: str) -> None:
    with chromium(width=1400, height=900) as driver:
        sign_in(driver, base, key)
        driver.get(f"{base}/dashboard/")
        wait_for(driver, lambda d: d.find_elements("css selector", ".chart canvas"), "the chart")
        time.sleep(1)
        driver.save_screenshot(str(HERE / "overview.png"))
        driver.get(f"{base}/dashboard/subscriptions/{subscription_id}")
        time.sleep(1.5)
        driver.save_screenshot(str(HERE / "subscription.png"))


if __name__ == "__main__":
    main()
