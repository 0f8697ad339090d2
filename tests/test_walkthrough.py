"""The README's curl walk-through, replayed against the real `mq api` (gunicorn).

The steps are read from the README itself, so the test fails when the README stops working
as written: each `curl` command runs with httpx, its status must be the one the README
announces after it, and the fields the README shows must be the ones the API answers.
"""

from __future__ import annotations

import json
import re
import shlex
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from cli.dev import KEY_FILE, STATE_DIR
from mq.settings import Settings
from tests.processes import ROOT, child_env, mq, running_api

#: Fields whose README values are examples of a generated value, not a promise.
GENERATED = {"id", "offset", "timestamp", "created_at", "updated_at", "published_at"}


@dataclass
class Step:
    """One `curl` command of the walk-through and what the README says it answers."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    status: int = 0
    shown: dict[str, Any] = field(default_factory=dict)


def walkthrough_section(title: str = "Walk-through") -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {title}\n(.*?)(?=^## )", readme, re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def parse_steps(section: str, variables: dict[str, str]) -> tuple[dict[str, str], list[Step]]:
    """The `export`s and the `curl` steps of the section, with `$VARIABLES` substituted."""
    parts = re.split(r"^```sh\n(.*?)^```\n", section, flags=re.M | re.S)
    exports: dict[str, str] = {}
    steps: list[Step] = []
    # re.split alternates prose and code: [prose, code, prose, code, ..., prose]
    for index in range(1, len(parts), 2):
        code, prose_after = parts[index], parts[index + 1]
        for command in code.replace("\\\n", " ").splitlines():
            if export := re.fullmatch(r"export (\w+)=(.+)", command.strip()):
                exports[export.group(1)] = export.group(2)
                continue
            words = shlex.split(command, comments=True)
            if words[:1] == ["curl"]:
                step = parse_curl(words[1:], {**exports, **variables})
                answer = prose_after.strip().splitlines()[0] if prose_after.strip() else ""
                status = re.match(r"`(\d{3})\b", answer)
                assert status, f"no status announced after {command!r}"
                step.status = int(status.group(1))
                step.shown = shown_fields(answer)
                steps.append(step)
    return exports, steps


def substitute(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$(\w+)", lambda m: variables.get(m.group(1), m.group(0)), text)


def parse_curl(words: list[str], variables: dict[str, str]) -> Step:
    step = Step(method="GET", url="")
    options = iter(words)
    for word in options:
        if word == "-s":
            continue
        if word == "-X":
            step.method = next(options)
        elif word == "-H":
            name, value = next(options).split(":", 1)
            step.headers[name] = substitute(value.strip(), variables)
        elif word == "-d":
            step.body = json.loads(next(options))
            step.method = step.method if step.method != "GET" else "POST"
        elif word.startswith("-"):
            raise AssertionError(f"the walk-through uses a curl option this test ignores: {word}")
        else:
            step.url = substitute(word, variables)
    return step


def shown_fields(answer: str) -> dict[str, Any]:
    """`"field": value` pairs with a plain JSON value in the README's answer line."""
    pairs = re.findall(r'"(\w+)": ("[^"…]*"|-?\d+(?:\.\d+)?|true|false|null|\[\])', answer)
    return {name: json.loads(value) for name, value in pairs}


def find_field(body: Any, name: str) -> Iterator[Any]:
    """Every value of `name` in a JSON document, at any depth."""
    if isinstance(body, dict):
        for key, value in body.items():
            if key == name:
                yield value
            yield from find_field(value, name)
    elif isinstance(body, list):
        for item in body:
            yield from find_field(item, name)


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[str]:
    """The real API process (`mq api`: gunicorn) on the test database and Redis namespace."""
    with running_api({"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
                      "REDIS_NAMESPACE": settings.redis_namespace,
                      "MQ_OPERATOR_TOKEN": settings.mq_operator_token or "",
                      "WEB_CONCURRENCY": "1", "LOG_FORMAT": "text"}, exits_cleanly=True) as root:
        yield root


def run_steps(steps: list[Step], key: str, base: str, api: str) -> list[Any]:
    """Each step against the real API: the status and the fields the README shows."""
    answers = []
    for step in steps:
        url = step.url.replace(base, f"{api}/api/v1/mq")
        assert step.headers["Authorization"] == f"Bearer {key}"
        response = httpx.request(step.method, url, headers=step.headers, json=step.body)
        assert response.status_code == step.status, (step, response.text)
        body = response.json()
        for name, value in step.shown.items():
            if name not in GENERATED:
                assert value in list(find_field(body, name)), (name, value, body)
        answers.append(body)
    return answers


def new_tenant_key(settings: Settings) -> str:
    created = mq("tenants", "create", f"walk-{uuid.uuid4().hex[:8]}", "--json",
                 env=child_env(DATABASE_URL=settings.database_url))
    assert created.returncode == 0, created.stderr
    return json.loads(created.stdout)["admin_key"]


@pytest.mark.e2e
def test_readme_walkthrough_works_as_written(api: str, settings: Settings) -> None:
    key = new_tenant_key(settings)
    exports, steps = parse_steps(walkthrough_section(), {"MQ_KEY": key})
    assert set(exports) == {"MQ_KEY", "API"}
    # The README reads the key from the file `mq dev` writes it to.
    assert exports["MQ_KEY"] == f"$(cat {STATE_DIR / KEY_FILE})"
    assert exports["API"] == "http://127.0.0.1:3010/api/v1/mq"
    assert [step.method for step in steps] == ["POST", "POST", "GET", "GET"]
    base = exports["API"]
    answers = run_steps(steps, key, base, api)

    queue, published, message, stats = answers
    publish = steps[1]
    assert queue["name"] == publish.body["topic"] == message["topic"]
    assert published["message_id"] == message["message_id"] == publish.body["message_id"]
    assert message["payload"] == publish.body["payload"]
    assert message["key"] == publish.body["key"]
    assert (message["partition"], message["offset"]) == (published["partition"],
                                                         published["offset"])
    assert stats["stats"]["length"] == 1
    assert stats["stats"]["published_total"] == 1
    assert stats["stats"]["partitions"][published["partition"]]["last_offset"] == \
        published["offset"]

    # "Sending the same body again answers 200 with "duplicate": true and publishes nothing."
    again = httpx.request(publish.method, publish.url.replace(base, f"{api}/api/v1/mq"),
                          headers=publish.headers, json=publish.body)
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["offset"] == published["offset"]
    after = httpx.get(steps[3].url.replace(base, f"{api}/api/v1/mq"), headers=steps[3].headers)
    assert after.json()["stats"]["length"] == 1


@pytest.mark.e2e
def test_readme_typed_payloads_work_as_written(api: str, settings: Settings) -> None:
    key = new_tenant_key(settings)
    base = "http://127.0.0.1:3010/api/v1/mq"
    _, steps = parse_steps(walkthrough_section("Typed payloads"), {"MQ_KEY": key, "API": base})
    assert [step.status for step in steps] == [201, 201, 422, 201, 200]
    schema, queue, refused, published, message = run_steps(steps, key, base, api)
    assert queue["schema_subject"] == schema["subject"]
    assert "(at /cents)" in refused["error"]["details"]["payload"][0]
    assert message["payload"] == {**steps[3].body["payload"], "note": ""}
    assert published["message_id"] == message["message_id"]


def test_walkthrough_parser_reads_statuses_and_fields() -> None:
    section = (
        "Intro\n\n```sh\nexport API=http://x/api\n```\n\n```sh\n"
        "curl -s -X POST \"$API/queues\" \\\n  -H \"Authorization: Bearer $MQ_KEY\" \\\n"
        "  -d '{\"name\": \"q\"}'\n```\n\n"
        "`201` with `{\"name\": \"q\", \"n\": 2, \"id\": \"…\"}`.\nAgain: `\"n\": 3`.\n"
    )
    exports, steps = parse_steps(section, {"MQ_KEY": "k"})
    assert exports == {"API": "http://x/api"}
    assert steps == [Step(method="POST", url="http://x/api/queues",
                          headers={"Authorization": "Bearer k"}, body={"name": "q"},
                          status=201, shown={"name": "q", "n": 2})]
