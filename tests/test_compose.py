"""docker-compose.yml, Dockerfile, Procfile and .env.example: valid, complete and consistent.

No Docker engine runs here and the suite needs no Compose binary: the file is validated
against the Compose Specification's JSON schema (vendored in tests/vendor, with its source),
resolved as Compose would (YAML anchors and merges, `${VAR:-default}` interpolation), and
checked for what the project relies on. Where a Compose binary is installed, its own
`config -q` runs too. The `cluster` profile (a Redis Cluster) and its override,
deploy/docker-compose.cluster.yml, are checked the same way; the cluster's one-shot creation
script runs here against stand-ins for `redis-cli` and `getent`.
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
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from mq.settings import Settings
from tests.processes import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
CLUSTER_OVERRIDE = ROOT / "deploy" / "docker-compose.cluster.yml"
#: The `cluster` profile's Redis nodes and the job that joins them into a cluster.
CLUSTER_NODES = [f"redis-node-{number}" for number in range(1, 7)]
CLUSTER_SERVICES = {*CLUSTER_NODES, "redis-cluster-create"}
#: The processes that use Redis, pointed at the cluster by the override.
CLUSTER_CLIENTS = ("api", "worker", "scheduler")
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


@pytest.fixture(scope="module")
def raw_override() -> dict[str, Any]:
    """deploy/docker-compose.cluster.yml as YAML gives it."""
    return yaml.safe_load(CLUSTER_OVERRIDE.read_text())


def schema_problems(document: dict[str, Any]) -> str:
    schema = json.loads(SCHEMA.read_text())
    problems = sorted(Draft7Validator(schema).iter_errors(document), key=str)
    return "\n".join(f"{'/'.join(map(str, problem.absolute_path))}: {problem.message}"
                     for problem in problems)


def test_compose_file_is_valid(raw_compose: dict[str, Any]) -> None:
    assert not schema_problems(raw_compose)
    binary = compose_binary()
    if binary:  # an extra check where a Compose implementation is installed
        result = subprocess.run([*binary, "config", "-q"], cwd=ROOT, capture_output=True,
                                text=True, check=False)
        assert result.returncode == 0, result.stderr


def test_cluster_override_is_valid(raw_override: dict[str, Any]) -> None:
    assert not schema_problems(raw_override)
    binary = compose_binary()
    if binary:
        result = subprocess.run(
            [*binary, "-f", str(COMPOSE_FILE), "-f", str(CLUSTER_OVERRIDE),
             "--profile", "cluster", "config", "-q"],
            cwd=ROOT, capture_output=True, text=True, check=False)
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
    by_default = {name for name, service in services.items() if not service.get("profiles")}
    assert by_default == {"postgres", "redis", "release", "api", "worker", "scheduler",
                          "prometheus"}
    assert set(services) - by_default == CLUSTER_SERVICES
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


# --- the `cluster` profile -----------------------------------------------------------------


def option(command: list[str], name: str) -> str:
    """The value after `name` in a command line."""
    assert name in command, f"{name} missing from {command}"
    return command[command.index(name) + 1]


def test_cluster_profile_has_six_cluster_nodes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in CLUSTER_SERVICES:
        assert services[name]["profiles"] == ["cluster"], name
        assert services[name]["image"].startswith("redis:7"), name
    for name in CLUSTER_NODES:
        node = services[name]
        command = node["command"]
        assert command[0] == "redis-server", name
        assert option(command, "--cluster-enabled") == "yes", name
        # Clients are redirected to the node's service name, which every container resolves.
        assert option(command, "--cluster-announce-hostname") == name
        assert option(command, "--cluster-preferred-endpoint-type") == "hostname", name
        assert option(command, "--appendonly") == "yes", name
        assert node["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"], name
        assert "ports" not in node and "container_name" not in node, name


def test_cluster_create_job_runs_once_after_the_nodes(compose: dict[str, Any]) -> None:
    job = compose["services"]["redis-cluster-create"]
    assert job["restart"] == "no"
    assert job["depends_on"] == {name: {"condition": "service_healthy"}
                                 for name in CLUSTER_NODES}
    assert job["command"][:2] == ["sh", "-c"]
    script = job["command"][2]
    assert "redis-cli --cluster create" in script
    assert "--cluster-replicas 1" in script
    assert "--cluster-yes" in script


def run_create_script(script: str, directory: Path, created: bool) -> tuple[int, list[str]]:
    """Run the job's script with stand-ins for `redis-cli` (which logs its arguments and says
    cluster_state:ok once a cluster is created) and `getent` (redis-node-N -> 10.0.0.N); answer
    its exit status and the redis-cli calls."""
    bin_dir = directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "redis-cli").write_text(
        '#!/bin/sh\n'
        'echo "$*" >> "$STAND_IN/calls"\n'
        'case "$*" in\n'
        '  *"--cluster create"*) touch "$STAND_IN/created" ;;\n'
        '  *"cluster info"*) if [ -f "$STAND_IN/created" ]; then state=ok; else state=fail; fi\n'
        '    printf "cluster_state:%s\\r\\ncluster_slots_assigned:0\\r\\n" "$state" ;;\n'
        'esac\n')
    (bin_dir / "getent").write_text(
        '#!/bin/sh\n'
        '[ "$1" = hosts ] || exit 2\n'
        'case "$2" in redis-node-*) echo "10.0.0.${2#redis-node-}   $2" ;; *) exit 2 ;; esac\n')
    for stand_in in bin_dir.iterdir():
        stand_in.chmod(0o755)
    calls = directory / "calls"
    calls.unlink(missing_ok=True)
    (directory / "created").unlink(missing_ok=True)
    if created:
        (directory / "created").touch()
    environ = {"PATH": f"{bin_dir}:/usr/bin:/bin", "STAND_IN": str(directory)}
    result = subprocess.run(["sh", "-c", script], env=environ, capture_output=True, text=True,
                            timeout=30, check=False)
    return result.returncode, calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.skipif(not shutil.which("sh") or not shutil.which("awk"),
                    reason="needs a POSIX shell and awk")
def test_cluster_create_script(compose: dict[str, Any], tmp_path: Path) -> None:
    """The script (as Compose hands it over, `$$` unescaped) creates the cluster from the six
    nodes' addresses with one replica per master, waits for every node, and does nothing when
    the cluster exists already."""
    script = compose["services"]["redis-cluster-create"]["command"][2]
    status, calls = run_create_script(script, tmp_path, created=False)
    assert status == 0, calls
    addresses = [f"10.0.0.{number}:6379" for number in range(1, 7)]
    creates = [call for call in calls if "--cluster create" in call]
    assert creates == [f"--cluster create {' '.join(addresses)} --cluster-replicas 1 "
                       "--cluster-yes"]
    # Afterwards it asks every node for its state.
    after = calls[calls.index(creates[0]) + 1:]
    assert after == [f"-h {name} cluster info" for name in CLUSTER_NODES]

    status, calls = run_create_script(script, tmp_path, created=True)
    assert status == 0
    assert calls == ["-h redis-node-1 cluster info"]


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """The services of `base` with `override` merged in as Compose does for the keys the
    override uses (mappings: `environment`, `depends_on`)."""
    services = json.loads(json.dumps(base["services"]))
    for name, changes in override["services"].items():
        for key, value in changes.items():
            services[name][key] = {**services[name].get(key, {}), **value}
    return services


def test_cluster_override_points_the_processes_at_the_cluster(
        compose: dict[str, Any], raw_override: dict[str, Any]) -> None:
    override = interpolate(raw_override, ENVIRONMENT)
    assert set(override["services"]) == set(CLUSTER_CLIENTS)
    for name, changes in override["services"].items():
        assert set(changes) == {"environment", "depends_on"}, name  # what `merged` handles
    services = merged(compose, override)
    for name in CLUSTER_CLIENTS:
        settings = Settings.from_env(services[name]["environment"])
        assert settings.redis_cluster_nodes == tuple(f"{node}:6379" for node in CLUSTER_NODES)
        assert settings.database_url == compose["services"][name]["environment"]["DATABASE_URL"]
        assert services[name]["depends_on"] == {
            **compose["services"][name]["depends_on"],
            "redis-cluster-create": {"condition": "service_completed_successfully"},
        }, name
    assert services["api"]["environment"]["PORT"] == "3010"  # the first file's keys stay
