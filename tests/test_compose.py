"""docker-compose.yml, Dockerfile and .env.example: valid, complete and consistent.

No Docker engine runs here: `docker-compose config -q` (Debian's docker-compose package)
validates the file against the compose schema, and the structure is checked on the YAML.
"""

from __future__ import annotations

import configparser
import dataclasses
import fnmatch
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from mq.settings import Settings
from tests.processes import ROOT


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as docker-compose resolves it (anchors and merges applied)."""
    result = subprocess.run(["docker-compose", "config"], cwd=ROOT, capture_output=True,
                            text=True, check=False, env={"PATH": "/usr/bin:/bin:/usr/local/bin",
                                                         "MQ_OPERATOR_TOKEN": "compose-test"})
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_docker_compose_is_installed() -> None:
    assert shutil.which("docker-compose"), "install Debian's docker-compose package"


def test_compose_file_is_valid() -> None:
    result = subprocess.run(["docker-compose", "config", "-q"], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "release", "api", "worker", "scheduler",
                             "prometheus"}
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["redis"]["image"].startswith("redis:7")
    commands = {name: services[name]["command"] for name in ("release", "api", "worker",
                                                             "scheduler")}
    assert commands == {"release": ["mq", "db", "upgrade"], "api": ["mq", "api"],
                        "worker": ["mq", "worker"], "scheduler": ["mq", "scheduler"]}
    for name in commands:
        assert services[name]["build"]["context"] == str(ROOT)
        environment = services[name]["environment"]
        assert environment["DATABASE_URL"].startswith("postgresql")
        assert "@postgres:5432/" in environment["DATABASE_URL"]
        assert environment["REDIS_URL"].startswith("redis://redis:6379")
        assert environment["MQ_OPERATOR_TOKEN"] == "compose-test"


def test_worker_scales(compose: dict[str, Any]) -> None:
    """`--scale worker=N` needs a service without a fixed name or published ports."""
    worker = compose["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert compose["services"]["api"]["ports"]


def test_redis_keeps_an_append_only_file(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert "/data" in mount_targets(redis)
    assert "/var/lib/postgresql/data" in mount_targets(compose["services"]["postgres"])


def mount_targets(service: dict[str, Any]) -> set[str]:
    """Container paths of a service's volumes (short `src:dst[:mode]` or long syntax)."""
    return {volume["target"] if isinstance(volume, dict) else volume.split(":")[1]
            for volume in service.get("volumes", [])}


def test_healthchecks_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("postgres", "redis", "api"):
        assert services[name]["healthcheck"]["test"], name
    assert services["release"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["release"]["restart"] == "no"
    for name in ("api", "worker", "scheduler"):
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "release": {"condition": "service_completed_successfully"},
        }, name


def test_dockerfile_installs_the_project() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert re.search(r"^RUN pip install \.", dockerfile, re.M)
    assert re.search(r'^CMD \["mq", "api"\]$', dockerfile, re.M)


def env_example() -> dict[str, str]:
    """Variables of .env.example; commented-out assignments are settings unset by default."""
    found: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if match := re.fullmatch(r"#? ?([A-Z][A-Z0-9_]*)=(.*)", line.strip()):
            found[match.group(1)] = match.group(2)
    return found


def test_env_example_lists_every_setting_with_its_default() -> None:
    listed = env_example()
    defaults = Settings()
    expected = defaults.as_environ()
    for spec in dataclasses.fields(Settings):
        name = spec.name.upper()
        assert name in listed, f"{name} is missing from .env.example"
        if getattr(defaults, spec.name) is None:
            continue
        assert listed[name] == expected[name], name
    assert set(listed) == {spec.name.upper() for spec in dataclasses.fields(Settings)}


def test_env_example_parses_back_to_the_defaults() -> None:
    """Copied to .env as it is, the file configures exactly the defaults."""
    text = (ROOT / ".env.example").read_text()
    active = dict(line.split("=", 1) for line in text.splitlines()
                  if line and not line.startswith("#"))
    assert Settings.from_env(active) == Settings()


def test_env_example_comments_every_setting() -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    for index, line in enumerate(lines):
        if re.fullmatch(r"#? ?[A-Z][A-Z0-9_]*=.*", line):
            above = lines[index - 1]
            assert above.startswith("# ") and "=" not in above.split()[1], (
                f"{line!r} has no comment line above it")


def test_the_image_gets_the_migrations() -> None:
    """The Dockerfile's `pip install .` is not editable: `mq db upgrade` in the image needs
    every migration file listed in setup.cfg's package data."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    patterns = [pattern.strip() for pattern in
                config["options.package_data"]["models"].split(",")]
    models = ROOT / "models"
    for path in (models / "migrations").rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            relative = path.relative_to(models).as_posix()
            assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative
