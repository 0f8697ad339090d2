"""The `mq` command line: the service's processes and the operator's chores.

    mq api                      the HTTP API under gunicorn (the Procfile's `web`)
    mq worker [--pools a,b] [--processes N] [--threads N]
    mq scheduler
    mq db upgrade               run the database migrations
    mq tenants create NAME      a tenant and its admin key
    mq dev                      everything in one terminal, on embedded defaults

Thin by design: it builds `Settings.from_env()` once and hands it to the code that does the
work. `cli` is the top layer of the package graph. The processes' packages are still imported
inside the command that runs them, so that one process does not load the others' code.

The Procfile's `web` line is `mq api`: the gunicorn command line below is its only source.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence

from sqlalchemy.exc import OperationalError

from models import Database, upgrade
from models.tenancy import create_tenant
from mq.errors import ConfigurationError, MQError
from mq.logging import configure_logging
from mq.settings import Settings

Command = Callable[[Settings, argparse.Namespace], int]

#: The app factory gunicorn serves.
APP_TARGET = "api:create_app()"


def gunicorn_args(settings: Settings, host: str = "0.0.0.0",
                  app_target: str = APP_TARGET) -> list[str]:
    """gunicorn's arguments for the API (the Procfile's `web` process)."""
    return [
        "--bind", f"{host}:{settings.port}",
        "--workers", str(settings.web_concurrency),
        "--threads", "4",
        "--graceful-timeout", "10",
        app_target,
    ]


def run_api(settings: Settings, args: argparse.Namespace) -> int:
    """Replace this process with gunicorn, so signals and exit codes are gunicorn's own."""
    argv = [sys.executable, "-m", "gunicorn", *gunicorn_args(settings, args.host, args.app)]
    sys.stdout.flush()
    os.execve(sys.executable, argv, {**os.environ, **metrics_environ(settings)})
    return 1  # not reached


def metrics_environ(settings: Settings) -> dict[str, str]:
    """Prometheus multiprocess mode for gunicorn's workers: an emptied directory of their own
    (a temporary one unless `PROMETHEUS_MULTIPROC_DIR` names one), so `/metrics` adds up the
    counters of every API worker instead of answering with whichever worker took the scrape."""
    directory = settings.prometheus_multiproc_dir or tempfile.mkdtemp(prefix="mq-prometheus-")
    os.makedirs(directory, exist_ok=True)
    for stale in glob.glob(os.path.join(directory, "*.db")):
        os.remove(stale)
    return {"PROMETHEUS_MULTIPROC_DIR": directory}


def run_worker(settings: Settings, args: argparse.Namespace) -> int:
    from workers.main import run

    configure_logging(settings, "worker")
    threads = args.threads if args.threads is not None else settings.max_concurrent_consumers
    return run(settings, pools=args.pools, processes=args.processes, threads=threads)


def run_scheduler(settings: Settings, _args: argparse.Namespace) -> int:
    from scheduler.main import run

    configure_logging(settings, "scheduler")
    # APScheduler logs every run of every job at INFO; the jobs run several times a second.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    return run(settings)


def run_db_upgrade(settings: Settings, _args: argparse.Namespace) -> int:
    upgrade(settings.database_url)
    print("database migrated to the latest revision")
    return 0


def run_tenants_create(settings: Settings, args: argparse.Namespace) -> int:
    """Create a tenant and print its admin key, which is stored hashed and never shown again."""
    from api.fields import TENANT_NAME_PATTERN

    name: str = args.name
    if not re.fullmatch(TENANT_NAME_PATTERN, name):
        return fail(f"invalid tenant name {name!r}: use 1-63 characters of a-z, 0-9 and '-', "
                    "starting with a letter or digit")
    database = Database(settings.database_url, pool_size=1)
    try:
        with database.session() as session:
            tenant, key = create_tenant(session, name)
    finally:
        database.dispose()
    if args.json:
        print(json.dumps({"id": tenant.id, "name": tenant.name, "admin_key": key}))
    else:
        print(f"tenant     {tenant.name}\nid         {tenant.id}\nadmin key  {key}\n"
              "(the key is shown only once: keep it now)")
    return 0


def run_dev(settings: Settings, _args: argparse.Namespace) -> int:
    from cli import dev  # the embedded servers' packages: only `mq dev` needs them

    return dev.run(settings, os.environ)


def pools(raw: str) -> list[str]:
    names = [name.strip() for name in raw.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one pool")
    return names


def positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mq", description="Multi-tenant message queue service")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    api = commands.add_parser("api", help="serve the HTTP API with gunicorn on $PORT")
    api.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")
    # Another WSGI app under the same server settings: for benchmarks, not for operators.
    api.add_argument("--app", default=APP_TARGET, help=argparse.SUPPRESS)
    api.set_defaults(run=run_api)

    worker = commands.add_parser("worker", help="deliver messages to subscriptions")
    worker.add_argument("--pools", type=pools, default=["default"],
                        help="comma-separated delivery pools to serve (default: default)")
    worker.add_argument("--processes", type=positive, default=1,
                        help="worker processes to fork (default: 1)")
    worker.add_argument("--threads", type=positive, default=None,
                        help="delivery threads per process (default: MAX_CONCURRENT_CONSUMERS)")
    worker.set_defaults(run=run_worker)

    commands.add_parser("scheduler", help="release retries and scheduled messages"
                        ).set_defaults(run=run_scheduler)

    db = commands.add_parser("db", help="database chores").add_subparsers(
        dest="db_command", required=True, metavar="COMMAND")
    db.add_parser("upgrade", help="run the migrations").set_defaults(run=run_db_upgrade)

    tenants = commands.add_parser("tenants", help="tenant chores").add_subparsers(
        dest="tenants_command", required=True, metavar="COMMAND")
    create = tenants.add_parser("create", help="create a tenant and print its admin key")
    create.add_argument("name")
    create.add_argument("--json", action="store_true", help="print one JSON object")
    create.set_defaults(run=run_tenants_create)

    commands.add_parser("dev", help="API, worker and scheduler in one terminal"
                        ).set_defaults(run=run_dev)
    return parser


def fail(message: str, code: int = 1) -> int:
    print(f"mq: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        return fail(f"configuration error: {exc.message}", 2)
    command: Command = args.run
    try:
        return command(settings, args)
    except MQError as exc:
        return fail(exc.message)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a clear line for operators instead of a traceback
        if isinstance(exc, OperationalError):
            return fail(f"cannot reach the database: {exc.orig}")
        raise


if __name__ == "__main__":
    sys.exit(main())
