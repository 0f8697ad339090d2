"""How the group writer coordinates request threads: who writes which group, hand-over,
time-outs and stopping. The stores are replaced by a publisher that records its groups and
can be held mid-group (`test_group_writer.py` runs the real one on real servers)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from mq.errors import DatabaseUnavailable
from publishing.group import GroupWriter, Job


class RecordingPublisher:
    """Answers each job with an empty list; records each group and the thread writing it;
    `hold` keeps the next group from finishing until released."""

    def __init__(self) -> None:
        self.groups: list[tuple[list[str], int]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.writing = threading.Event()
        self.offsets_waiting = False
        self.closed = False

    def write(self, jobs: Sequence[Job]) -> None:
        self.groups.append(([job.topic_name for job in jobs], threading.get_ident()))
        self.writing.set()
        self.hold.wait(10)
        for job in jobs:
            job.future.set_result([])

    def flush_offsets(self, durable: bool = False) -> None:
        self.offsets_waiting = False

    def close(self) -> None:
        self.closed = True


def job(name: str) -> Job:
    return Job(name, [])


def publish_in_thread(writer: GroupWriter, name: str, answers: dict[str, Any],
                      timeout: float = 10) -> threading.Thread:
    def run() -> None:
        try:
            answers[name] = (writer.publish(job(name), timeout=timeout), threading.get_ident())
        except Exception as exc:
            answers[name] = (exc, threading.get_ident())

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def writer(publisher: RecordingPublisher) -> Iterator[GroupWriter]:
    writer = GroupWriter(publisher, idle_flush_s=0.01)  # type: ignore[arg-type]
    yield writer
    publisher.hold.set()
    writer.stop()


def wait_for(check: Any, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.005)


def test_a_lone_publish_is_written_by_its_own_thread(writer, publisher) -> None:
    assert writer.publish(job("alone")) == []
    assert publisher.groups == [(["alone"], threading.get_ident())]


def test_publishes_arriving_during_a_group_form_the_next_one_led_by_the_oldest(
        writer, publisher) -> None:
    answers: dict[str, Any] = {}
    publisher.hold.clear()
    first = publish_in_thread(writer, "first", answers)
    assert publisher.writing.wait(5)
    followers = []
    for name in ("a", "b", "c"):
        followers.append(publish_in_thread(writer, name, answers))
        wait_for(lambda: len(writer._queue) == len(followers))  # queued in this order
    publisher.hold.set()
    for thread in (first, *followers):
        thread.join(10)
    assert [names for names, _ in publisher.groups] == [["first"], ["a", "b", "c"]]
    assert publisher.groups[0][1] == answers["first"][1]
    assert publisher.groups[1][1] == answers["a"][1]  # the oldest follower led the next group
    assert all(answer == [] for answer, _ in answers.values())
    assert (writer.groups_written, writer.jobs_written) == (2, 4)


def test_a_group_takes_at_most_max_messages(publisher) -> None:
    writer = GroupWriter(publisher, max_messages=2)  # type: ignore[arg-type]
    answers: dict[str, Any] = {}
    publisher.hold.clear()
    threads = [publish_in_thread(writer, "first", answers)]
    assert publisher.writing.wait(5)
    for index in range(5):
        big = Job(f"big{index}", [object()] * 1)  # type: ignore[list-item]
        threads.append(threading.Thread(target=lambda j=big: writer.publish(j)))
        threads[-1].start()
        wait_for(lambda n=index + 1: len(writer._queue) == n)
    publisher.hold.set()
    for thread in threads:
        thread.join(10)
    assert [names for names, _ in publisher.groups] == [
        ["first"], ["big0", "big1"], ["big2", "big3"], ["big4"]]
    writer.stop()


def test_a_publish_that_times_out_while_queued_is_never_written(writer, publisher) -> None:
    answers: dict[str, Any] = {}
    publisher.hold.clear()
    first = publish_in_thread(writer, "first", answers)
    assert publisher.writing.wait(5)
    late = publish_in_thread(writer, "late", answers, timeout=0.2)
    late.join(5)
    error, _ = answers["late"]
    assert isinstance(error, DatabaseUnavailable) and "nothing was stored" in str(error)
    publisher.hold.set()
    first.join(5)
    assert writer.publish(job("after")) == []
    assert [names for names, _ in publisher.groups] == [["first"], ["after"]]


def test_stop_lets_the_group_finish_then_refuses_publishes(writer, publisher) -> None:
    answers: dict[str, Any] = {}
    publisher.hold.clear()
    first = publish_in_thread(writer, "first", answers)
    assert publisher.writing.wait(5)
    stopping = threading.Thread(target=writer.stop)
    stopping.start()
    time.sleep(0.1)
    assert stopping.is_alive() and not publisher.closed  # waits for the group
    publisher.hold.set()
    stopping.join(5)
    first.join(5)
    assert answers["first"][0] == [] and publisher.closed
    with pytest.raises(DatabaseUnavailable):
        writer.publish(job("too late"))


def test_offsets_left_waiting_are_flushed_once_idle(writer, publisher) -> None:
    publisher.offsets_waiting = True
    writer.publish(job("one"))
    wait_for(lambda: not publisher.offsets_waiting, timeout=2)


def test_many_threads_each_get_their_own_answer(writer, publisher) -> None:
    results: list[Any] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        for round_ in range(50):
            name = f"{index}-{round_}"
            answer = writer.publish(job(name))
            with lock:
                results.append((name, answer))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    written = [name for names, _ in publisher.groups for name in names]
    assert sorted(written) == sorted(name for name, _ in results)
    assert len(written) == len(set(written)) == 400
    assert all(answer == [] for _, answer in results)
    assert not writer._writing and not writer._queue
