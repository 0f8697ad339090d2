"""Schemathesis against the app in process: the OpenAPI document must tell the truth.

Every operation of `/openapi.json` gets schema-valid (positive) and schema-violating
(negative) requests, sent through the WSGI app as a tenant admin, and each answer is checked:
no 5xx, a documented status, the documented media type and body schema, and invalid input
refused. Operations whose path names an object also run against objects that exist (a queue,
a subscription, a schema, a message; deletes excepted), or they would only ever see 404s.

Bounded and reproducible: a fixed number of examples per operation and mode, derandomized
(Hypothesis derives each operation's examples from the test itself, not from a random seed),
and no example database. `MQ_SCHEMATHESIS_EXAMPLES` raises the count for a longer local run.
"""

from __future__ import annotations

import os
import random
import uuid
from collections import Counter
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import TenantHandle, make_tenant

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection]
EXAMPLES = int(os.environ.get("MQ_SCHEMATHESIS_EXAMPLES", "40"))
#: Keep the tenant's own admin key: a generated `DELETE /api-keys/{key_id}` could revoke it.
SKIPPED = {("DELETE", "/api/v1/mq/api-keys/{key_id}")}


@pytest.fixture(scope="module")
def tenant_for_run(app: Flask) -> TenantHandle:
    return make_tenant(app.test_client())


@pytest.fixture(scope="module")
def existing(tenant_for_run: TenantHandle) -> dict[str, str]:
    """Path parameters naming objects of the tenant (each operation also runs with them)."""
    admin = tenant_for_run.admin
    queue = tenant_for_run.create_queue(f"st-{uuid.uuid4().hex[:8]}")["name"]
    subscription = admin.post("/subscriptions", {
        "topic": queue, "consumer_group": "st",
        "handler_config": {"type": "http", "url": "http://127.0.0.1:9/hook"}})
    assert subscription.status_code == 201, subscription.json
    subject = f"st-{uuid.uuid4().hex[:8]}"
    schema = admin.post("/schemas", {"subject": subject, "format": "json",
                                     "definition": {"type": "object"}})
    assert schema.status_code == 201, schema.json
    published = admin.post(f"/topics/{queue}/publish", {"payload": {"n": 1}})
    assert published.status_code == 201, published.json
    return {"name": queue, "subscription_id": subscription.json["id"], "subject": subject,
            "schema_id": schema.json["id"], "message_id": published.json["message_id"],
            "version": "latest"}


def loaded(app: Flask, key: str, document: dict[str, Any] | None = None) -> Any:
    """The app's document (or `document`), sending requests to the app with `key`."""
    config = schemathesis.Config.from_dict({"auth": {"openapi": {"bearer": {"bearer": key}}}})
    if document is None:
        return schemathesis.openapi.from_wsgi("/openapi.json", app, config=config)
    schema = schemathesis.openapi.from_dict(document, config=config)
    schema.app = app
    return schema


@pytest.fixture(scope="module")
def api_schema(app: Flask, tenant_for_run: TenantHandle) -> Any:
    return loaded(app, tenant_for_run.admin.token)


def _run(operation: Any, mode: GenerationMode, path: dict[str, str] | None,
         statuses: Counter[int]) -> list[str]:
    """Run `operation`'s examples in `mode`, counting the answers' statuses; the reports of
    its failures (each once), collected so that one run reports every operation."""
    failures: list[str] = []

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path))
    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        # Hypothesis seeds the global `random` alike for every example; the service draws
        # its record and request ids from it, which would then repeat across examples.
        random.seed()
        try:
            statuses[case.call_and_validate(checks=CHECKS).status_code] += 1
        except FailureGroup as failure:
            failures.append(str(failure))

    try:
        run()
    except Unsatisfiable:  # nothing to negate (an operation without parameters)
        return []
    return list(dict.fromkeys(failures))


def test_the_openapi_document_tells_the_truth(api_schema: Any, existing: dict[str, str]
                                              ) -> None:
    failures: dict[str, list[str]] = {}
    statuses: Counter[int] = Counter()
    for result in api_schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIPPED:
            continue
        names = {p.name for p in operation.path_parameters}
        known = {name: existing[name] for name in names if name in existing}
        runs: list[tuple[GenerationMode, dict[str, str] | None]] = [
            (mode, None) for mode in GenerationMode]
        if known and len(known) == len(names) and operation.method.upper() != "DELETE":
            runs.extend((mode, known) for mode in GenerationMode)
        for mode, path in runs:
            found = _run(operation, mode, path, statuses)
            if found:
                label = f"{operation.label} ({mode.value}{', existing objects' if path else ''})"
                failures[label] = found
    # Not everything refused: the admin key was sent and objects were created and found.
    assert statuses[200] and statuses[201], statuses
    report = "\n\n".join(f"=== {label}\n" + "\n---\n".join(found)
                         for label, found in failures.items())
    assert not failures, f"{len(failures)} operation runs failed:\n\n{report}"


def test_a_document_that_lies_fails_the_run(app: Flask, tenant_for_run: TenantHandle) -> None:
    """The check above can fail: a document without the 201 of `POST /queues` or with
    another error body is caught."""
    document = app.test_client().get("/openapi.json").json
    responses = document["paths"]["/api/v1/mq/queues"]["post"]["responses"]
    del responses["201"]
    document["components"]["schemas"]["ErrorBody"]["required"].append("status")
    schema = loaded(app, tenant_for_run.admin.token, document)
    operation = schema["/api/v1/mq/queues"]["POST"]
    found = "\n".join(_run(operation, GenerationMode.POSITIVE, None, Counter()))
    assert "Undocumented status code" in found, found
    assert "Response violates schema" in found, found
