"""Ready-made JSON responses, for views whose status depends on the outcome (flask-smorest
passes a `Response` through unserialized; the view's schemas document it)."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify


def json_response(body: dict[str, Any], status: int) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response
