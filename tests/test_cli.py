"""The `mq` command line, run as a subprocess the way operators and `make dev` run it (input
checks that end before anything starts run in process)."""

from __future__ import annotations

import json
import re
import signal
import socket
import stat
import time
import uuid
from pathlib import Path

import httpx
import pytest
from flask.testing import FlaskClient
from sqlalchemy import create_engine, inspect, text

from cli.main import build_parser, gunicorn_args, main
from models.database import temporary_database
from mq.settings import Settings
from tests.conftest import ADMIN_DATABASE_URL, API
from tests.processes import (
    ROOT,
    Running,
    child_env,
    descendants,
    free_port,
    is_running,
    mq,
    running_in,
    wait_until_up,
)


def tenant_name() -> str:
    return f"cli-{uuid.uuid4().hex[:10]}"


# --- mq tenants create ----------------------------------------------------------------------

def test_tenants_create_prints_a_working_admin_key(settings: Settings,
                                                   client: FlaskClient) -> None:
    name = tenant_name()
    result = mq("tenants", "create", name, env=child_env(DATABASE_URL=settings.database_url))
    assert result.returncode == 0, result.stderr
    tenant_id = re.search(r"^id\s+(\S+)$", result.stdout, re.M).group(1)
    key = re.search(r"^admin key\s+(\S+)$", result.stdout, re.M).group(1)
    assert "shown only once" in result.stdout

    keys = client.get(f"{API}/api-keys", headers={"Authorization": f"Bearer {key}"})
    assert keys.status_code == 200, keys.json
    assert [(item["name"], item["role"]) for item in keys.json["items"]] == [("admin", "admin")]
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT id FROM tenants WHERE name = :name"),
                                        {"name": name}).scalar()
    finally:
        engine.dispose()
    assert stored == tenant_id


def test_tenants_create_json_output(settings: Settings, client: FlaskClient) -> None:
    name = tenant_name()
    result = mq("tenants", "create", name, "--json",
                env=child_env(DATABASE_URL=settings.database_url))
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["name"] == name and body["id"] and body["admin_key"].startswith("mq_")
    queues = client.get(f"{API}/queues", headers={"Authorization": f"Bearer {body['admin_key']}"})
    assert queues.status_code == 200
    assert queues.json["items"] == []


def test_tenants_create_refuses_a_taken_name(settings: Settings) -> None:
    env = child_env(DATABASE_URL=settings.database_url)
    name = tenant_name()
    assert mq("tenants", "create", name, env=env).returncode == 0
    again = mq("tenants", "create", name, env=env)
    assert again.returncode == 1
    assert again.stdout == ""
    assert f"tenant '{name}' already exists" in again.stderr
    assert "Traceback" not in again.stderr


@pytest.mark.parametrize("name", ["Acme", "-acme", "acme_corp", "a" * 64, "", "acme\n", "é"])
def test_tenants_create_refuses_an_invalid_name(settings: Settings, name: str,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """In process (`cli.main.main`): the name is refused before anything connects, and a
    subprocess per name would only time Python's start-up seven times."""
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    assert main(["tenants", "create", "--", name]) == 1
    assert "invalid tenant name" in capsys.readouterr().err


def test_tenants_create_without_a_database_says_so(tmp_path: Path) -> None:
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/none"
    result = mq("tenants", "create", "acme", env=child_env(DATABASE_URL=url), cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot reach the database" in result.stderr
    assert "Traceback" not in result.stderr


# --- mq db upgrade and configuration -----------------------------------------------------------

def test_db_upgrade_creates_the_schema_in_a_fresh_database(tmp_path: Path) -> None:
    with temporary_database(ADMIN_DATABASE_URL, "mqfresh") as url:
        env = child_env(DATABASE_URL=url)
        result = mq("db", "upgrade", env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        engine = create_engine(url)
        try:
            tables = set(inspect(engine).get_table_names())
            assert {"tenants", "api_keys", "message_topics", "message_subscriptions",
                    "message_records", "consumption_records", "schemas", "schedules",
                    "alembic_version"} <= tables
            with engine.connect() as connection:
                revision = connection.execute(
                    text("SELECT version_num FROM alembic_version")).scalar()
        finally:
            engine.dispose()
        assert revision
        # Idempotent, and the migrated database is usable by the other commands.
        assert mq("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
        assert mq("tenants", "create", "acme", env=env, cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("url", ["sqlite:///mq.db", "mysql://root@localhost/mq", "mq.db"])
def test_a_database_other_than_postgresql_is_refused(tmp_path: Path, url: str,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    assert main(["db", "upgrade"]) == 2
    assert "configuration error: DATABASE_URL: must be a PostgreSQL URL" in capsys.readouterr().err
    assert not (tmp_path / "mq.db").exists()


def test_a_malformed_setting_is_a_clear_error(tmp_path: Path) -> None:
    result = mq("db", "upgrade", env=child_env(PORT="eighty"), cwd=tmp_path)
    assert result.returncode == 2
    assert "configuration error: PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_options() -> None:
    args = build_parser().parse_args(["worker", "--pools", "default,bulk", "--processes", "2",
                                      "--threads", "3"])
    assert (args.pools, args.processes, args.threads) == (["default", "bulk"], 2, 3)
    defaults = build_parser().parse_args(["worker"])
    assert (defaults.pools, defaults.processes, defaults.threads) == (["default"], 1, None)
    for bad in (["--processes", "0"], ["--threads", "-1"], ["--pools", ","]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["worker", *bad])


def test_procfile_processes_are_mq_commands() -> None:
    """The Procfile names `mq` commands only: the gunicorn command line `mq api` runs has one
    source, `gunicorn_args`."""
    processes = dict(line.split(":", 1) for line in
                     (ROOT / "Procfile").read_text().splitlines() if line.strip())
    assert {name: command.strip() for name, command in processes.items()} == {
        "release": "mq db upgrade", "web": "mq api", "worker": "mq worker",
        "scheduler": "mq scheduler"}


def test_mq_api_runs_gunicorn_with_the_settings() -> None:
    settings = Settings(port=4567, web_concurrency=3)
    assert gunicorn_args(settings) == [
        "--bind", "0.0.0.0:4567", "--workers", "3", "--threads", "4", "--graceful-timeout", "10",
        "api:create_app()"]
    args = build_parser().parse_args(["api", "--host", "127.0.0.1"])
    assert gunicorn_args(settings, args.host, args.app)[:2] == ["--bind", "127.0.0.1:4567"]
    assert args.app == "api:create_app()"


# --- mq dev -------------------------------------------------------------------------------------

def start_dev(directory: Path, port: int) -> tuple[Running, str, str]:
    """`mq dev` in `directory` with nothing configured; returns it, its API URL and its key."""
    dev = Running("dev", env=child_env(PORT=str(port)), cwd=directory)
    try:
        api = dev.wait_for_line(r"API\s+(http://127\.0\.0\.1:\d+/api/v1/mq)").group(1)
        key = dev.wait_for_line(r"admin key\s+(mq_\S+)").group(1)
        dev.wait_for_line(r"docs\s+http://127\.0\.0\.1:\d+/docs")
    except BaseException:
        dev.kill()
        raise
    return dev, api, key


def postmaster_pid(directory: Path) -> int | None:
    """The pid of the embedded PostgreSQL server of `mq dev` in `directory`, if it runs."""
    pid_file = directory / ".mq" / "postgres" / "postmaster.pid"
    return int(pid_file.read_text().split()[0]) if pid_file.exists() else None


def stop_dev(dev: Running, directory: Path) -> None:
    """SIGINT `mq dev` and check that it stopped cleanly and left no process behind."""
    started = descendants(dev.process.pid)
    assert any("valkey-server" in command for command in started.values()), started
    assert sum("cli.main" in command for command in started.values()) >= 3, started
    postgres = postmaster_pid(directory)
    assert postgres is not None and is_running(postgres)
    # pg_ctl leaves the postmaster in a session of its own, no longer a descendant.
    started[postgres] = "postgres"
    dev.process.send_signal(signal.SIGINT)
    try:
        assert dev.process.wait(timeout=60) == 0, dev.output[-3000:]
    finally:
        dev.kill()
    left = {pid: command for pid, command in started.items() if is_running(pid)}
    assert left == {}, f"left running after mq dev stopped: {left}"
    assert running_in(directory) == {}
    assert postmaster_pid(directory) is None
    assert "embedded Valkey stopped" in dev.output
    assert "embedded PostgreSQL stopped" in dev.output


@pytest.mark.e2e
def test_dev_stopped_while_starting_leaves_nothing_behind(tmp_path: Path) -> None:
    dev = Running("dev", env=child_env(PORT=str(free_port())), cwd=tmp_path)
    try:
        dev.wait_for_line(r"mq dev: embedded Valkey on redis://127\.0\.0\.1:\d+")
        assert any("valkey-server" in command
                   for command in descendants(dev.process.pid).values())
        dev.process.send_signal(signal.SIGTERM)
        assert dev.process.wait(timeout=60) == 0, dev.output[-3000:]
    finally:
        dev.kill()
    assert running_in(tmp_path) == {}
    assert postmaster_pid(tmp_path) is None
    assert "mq dev: embedded Valkey stopped" in dev.output
    assert "mq dev: embedded PostgreSQL stopped" in dev.output


@pytest.mark.e2e
def test_dev_stops_everything_when_a_process_fails(tmp_path: Path) -> None:
    """The API cannot bind a port that is taken: the others and the server stop with it."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        dev = Running("dev", env=child_env(PORT=str(taken.getsockname()[1])), cwd=tmp_path)
        try:
            assert dev.process.wait(timeout=120) != 0
        finally:
            dev.kill()
    assert "api stopped" in dev.output
    assert "mq dev: embedded Valkey stopped" in dev.output
    assert "mq dev: embedded PostgreSQL stopped" in dev.output
    assert running_in(tmp_path) == {}
    assert postmaster_pid(tmp_path) is None


def wait_for_processes(api: str) -> None:
    """Wait until the worker and the scheduler have sent their first heartbeat."""
    status: dict = {}
    for _ in range(120):
        status = httpx.get(f"{api}/status", timeout=5).json()
        if status["processes"]["workers"] and status["processes"]["scheduler"]:
            return
        time.sleep(0.5)
    raise AssertionError(f"worker or scheduler never reported: {status}")


@pytest.mark.e2e
def test_dev_runs_everything_on_embedded_defaults_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    dev, api, key = start_dev(tmp_path, port)
    try:
        assert api == f"http://127.0.0.1:{port}/api/v1/mq"
        health = wait_until_up(f"{api}/health").json()
        assert health["status"] == "healthy"
        assert health["checks"]["database"]["details"]["backend"] == "postgresql"
        assert re.search(r"database\s+PostgreSQL \(embedded, data in \.mq/postgres\)",
                         dev.output)
        assert httpx.get(f"http://127.0.0.1:{port}/docs", timeout=5).status_code == 200
        wait_for_processes(api)

        auth = {"Authorization": f"Bearer {key}"}
        created = httpx.post(f"{api}/queues", json={"name": "dev-check"}, headers=auth)
        assert created.status_code == 201, created.text
        published = httpx.post(f"{api}/publish", headers=auth, json={
            "topic": "dev-check", "message_id": "dev-1", "payload": {"hello": "dev"}})
        assert published.status_code == 201, published.text

        state = tmp_path / ".mq"
        assert (state / "postgres" / "PG_VERSION").is_file()
        assert (state / "valkey" / "appendonlydir").is_dir()
        for secret in ("dev-admin-key", "operator-token"):
            assert stat.S_IMODE((state / secret).stat().st_mode) == 0o600
        assert (state / "dev-admin-key").read_text().strip() == key
        token = (state / "operator-token").read_text().strip()
        tenants = httpx.get(f"{api}/tenants", headers={"Authorization": f"Bearer {token}"})
        assert [item["name"] for item in tenants.json()["items"]] == ["dev"]
    except BaseException:
        dev.kill()
        raise
    stop_dev(dev, tmp_path)

    # A restart keeps the key, the metadata (PostgreSQL's data folder) and the stream
    # (Valkey's append-only file).
    dev, api, key_again = start_dev(tmp_path, port)
    try:
        assert key_again == key
        wait_until_up(f"{api}/health")
        auth = {"Authorization": f"Bearer {key}"}
        message = httpx.get(f"{api}/messages/dev-1", headers=auth)
        assert message.status_code == 200, message.text
        assert message.json()["payload"] == {"hello": "dev"}
        queue = httpx.get(f"{api}/queues/dev-check", headers=auth).json()
        assert queue["stats"]["length"] == 1
    except BaseException:
        dev.kill()
        raise
    stop_dev(dev, tmp_path)

    # The key file is the only copy of the key: without it, the dev tenant gets a new one.
    (tmp_path / ".mq" / "dev-admin-key").unlink()
    dev, api, new_key = start_dev(tmp_path, port)
    try:
        assert new_key != key
        wait_until_up(f"{api}/health")
        for used, status in ((new_key, 200), (key, 401)):
            answer = httpx.get(f"{api}/queues", headers={"Authorization": f"Bearer {used}"})
            assert answer.status_code == status, answer.text
    except BaseException:
        dev.kill()
        raise
    stop_dev(dev, tmp_path)
