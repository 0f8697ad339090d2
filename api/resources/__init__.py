"""The API's resources: one flask-smorest blueprint per resource, which parses the request,
calls the service layer (`api.services`) with the dependencies it finds at the edge
(`api.context`, the caller from `api.auth`) and serialises the answer. Blueprints never
import each other; what two of them share lives below them.
"""

from __future__ import annotations

from flask_smorest import Api

from api.resources import (
    api_keys,
    dead_letters,
    messages,
    metrics,
    monitoring,
    publish,
    queues,
    scheduling,
    schemas,
    subscriptions,
    tenants,
)

#: In the order the OpenAPI document lists them.
RESOURCES = (tenants, api_keys, queues, publish, scheduling, messages, subscriptions,
             monitoring, metrics, dead_letters, schemas)


def register_blueprints(api: Api, base: str) -> None:
    for resource in RESOURCES:
        api.register_blueprint(resource.blp, url_prefix=base + resource.PREFIX)
