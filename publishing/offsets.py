"""The offsets a publisher has appended but not yet durably committed, and the Redis markers
that stand in for them until then (see `publishing.group`, "Offsets")."""

from __future__ import annotations

from publishing.jobs import StreamRef
from publishing.messages import Prepared
from publishing.records import Offset


class PendingOffsets:
    """Offsets on their way into the database. An offset is pending once appended; committed
    without waiting for the flush, its marker waits ("soft settled") for a durable commit;
    durably committed, its marker may be deleted ("settled")."""

    def __init__(self) -> None:
        #: Appended, offset not yet committed: record id -> (stream, offset).
        self._pending: dict[str, tuple[StreamRef, Offset]] = {}
        self._soft_settled: dict[StreamRef, list[str]] = {}
        self._settled: dict[StreamRef, list[str]] = {}

    def remember(self, new: list[Prepared], appended: dict[str, str | None]) -> None:
        for item in new:
            offset = appended.get(item.record_id)
            if offset is not None:
                self._pending[item.record_id] = ((item.topic_id, item.partition),
                                                 Offset(offset, item.row["published_at"]))

    @property
    def waiting(self) -> bool:
        """Whether offsets of appended messages wait to be written."""
        return bool(self._pending)

    @property
    def markers_waiting(self) -> bool:
        """Whether markers of committed offsets wait for a durable commit or their delete."""
        return bool(self._soft_settled or self._settled)

    def pending(self) -> dict[str, Offset]:
        """record id -> offset, of every offset waiting to be written."""
        return {rid: offset for rid, (_, offset) in self._pending.items()}

    def offset_of(self, record_id: str) -> str | None:
        pending = self._pending.get(record_id)
        return pending[1].value if pending else None

    def settle(self, committed: dict[str, Offset], *, durable: bool) -> None:
        """`committed` offsets are in the database now: their markers may go (after a
        durable commit; a commit that did not wait for its flush waits for the next one)."""
        if durable:
            for ref, ids in self._soft_settled.items():
                self._settled.setdefault(ref, []).extend(ids)
            self._soft_settled = {}
        target = self._settled if durable else self._soft_settled
        for record_id in committed:
            ref, _ = self._pending.pop(record_id)
            target.setdefault(ref, []).append(record_id)

    def take_settled(self) -> dict[StreamRef, list[str]]:
        """The markers that may be deleted now (handed over once)."""
        settled, self._settled = self._settled, {}
        return settled
