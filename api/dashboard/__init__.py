"""The web dashboard at `/dashboard`: server-rendered pages (Jinja) refreshed by htmx.

- `api.dashboard.session`: sign-in with an API key or the operator token, kept in Flask's
  signed session cookie (`HttpOnly`, `SameSite=Strict`, path `/dashboard`, signed with
  `MQ_SECRET_KEY`); the cookie holds the key's hash, never the key. CSRF tokens (Flask-WTF)
  on every form.
- `api.dashboard.pages`: what each page shows, assembled from the service layer that the REST
  API uses (`api.services`), under the same role checks (`api.auth`).
- `api.dashboard.views`: the routes. Actions are plain form posts answered with a redirect;
  live parts of a page are fetched again every 2 s (htmx `hx-select`).

Everything the pages load comes from this origin: htmx and uPlot are vendored in `static/`
(see `static/VENDORED.md`), and every response carries a Content-Security-Policy that allows
nothing else (no inline scripts or styles either). Jinja escapes every value.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Flask, Response, request

from api.dashboard.views import blp
from mq.settings import Settings

PREFIX = "/dashboard"
SESSION_HOURS = 12
CSP = "; ".join([
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
    "connect-src 'self'", "form-action 'self'", "frame-ancestors 'none'", "base-uri 'none'",
    "object-src 'none'",
])


def register_dashboard(app: Flask, settings: Settings) -> None:
    """Mount the dashboard. Without `MQ_SECRET_KEY` its pages say how to turn it on."""
    app.config.update(
        SECRET_KEY=settings.mq_secret_key,
        SESSION_COOKIE_NAME="mq_dashboard",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=settings.mq_cookie_secure,
        SESSION_COOKIE_PATH=PREFIX,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
        # Set the cookie only when the session changes: a live refresh answered after a
        # sign-out must not bring the signed-out session's cookie back.
        SESSION_REFRESH_EACH_REQUEST=False,
        WTF_CSRF_TIME_LIMIT=SESSION_HOURS * 3600,
        WTF_CSRF_SSL_STRICT=settings.mq_cookie_secure,
    )
    app.register_blueprint(blp, url_prefix=PREFIX)
    app.after_request(_guard_dashboard_response)


def _guard_dashboard_response(response: Response) -> Response:
    if request.blueprint == blp.name:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        if not request.path.startswith(f"{PREFIX}/static/"):
            response.headers["Cache-Control"] = "no-store"
    return response
