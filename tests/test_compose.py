"""docker-compose.yml, Dockerfile, Procfile and .env.example: valid, complete and consistent.

No Docker engine runs here and the suite needs no Compose binary: the file is validated
against the Compose Specification's JSON schema (vendored in tests/vendor, with its source),
resolved as Compose would (YAML anchors and merges, `${VAR:-default}` interpolation), and
checked for what the project relies on. Where a Compose binary is installed, its own
`config -q` runs too.
"""

from __future__ import annotations

import configparser
import dataclasses
import fnmatch
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from mq.settings import Settings
from tests.processes import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "tests" / "vendor" / "compose-spec.json"
ENVIRONMENT = {"MQ_OPERATOR_TOKEN": "compose-test"}
#: Procfile process -> the compose service that runs it.
PROCFILE_SERVICES = {"release": "release", "web": "api", "worker": "worker",
                     "scheduler": "scheduler"}


def interpolate(value: Any, environ: Mapping[str, str]) -> Any:
    """Compose's variable interpolation (`$VAR`, `${VAR}`, `${VAR:-default}`, `$$`) applied
    to every string of `value`."""
    if isinstance(value, dict):
        return {key: interpolate(item, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, environ) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        default = match.group("default")
        found = environ.get(name)
        if default is not None and not found:
            return default
        return found or ""

    return _VARIABLE.sub(substitute, value)


_VARIABLE = re.compile(r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
                       r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    """The compose file as YAML gives it (anchors and merge keys applied)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any]) -> dict[str, Any]:
    """The compose file as Compose resolves it, with MQ_OPERATOR_TOKEN set."""
    return interpolate(raw_compose, ENVIRONMENT)


def test_compose_file_is_valid(raw_compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    problems = sorted(Draft7Validator(schema).iter_errors(raw_compose), key=str)
    assert not problems, "\n".join(
        f"{'/'.join(map(str, problem.absolute_path))}: {problem.message}"
        for problem in problems)
    binary = compose_binary()
    if binary:  # an extra check where a Compose implementation is installed
        result = subprocess.run([*binary, "config", "-q"], cwd=ROOT, capture_output=True,
                                text=True, check=False)
        assert result.returncode == 0, result.stderr


def compose_binary() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False).returncode == 0:
        return ["docker", "compose"]
    return None


def test_schema_check_catches_a_broken_file(raw_compose: dict[str, Any]) -> None:
    """The vendored schema is strict enough to matter: a misspelt key and a wrong type fail."""
    broken = json.loads(json.dumps(raw_compose))
    broken["services"]["api"]["deponds_on"] = ["postgres"]
    broken["services"]["worker"]["restart"] = {"always": True}
    validator = Draft7Validator(json.loads(SCHEMA.read_text()))
    paths = {"/".join(map(str, problem.absolute_path))
             for problem in validator.iter_errors(broken)}
    assert "services/api" in paths
    assert "services/worker/restart" in paths


def test_interpolation_follows_compose() -> None:
    environ = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d}/${EMPTY:-d}/${UNSET:-d}/$SET/$${SET}/${UNSET}",
                       environ) == "x/d/d/x/${SET}/"


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
        assert services[name]["build"] == "."
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


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def test_compose_runs_the_procfile_processes(compose: dict[str, Any]) -> None:
    """Both deployments run the same processes: each Procfile entry has its service, with the
    same command."""
    processes = procfile()
    assert set(processes) == set(PROCFILE_SERVICES)
    services = compose["services"]
    for process, service in PROCFILE_SERVICES.items():
        assert services[service]["command"] == shlex.split(processes[process]), process


def test_api_port_health_check_and_prometheus_agree(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    port = api["environment"]["PORT"]
    assert api["ports"] == [f"{port}:{port}"]
    assert f"http://127.0.0.1:{port}/api/v1/mq/health" in " ".join(api["healthcheck"]["test"])
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    assert f"api:{port}" in json.dumps(scrape)


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
