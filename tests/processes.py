"""Helpers for tests that run the `mq` command line and its processes as subprocesses."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
#: Variables that would point a child at the developer's own services instead of the test's.
SERVICE_VARIABLES = ("DATABASE_URL", "REDIS_URL", "REDIS_CLUSTER_NODES", "REDIS_PASSWORD",
                     "REDIS_NAMESPACE", "MQ_OPERATOR_TOKEN", "PORT", "LOG_FORMAT",
                     "WEB_CONCURRENCY")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(**overrides: str) -> dict[str, str]:
    """The test's environment without service settings, plus `overrides`."""
    env = {name: value for name, value in os.environ.items() if name not in SERVICE_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(overrides)
    return env


def mq(*args: str, env: Mapping[str, str], cwd: Path | None = None,
       timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `mq ARGS` to completion."""
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=dict(env), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, check=False)


class Running:
    """A long-running `mq` subprocess whose output is collected line by line."""

    def __init__(self, *args: str, env: Mapping[str, str], cwd: Path | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", *args], env=dict(env), cwd=cwd,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            self._new.put(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        """The first output line matching `pattern`, waiting for it up to `timeout` s."""
        regex = re.compile(pattern)
        for line in list(self.lines):
            if match := regex.search(line):
                return match
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._new.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None and self._new.empty():
                    break
                continue
            if match := regex.search(line):
                return match
        raise AssertionError(f"no line matching {pattern!r}; output:\n{self.output[-5000:]}")

    def kill(self) -> None:
        """Clean-up after a failed test: SIGKILL the process and everything it started."""
        for pid in descendants(self.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def wait_until_up(url: str, timeout: float = 60) -> httpx.Response:
    """GET `url` until it answers 200; returns that response."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=3)
            if response.status_code == 200:
                return response
            last = response.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer 200 within {timeout} s (last: {last})")


@contextlib.contextmanager
def running_api(environ: Mapping[str, str], *, exits_cleanly: bool = False) -> Iterator[str]:
    """`mq api` (gunicorn) with `environ` on a free port, once it answers: yields its root
    URL, and stops it after (SIGTERM, then SIGKILL if it lingers). `exits_cleanly` asserts
    that SIGTERM ended it with status 0."""
    port = free_port()
    api = Running("api", env=child_env(**{**environ, "PORT": str(port)}))
    try:
        wait_until_up(f"http://127.0.0.1:{port}/api/v1/mq/health")
        yield f"http://127.0.0.1:{port}"
    finally:
        api.process.send_signal(signal.SIGTERM)
        try:
            status: int | None = api.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            status = None
        api.kill()
        if exits_cleanly:
            assert status == 0, api.output[-3000:]


def descendants(pid: int) -> dict[int, str]:
    """Every living descendant of `pid` with its command line (from /proc)."""
    children: dict[int, list[int]] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
        commands[int(entry.name)] = command
    found: dict[int, str] = {}
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found[child] = commands[child]
            stack.append(child)
    return found


def is_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (an exited process not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def running_in(directory: Path) -> dict[int, str]:
    """Living processes whose working directory is `directory` or below it."""
    root = directory.resolve()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if (cwd == root or root in cwd.parents) and is_running(int(entry.name)):
            found[int(entry.name)] = command
    return found


def wait_until(check: Callable[[], Any], timeout: float = 20.0, every: float = 0.05, *,
               what: str = "condition", describe: Callable[[], str] = lambda: "") -> Any:
    """Poll `check` until it answers something true, and return that; after `timeout` s fail,
    naming `what` and appending `describe()` (the state seen)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s\n{describe()}".rstrip())
        time.sleep(every)
