"""What the broker asks of the worker process that runs it, given to its constructor.

The broker knows nothing of the database: dead-letter topics (created on first use) and the
definitions behind control events are the worker's (`workers.registry` implements this).
"""

from __future__ import annotations

from typing import Protocol

from broker.dead_letters import DeadLetterEntry
from broker.delivery import Route
from broker.envelope import Envelope


class WorkerHooks(Protocol):
    def dead_letter_topic(self, route: Route) -> str:
        """The id of the route's dead-letter topic, created on first use."""
        ...

    def dead_letter_message(self, route: Route, envelope: Envelope,
                            entry: DeadLetterEntry) -> Envelope:
        """The message the dead-letter topic stores of a dead letter (the listing keeps the
        entry as built, with the message in its stored form)."""
        ...

    def apply_control_events(self, events: list[dict[str, str]]) -> None:
        """Reload what control events (subscription and topic changes) name."""
        ...


class NoHooks:
    """The hooks of a broker that serves no subscriptions (plain dramatiq actors only)."""

    def dead_letter_topic(self, route: Route) -> str:
        raise LookupError(f"no dead-letter topic for subscription {route.subscription_id}")

    def dead_letter_message(self, route: Route, envelope: Envelope,
                            entry: DeadLetterEntry) -> Envelope:
        raise LookupError(f"no dead-letter topic for subscription {route.subscription_id}")

    def apply_control_events(self, events: list[dict[str, str]]) -> None:
        """Nothing to reload."""
