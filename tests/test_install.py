"""A clean install, as a new user makes it: `pip install .` into an empty virtual environment
brings everything the service needs — the `mq` command, and a driver for every way users
write a PostgreSQL URL (SQLAlchemy 2.1 defaults `postgresql://` to psycopg 3, which the
service does not install)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.processes import ROOT, child_env

pytestmark = pytest.mark.e2e

CONNECT = """
import pathlib
import sys

import broker
import scheduler
from sqlalchemy import text
from handlers.database import make_engine
for url in sys.argv[1:]:
    with make_engine(url, pooled=False).connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar() == 1
    print("connected", url.split("://")[0])
for package in (broker, scheduler):  # the Lua scripts ship with the code that runs them
    print(package.__name__, len(list(pathlib.Path(package.__file__).parent.glob("*.lua"))))
dashboard = pathlib.Path(broker.__file__).parent.parent / "api" / "dashboard"
print("dashboard", len(list(dashboard.glob("templates/dashboard/*.html"))),
      len(list(dashboard.glob("static/*"))))
"""


def test_a_clean_install_runs_and_connects_to_postgresql_as_users_write_it(
        tmp_path: Path, database_url: str) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(ROOT)],
                               capture_output=True, text=True, timeout=600, check=False)
    assert installed.returncode == 0, installed.stderr[-3000:]

    env = child_env()
    env.pop("PYTHONPATH")  # the installed package, not the checkout
    helped = subprocess.run([str(venv / "bin" / "mq"), "--help"], capture_output=True,
                            text=True, env=env, cwd=tmp_path, timeout=60, check=False)
    assert helped.returncode == 0 and "worker" in helped.stdout, helped.stderr

    bare = make_url(database_url).set(drivername="postgresql")
    urls = [bare.render_as_string(hide_password=False),
            bare.set(drivername="postgres").render_as_string(hide_password=False)]
    connected = subprocess.run([str(python), "-c", CONNECT, *urls], capture_output=True,
                               text=True, env=env, cwd=tmp_path, timeout=60, check=False)
    assert connected.returncode == 0, connected.stderr[-3000:]
    scripts = [str(len(list((ROOT / package).glob("*.lua")))) for package in ("broker",
                                                                                "scheduler")]
    dashboard = ROOT / "api" / "dashboard"
    pages = str(len(list(dashboard.glob("templates/dashboard/*.html"))))
    static = str(len(list(dashboard.glob("static/*"))))
    assert connected.stdout.split() == ["connected", "postgresql", "connected", "postgres",
                                        "broker", scripts[0], "scheduler", scripts[1],
                                        "dashboard", pages, static]
