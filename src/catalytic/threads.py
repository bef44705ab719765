"""Threads: run a few blocking calls at once, one thread each (calls that let go of the GIL while they wait
or compute, ``fsync`` or hashing big buffers, so they overlap instead of queueing); and whether this
process may fork."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def each_at_once(call: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[call(item) for item in items]``, the calls running at the same time (the first in this thread).

    The first exception any call raised is raised here once every call has finished. Where no thread can
    be started, the calls run one after the other in this thread.
    """
    if len(items) <= 1:
        return [call(item) for item in items]
    import threading

    results: dict[int, R] = {}
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = call(items[index])
        except BaseException as exc:  # raised by the caller's thread below
            errors.append(exc)

    started: list[threading.Thread] = []
    for index in range(1, len(items)):
        thread = threading.Thread(target=run, args=(index,), daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: this call runs here, now
            run(index)
            continue
        started.append(thread)
    run(0)
    for thread in started:
        thread.join()
    if errors:
        raise errors[0]
    return [results[index] for index in range(len(items))]


def may_fork() -> bool:
    """Whether forking worker processes is safe now: no other thread runs, so none can hold a lock the
    children would inherit locked."""
    import threading

    return threading.active_count() == 1
