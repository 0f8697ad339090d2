"""`mq dev`: the whole service in one terminal, on embedded defaults.

What is not configured is provided (`cli.embedded`): without `DATABASE_URL` an embedded
PostgreSQL server with its data under `.mq/postgres`, without `REDIS_URL` an embedded Valkey
server with its data and append-only file under `.mq/valkey`; both survive restarts.
Migrations run, a `dev` tenant exists, and its admin key is printed. API, worker and scheduler
then run as child processes under honcho, with prefixed output.

Stopping: honcho starts each child in its own session and stops it with SIGTERM to its process
group; the embedded servers ignore the terminal's Ctrl-C, which reaches this process, and are
stopped last, after every child has exited.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from types import FrameType

from cli.embedded import embedded_postgres, embedded_valkey
from models import Database, upgrade
from models.tenancy import ensure_admin_key
from mq.settings import Settings
from mq.urls import without_password

STATE_DIR = Path(".mq")
DEV_TENANT = "dev"
#: The dev tenant's admin key: keys are stored hashed, so this file is the only copy.
KEY_FILE = "dev-admin-key"
OPERATOR_TOKEN_FILE = "operator-token"
SECRET_KEY_FILE = "secret-key"
#: The processes and their options; the API listens on loopback only, as a dev server should.
PROCESSES = {"api": "--host 127.0.0.1", "worker": "", "scheduler": ""}
READY_TIMEOUT_S = 60.0
#: What the children run: the `mq` command line, as `python -m`.
CLI_MODULE = "cli.main"


class Stopped(Exception):
    """SIGTERM arrived before the process manager took over the signals."""


_stop_asked = threading.Event()


def run(settings: Settings, environ: Mapping[str, str]) -> int:
    """Run the dev stack until Ctrl-C or SIGTERM; returns the exit code."""
    signal.signal(signal.SIGTERM, _raise_stopped)
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)
    try:
        with embedded_database(settings, environ) as database_url, \
                embedded_redis(settings, environ) as redis_url:
            settings = dev_settings(settings, environ, database_url, redis_url)
            upgrade(settings.database_url)
            _stop_if_asked()
            say(f"database {without_password(settings.database_url)} migrated")
            key = ensure_dev_key(settings)
            _stop_if_asked()
            return run_processes(settings, environ, banner(settings, key, environ))
    except (KeyboardInterrupt, Stopped):
        say("stopped")
        return 0


def say(text: str) -> None:
    print(f"mq dev: {text}", flush=True)


def _raise_stopped(_signum: int, _frame: FrameType | None) -> None:
    _stop_asked.set()
    raise Stopped


def _stop_if_asked() -> None:
    """Raise `Stopped` again if SIGTERM came: raised inside code that loses exceptions (a C
    extension's module import, such as the database driver's), it may not have arrived."""
    if _stop_asked.is_set():
        raise Stopped


def database_configured(environ: Mapping[str, str]) -> bool:
    return bool(environ.get("DATABASE_URL"))


def redis_configured(settings: Settings, environ: Mapping[str, str]) -> bool:
    return bool(environ.get("REDIS_URL") or settings.redis_cluster_nodes)


@contextlib.contextmanager
def embedded_database(settings: Settings, environ: Mapping[str, str]) -> Iterator[str]:
    """Yield the database URL to use: the configured one, or an embedded PostgreSQL's."""
    if database_configured(environ):
        yield settings.database_url
        return
    with embedded_postgres(STATE_DIR / "postgres") as url:
        say(f"embedded PostgreSQL on {without_password(url)}, data in {STATE_DIR / 'postgres'}")
        try:
            yield url
        finally:
            say("embedded PostgreSQL stopped")


@contextlib.contextmanager
def embedded_redis(settings: Settings, environ: Mapping[str, str]) -> Iterator[str]:
    """Yield the Redis URL to use: the configured one, or an embedded Valkey server's."""
    if redis_configured(settings, environ):
        yield settings.redis_url
        return
    with embedded_valkey(STATE_DIR / "valkey", persist=True) as url:
        say(f"embedded Valkey on {url.removesuffix('/0')}, data in {STATE_DIR / 'valkey'}")
        try:
            yield url
        finally:
            say("embedded Valkey stopped")


def dev_settings(settings: Settings, environ: Mapping[str, str], database_url: str,
                 redis_url: str) -> Settings:
    """The settings the children run with: embedded defaults where nothing is configured."""
    overrides: dict[str, object] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "mq_webhook_allow_private": True,
        "mq_operator_token": settings.mq_operator_token or _secret_file(OPERATOR_TOKEN_FILE),
        "mq_secret_key": settings.mq_secret_key or _secret_file(SECRET_KEY_FILE),
    }
    if not environ.get("LOG_FORMAT"):
        overrides["log_format"] = "text"
    return replace(settings, **overrides)  # type: ignore[arg-type]


def _secret_file(name: str, value: str | None = None) -> str:
    """Read `.mq/<name>`, or write `value` (default: a new random token) there, mode 0600."""
    path = STATE_DIR / name
    if value is None and path.exists():
        return path.read_text().strip()
    value = value or secrets.token_urlsafe(24)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(value + "\n")
    path.chmod(0o600)
    return value


def ensure_dev_key(settings: Settings) -> str:
    """The `dev` tenant's admin key: the saved one if it still works, else a new one."""
    saved_path = STATE_DIR / KEY_FILE
    saved = saved_path.read_text().strip() if saved_path.exists() else None
    database = Database(settings.database_url, pool_size=1)
    try:
        with database.session() as session:
            key = ensure_admin_key(session, DEV_TENANT, saved)
    finally:
        database.dispose()
    return key if key == saved else _secret_file(KEY_FILE, key)


def banner(settings: Settings, key: str, environ: Mapping[str, str]) -> str:
    base = f"http://127.0.0.1:{settings.port}"
    database = ("PostgreSQL (configured)" if database_configured(environ)
                else f"PostgreSQL (embedded, data in {STATE_DIR / 'postgres'})")
    redis = ("Redis (configured)" if redis_configured(settings, environ)
             else f"Valkey (embedded, data in {STATE_DIR / 'valkey'})")
    return "\n".join([
        "",
        "mq dev is up",
        f"  API             {base}/api/v1/mq",
        f"  docs            {base}/docs",
        f"  dashboard       {base}/dashboard (sign in with the admin key or operator token)",
        f"  tenant          {DEV_TENANT}",
        f"  admin key       {key}",
        f"  operator token  {settings.mq_operator_token}",
        f"  database        {database} {without_password(settings.database_url)}",
        f"  redis           {redis} {without_password(settings.redis_url)}",
        f'  try             export MQ_KEY={key}; curl -H "Authorization: Bearer $MQ_KEY" '
        f"{base}/api/v1/mq/queues",
        "Press Ctrl-C to stop.",
        "",
    ])


def run_processes(settings: Settings, environ: Mapping[str, str], ready_banner: str) -> int:
    """Run API, worker and scheduler under honcho until one exits or a signal arrives."""
    from honcho.manager import Manager

    env = {**environ, **settings.as_environ(), "PYTHONUNBUFFERED": "1"}
    python = shlex.quote(sys.executable)
    manager = Manager()
    for name, options in PROCESSES.items():
        # `exec` so the shell honcho starts is replaced by the process itself.
        manager.add_process(name, f"exec {python} -m {CLI_MODULE} {name} {options}".strip(),
                            env=env)
    health = f"http://127.0.0.1:{settings.port}/api/v1/mq/health"
    threading.Thread(target=_announce_when_ready, args=(health, ready_banner),
                     daemon=True).start()
    manager.loop()
    # Stopped by Ctrl-C or SIGTERM (honcho's 130/143) is a clean stop, not a failure.
    return 0 if manager.returncode in (130, 143) else manager.returncode or 0


def _announce_when_ready(health_url: str, text: str) -> None:
    """Print the banner once the API answers, so it is the last thing on the screen."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(health_url,
                                                                   timeout=2) as response:
            if response.status == 200:
                print(text, flush=True)
                return
        time.sleep(0.3)
    print(f"the API did not answer {health_url} within {READY_TIMEOUT_S:.0f} s", flush=True)
