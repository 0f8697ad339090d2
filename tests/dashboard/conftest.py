"""A signed-in dashboard session on the Flask test client (pages and actions without a
browser; `test_browser.py` drives real Chromium against the real processes)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

DASHBOARD = "/dashboard"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


@dataclass
class Dashboard:
    """One browser-like session: its own cookie jar, the CSRF token of the last page."""

    client: FlaskClient
    token: str = ""

    def get(self, path: str, **kwargs: Any) -> Any:
        response = self.client.get(DASHBOARD + path, **kwargs)
        if response.mimetype == "text/html":
            found = _CSRF.search(response.get_data(as_text=True))
            if found:
                self.token = found.group(1)
        return response

    def post(self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True,
             **kwargs: Any) -> Any:
        form = dict(data or {})
        if csrf:
            form.setdefault("csrf_token", self.token or csrf_of(self.get("/sign-in").text))
        return self.client.post(DASHBOARD + path, data=form, **kwargs)

    def sign_in(self, secret: str) -> Any:
        self.get("/sign-in")
        return self.post("/sign-in", {"token": secret})


@pytest.fixture
def dashboard(app: Flask) -> Dashboard:
    return Dashboard(app.test_client())


def signed_in(app: Flask, secret: str) -> Dashboard:
    session = Dashboard(app.test_client())
    response = session.sign_in(secret)
    assert response.status_code == 303, response.text
    return session
