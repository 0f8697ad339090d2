"""Handlers by `handler_config.type`: one instance per worker process, built on first use."""

from __future__ import annotations

import threading
from collections.abc import Callable

from handlers.base import Handler, PermanentFailure
from handlers.database import DatabaseHandler
from handlers.function import FunctionHandler
from handlers.http import HttpHandler
from mq.settings import Settings

#: Handler type -> factory.
FACTORIES: dict[str, Callable[[Settings], Handler]] = {
    "http": HttpHandler,
    "function": FunctionHandler,
    "database": DatabaseHandler,
}


class HandlerRegistry:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._handlers: dict[str, Handler] = {}
        self._lock = threading.Lock()

    def get(self, handler_type: str) -> Handler:
        handler = self._handlers.get(handler_type)
        if handler is not None:
            return handler
        factory = FACTORIES.get(handler_type)
        if factory is None:
            raise PermanentFailure(f"no handler of type '{handler_type}' in this worker")
        with self._lock:
            return self._handlers.setdefault(handler_type, factory(self.settings))

    def close(self) -> None:
        for handler in self._handlers.values():
            handler.close()
