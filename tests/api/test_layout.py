"""The API's inner layout, checked from its imports (read with `ast`, nothing is imported):
resources (blueprints) never import each other, and the service layer below them is handed
its dependencies instead of reaching for Flask, the request's context or a resource."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

API = Path(__file__).resolve().parents[2] / "api"
#: What only the edge (resources, authentication, the app factory) may import.
EDGE = ("flask", "flask_smorest", "api.context", "api.auth", "api.resources")


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def reaches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("path", sorted((API / "resources").glob("[!_]*.py")), ids=str)
def test_resources_do_not_import_each_other(path: Path) -> None:
    others = {n for n in imports(path) if reaches(n, "api.resources")}
    assert others == set()


@pytest.mark.parametrize("path", [*sorted((API / "services").glob("*.py")),
                                  API / "dependencies.py"], ids=str)
def test_the_service_layer_stays_below_the_edge(path: Path) -> None:
    found = {n for n in imports(path) if any(reaches(n, edge) for edge in EDGE)}
    assert found == set()


def test_the_subscription_fields_the_service_reads_are_the_schemas() -> None:
    from api.resources.subscriptions import SubscriptionFields, SubscriptionOut
    from api.services.subscriptions import SETTABLE, SHOWN

    assert set(SubscriptionFields._declared_fields) == {"topic", *SETTABLE}
    assert set(SubscriptionOut._declared_fields) == {"topic", *SHOWN}
