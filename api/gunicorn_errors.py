"""gunicorn's own error answers in the contract's error body.

gunicorn answers a few requests itself, before the app sees them: a request line over its
`limit_request_line` (414), header fields over `limit_request_field_size` or too many of
them (431), a request line or header it cannot parse (400). It writes those as HTML
(`gunicorn.util.write_error`), which no client of this API can read; `install` replaces that
writer, in the gunicorn process serving the API, with one that writes the error body.
Raising gunicorn's limits instead would only move them: some limit must stay in front of
the app, and this is what answers it.
"""

from __future__ import annotations

import json
import random
import socket
from http import HTTPStatus

from api.errors import HTTP_ERRORS, HTTP_MESSAGES

#: Codes of the statuses gunicorn answers itself that the error registry has no class for.
OTHER_CODES = {417: "EXPECTATION_FAILED", 500: "INTERNAL_ERROR", 501: "NOT_IMPLEMENTED"}


def install() -> None:
    """Make gunicorn write its own error answers as the error body (call in its process)."""
    from gunicorn import util

    util.write_error = write_error


def error_answer(status: int, reason: str, message: str) -> bytes:
    """The whole HTTP response gunicorn sends for an error of its own."""
    kind = HTTP_ERRORS.get(status)
    code = kind.code if kind is not None else OTHER_CODES.get(status, "BAD_REQUEST")
    if status == 400:
        message = message or "the request is not valid HTTP"
    else:
        message = HTTP_MESSAGES.get(status) or message or reason
    body = json.dumps({"error": {"code": code, "message": message, "details": {}},
                       "request_id": f"{random.getrandbits(128):032x}"}).encode()
    phrase = reason or HTTPStatus(status).phrase
    head = (f"HTTP/1.1 {status} {phrase}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


def write_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """`gunicorn.util.write_error`'s signature, writing `error_answer`."""
    from gunicorn import util

    util.write_nonblock(sock, error_answer(status_int, reason, mesg))
