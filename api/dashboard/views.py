"""The dashboard's routes: pages (GET) and actions (form POSTs answered with a redirect).

Each action calls the service function its REST endpoint calls, after the same role check
(`dashboard_access` with the REST endpoint's roles) and the form's CSRF check.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from marshmallow import ValidationError as InvalidFields
from werkzeug.wrappers import Response

from api.auth import CONSUMERS, PRODUCERS
from api.context import scope, services
from api.dashboard import pages
from api.dashboard.session import (
    Viewer,
    check_csrf,
    csrf_token,
    current_viewer,
    dashboard_access,
    require_secret_key,
    sign_in,
    sign_out,
    tenant_of,
)
from api.message_body import MessageFields
from api.services import publishing
from api.services.dead_letters import purge_dead_letters, redrive_dead_letters
from api.services.lookups import find_subscription
from api.services.messages import cancel, find_message
from api.services.schedules import find_schedule, stop_schedule
from api.services.subscriptions import seek, set_status
from broker.outcomes import RECORDED_STATUSES
from mq.errors import MQError, Unauthorized, ValidationError

blp = Blueprint("dashboard", __name__, template_folder="templates", static_folder="static",
                static_url_path="/static")

MESSAGE_FIELDS = MessageFields()


@blp.context_processor
def _template_globals() -> dict[str, Any]:
    return {"csrf_token": csrf_token, "CONSUMERS": CONSUMERS, "PRODUCERS": PRODUCERS}


@blp.errorhandler(MQError)
def _refused(error: MQError) -> Response | tuple[str, int]:
    """Signed out: to the sign-in page (htmx follows `HX-Redirect`). Anything else: the error
    page, with the status the REST API would answer."""
    if isinstance(error, Unauthorized) and request.endpoint != "dashboard.sign_in":
        target = url_for("dashboard.sign_in", next=request.full_path
                         if request.method == "GET" else None)
        if request.headers.get("HX-Request"):
            response = Response(status=204)
            response.headers["HX-Redirect"] = target
            return response
        return redirect(target, 303)
    viewer = _viewer_or_none()
    return render_template("dashboard/error.html", error=error, viewer=viewer), error.status


def _viewer_or_none() -> Viewer | None:
    try:
        return current_viewer()
    except MQError:
        return None


def _back(endpoint: str, **values: Any) -> Response:
    return redirect(url_for(endpoint, **values), 303)


def _dead_letters(count: int) -> str:
    return f"{count} dead letter{'' if count == 1 else 's'}"


def _form_action() -> None:
    check_csrf(request.form.get("csrf_token"))


# -- sign-in ------------------------------------------------------------------------------------
@blp.route("/sign-in", methods=["GET", "POST"], endpoint="sign_in")
def sign_in_page() -> Response | str | tuple[str, int]:
    require_secret_key()
    error = None
    if request.method == "POST":
        _form_action()
        try:
            sign_in(request.form.get("token", ""))
        except Unauthorized as exc:
            error = exc.message
        else:
            return redirect(_safe_next(request.args.get("next")), 303)
    page = render_template("dashboard/sign_in.html", error=error, viewer=None)
    return (page, 401) if error else page


def _safe_next(target: str | None) -> str:
    """Only a path inside the dashboard (never another site)."""
    prefix = url_for("dashboard.index")
    if target and target.startswith(prefix) and not target.startswith("//"):
        return target
    return prefix


@blp.route("/sign-out", methods=["POST"], endpoint="sign_out")
def sign_out_action() -> Response:
    _form_action()
    sign_out()
    return _back("dashboard.sign_in")


# -- pages ---------------------------------------------------------------------------------------
@blp.route("/")
@dashboard_access(operator=True)
def index(viewer: Viewer) -> str:
    if viewer.is_operator:
        return render_template("dashboard/operator.html", viewer=viewer,
                               **pages.operator_overview(scope()))
    data = pages.overview(scope(), tenant_of(viewer))
    return render_template("dashboard/overview.html", viewer=viewer, **data)


@blp.route("/queues/<name>")
@dashboard_access()
def queue(viewer: Viewer, name: str) -> str:
    data = pages.queue(scope(), tenant_of(viewer), name)
    return render_template("dashboard/queue.html", viewer=viewer, **data)


@blp.route("/subscriptions/<subscription_id>")
@dashboard_access(*CONSUMERS)
def subscription(viewer: Viewer, subscription_id: str) -> str:
    status = request.args.get("status") or None
    if status is not None and status not in RECORDED_STATUSES:
        raise ValidationError("unknown delivery status", {"status": list(RECORDED_STATUSES)})
    data = pages.subscription(scope(), tenant_of(viewer), subscription_id, status)
    return render_template("dashboard/subscription.html", viewer=viewer, status=status,
                           statuses=RECORDED_STATUSES, **data)


@blp.route("/messages")
@dashboard_access()
def message_search(viewer: Viewer) -> Response | str:
    wanted = request.args.get("id", "").strip()
    if wanted:
        return _back("dashboard.message", message_id=wanted)
    return render_template("dashboard/message.html", viewer=viewer, message=None)


@blp.route("/messages/<path:message_id>")
@dashboard_access()
def message(viewer: Viewer, message_id: str) -> str:
    data = pages.message(scope(), tenant_of(viewer), message_id)
    return render_template("dashboard/message.html", viewer=viewer, message=data)


@blp.route("/schedules")
@dashboard_access(*PRODUCERS)
def schedules(viewer: Viewer) -> str:
    data = pages.schedules(scope(), tenant_of(viewer))
    return render_template("dashboard/schedules.html", viewer=viewer, **data)


@blp.route("/workers")
@dashboard_access(operator=True)
def workers(viewer: Viewer) -> str:
    return render_template("dashboard/workers.html", viewer=viewer,
                           processes=pages.processes(scope()))


@blp.route("/schemas")
@dashboard_access()
def schemas(viewer: Viewer) -> str:
    data = pages.schemas(scope(), tenant_of(viewer), request.args.get("subject") or None,
                         request.args.get("version") or None)
    return render_template("dashboard/schemas.html", viewer=viewer, **data)


# -- actions -------------------------------------------------------------------------------------
@blp.route("/queues/<name>/publish", methods=["POST"])
@dashboard_access(*PRODUCERS)
def publish(viewer: Viewer, name: str) -> Response:
    _form_action()
    caller = tenant_of(viewer)
    message = _message_from_form(request.form)
    here = scope()
    topic = publishing.admit(here, caller, name, 1)
    [result] = publishing.publish(here, topic, caller, [message], batch=False)
    flash(f"published {result.message_id}" + (" (a duplicate)" if result.duplicate else ""))
    return _back("dashboard.queue", name=name)


def _message_from_form(form: Any) -> dict[str, Any]:
    """The test message of the queue page's form, checked as a REST publish body is."""
    raw: dict[str, Any] = {"payload": _json_field(form, "payload", required=True)}
    headers = _json_field(form, "headers", required=False)
    if headers is not None:
        raw["headers"] = headers
    for name in ("key", "message_id"):
        if form.get(name, "").strip():
            raw[name] = form[name].strip()
    try:
        return MESSAGE_FIELDS.load(raw)
    except InvalidFields as exc:
        raise ValidationError("the message is not valid", exc.normalized_messages()) from None


def _json_field(form: Any, name: str, *, required: bool) -> Any:
    text = form.get(name, "").strip()
    if not text:
        if required:
            raise ValidationError(f"{name} is required", {name: ["required"]})
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValidationError(f"{name} is not valid JSON", {name: [str(exc)]}) from None


@blp.route("/subscriptions/<subscription_id>/<any(pause, resume):action>", methods=["POST"])
@dashboard_access(*CONSUMERS)
def pause_or_resume(viewer: Viewer, subscription_id: str, action: str) -> Response:
    _form_action()
    status = "paused" if action == "pause" else "active"
    set_status(scope().session, services(), tenant_of(viewer), subscription_id, status)
    flash("paused: no new deliveries start" if action == "pause" else "resumed")
    return _back("dashboard.subscription", subscription_id=subscription_id)


@blp.route("/subscriptions/<subscription_id>/seek", methods=["POST"])
@dashboard_access(*CONSUMERS)
def seek_action(viewer: Viewer, subscription_id: str) -> Response:
    _form_action()
    target = request.form.get("to", "")
    if target in ("earliest", "latest"):
        body: dict[str, Any] = {"to": target}
    elif target == "timestamp":
        body = {"timestamp": _form_time(request.form.get("timestamp", ""))}
    else:
        raise ValidationError("choose earliest, latest or a time", {"to": ["unknown target"]})
    seek(scope().session, services(), tenant_of(viewer), subscription_id, body)
    flash(f"moved to {target if target != 'timestamp' else body['timestamp'].isoformat()}")
    return _back("dashboard.subscription", subscription_id=subscription_id)


def _form_time(text: str) -> datetime:
    """A `datetime-local` field's value, read as UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValidationError("not a date and time", {"timestamp": ["expected a time"]}) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@blp.route("/subscriptions/<subscription_id>/dead-letters/redrive", methods=["POST"])
@dashboard_access(*CONSUMERS)
def redrive(viewer: Viewer, subscription_id: str) -> Response:
    _form_action()
    found = find_subscription(scope().session, tenant_of(viewer), subscription_id)
    ids = None if request.form.get("all") else request.form.getlist("ids")
    if ids == []:
        raise ValidationError("select dead letters to redrive", {"ids": ["none selected"]})
    count = redrive_dead_letters(services(), found, ids=ids, max_messages=None)
    flash(f"redrove {_dead_letters(count)}")
    return _back("dashboard.subscription", subscription_id=subscription_id)


@blp.route("/subscriptions/<subscription_id>/dead-letters/purge", methods=["GET", "POST"])
@dashboard_access(*CONSUMERS)
def purge(viewer: Viewer, subscription_id: str) -> Response | str:
    """GET asks for confirmation; POST with `confirm=yes` purges."""
    here = scope()
    found = find_subscription(here.session, tenant_of(viewer), subscription_id)
    if request.method == "GET":
        count = pages.dead_letter_counts(here, [found.id])[found.id]
        return render_template("dashboard/purge.html", viewer=viewer, subscription=found,
                               count=count)
    _form_action()
    if request.form.get("confirm") != "yes":
        raise ValidationError("purging needs confirmation", {"confirm": ["must be 'yes'"]})
    count = purge_dead_letters(services(), found)
    flash(f"purged {_dead_letters(count)}")
    return _back("dashboard.subscription", subscription_id=subscription_id)


@blp.route("/schedules/<schedule_id>/cancel", methods=["POST"])
@dashboard_access(*PRODUCERS)
def cancel_schedule(viewer: Viewer, schedule_id: str) -> Response:
    _form_action()
    session = scope().session
    schedule = find_schedule(session, tenant_of(viewer).tenant_id, schedule_id)
    stop_schedule(session, services().delays, schedule)
    flash(f"schedule {schedule.name or schedule.id} cancelled")
    return _back("dashboard.schedules")


@blp.route("/messages/<path:message_id>/cancel", methods=["POST"])
@dashboard_access(*PRODUCERS)
def cancel_message(viewer: Viewer, message_id: str) -> Response:
    _form_action()
    session, svc = scope().session, services()
    record, _ = find_message(session, svc.settings, tenant_of(viewer).tenant_id, message_id)
    cancel(session, svc.delays, record)
    flash(f"message {message_id} cancelled")
    return _back("dashboard.schedules")
