"""The API's service layer: look-ups, permission checks, validation and the calls into the
broker and the publishing core that the resources (`api.resources`) share.

Functions here are handed their dependencies — a database session, the caller, the
process's `Services` or the request's `Scope` (`api.dependencies`) — and never reach for
Flask's app or request context. Failures are `mq.errors` exceptions; `api.errors` turns
them into the contract's error body.
"""
