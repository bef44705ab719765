"""Hands a parallel snapshot's directory tasks to worker processes in walk order, and gives answers back.

Tasks are sent in walk order (byte order of ``path/``), so the answer the output needs next is always among
the first sent; at most :data:`WINDOW` answers per worker wait to be written. No worker is started before
:data:`POOL_MIN_ENTRIES` entries were described in this process or are probably below the directories listed
so far (by their sizes), unless a directory had to be split.
"""

from __future__ import annotations

import functools
import heapq
import os
from collections import deque
from typing import TYPE_CHECKING, Any

from catalytic import faults
from catalytic.errors import SnapshotError
from catalytic.paths import to_bytes
from catalytic.snapshot import dirscan
from catalytic.snapshot.report import StreamReport
from catalytic.snapshot.rowstore import ensure
from catalytic.threads import may_fork

if TYPE_CHECKING:
    from catalytic.snapshot.forkpool import ForkPool

#: Start the worker processes once this many entries were described in this process or are probably
#: below the directories it listed (forking costs ~5-30 ms; small domains never pay it).
POOL_MIN_ENTRIES = 1024
#: Tasks queued per worker, and answers held (sent or waiting to be written) per worker.
DEPTH = 3
WINDOW = 8


#: How much work (:func:`dirscan.cost`) a worker's task does before it hands the subdirectories it found
#: back: about 50 ms of a first description of small files, or a few ms of unchanged directories.
BUDGET = 4096


#: Whole directories handed to a worker in one message: the directories a task left unanswered when its
#: budget ran out are mostly small, and one round trip each would cost more than their work.
BATCH = 32


def _work(config: dirscan.ScanConfig, budgeted: tuple[int, list[dirscan.Task]]) -> tuple[str, Any]:
    budget, tasks = budgeted
    try:
        return "ok", dirscan.scan_many(config, tasks, budget)
    except SnapshotError as exc:
        return "err", (exc.message.removeprefix(f"{exc.path}: "), exc.path, exc.code)


class Scheduler:
    """Hands tasks out in walk order and gives answers back in the order they are asked for."""

    def __init__(self, config: dirscan.ScanConfig, jobs: int) -> None:
        self.config = config
        self.jobs = jobs
        self.tasks: dict[int, dirscan.Task] = {}  # not yet answered
        self.count = 0
        self.heap: list[tuple[bytes, int]] = []
        self.sent: dict[int, int] = {}  # task -> worker
        self.queues: list[deque[list[int]]] = []  # per worker, the tasks of each message sent, in order
        self.last = -1  # the worker the last message went to
        self.spent = self.answers = 0  # the cost (dirscan.cost) of the answers so far, and their number
        # The entries the subdirectories listed so far probably hold (by their sizes), and their number.
        self.hinted = self.listed = 0
        self.results: dict[int, dirscan.DirResult] = {}
        # Answers that came inside another answer: they never count against the window.
        self.inline: dict[int, tuple[dirscan.Task, dirscan.DirResult]] = {}
        self.pool: ForkPool | None = None
        # Entries described in this process, and those the subdirectories it listed probably hold.
        self.expected = 0
        self.split = False  # a directory was split: enough work for the workers, whatever the count
        self.report = StreamReport()

    def add(self, task: dirscan.Task) -> int:
        tid = self.count
        self.count += 1
        self.tasks[tid] = task
        heapq.heappush(self.heap, (self._key(task), tid))
        self.report.tasks += 1
        return tid

    @staticmethod
    def _key(task: dirscan.Task) -> bytes:
        """A task's place in walk order (byte order of ``path/``, then the part's lower bound)."""
        rel, _dev, _ino, lo, _hi = task
        return (to_bytes(rel) + b"/" if rel else b"") + (lo or b"")

    def _maybe_start_pool(self) -> None:
        if (
            self.pool is None
            and self.jobs > 1
            and (self.expected >= POOL_MIN_ENTRIES or self.split)
            and not faults.ACTIVE  # fault points must fire in this process
            and may_fork()
        ):
            from catalytic.snapshot.forkpool import ForkPool

            config = self.config
            if config.store is not None:
                ensure(config.store, os.fsdecode(config.top), config.algorithm)
            # The workers inherit the configuration; only tasks (tuples of plain values) go through pipes.
            self.pool = ForkPool(self.jobs, functools.partial(_work, config))
            self.queues = [deque() for _ in range(self.jobs)]
            self.report.pool_started = True

    def _send(self, tid: int) -> None:
        task = self.tasks[tid]
        # The domain's own directory is answered alone, so its subdirectories reach every worker at once.
        budget = 0 if not task[0] else BUDGET if self.pool is not None else POOL_MIN_ENTRIES
        if self.pool is None:
            status, value = _work(self.config, (budget, [task]))
            self._store(tid, status, value[0] if status == "ok" else value)
            return
        batch = [tid]
        if task[0] and task[3] is None and task[4] is None:
            # The next whole directories in walk order go with it (parts of a split one go alone): no more
            # than the workers' share of what is waiting, so every worker gets some, and about as many as
            # one budget answers (by the directories answered so far, and the sizes of those listed).
            per_directory = max(1, self.spent // max(1, self.answers), self.hinted // max(1, self.listed))
            size = max(1, min(BATCH, len(self.heap) // self.jobs, BUDGET // per_directory))
            while self.heap and len(batch) < size:
                _key, other = self.heap[0]
                if other not in self.tasks or other in self.sent or other in self.results or other in batch:
                    heapq.heappop(self.heap)
                    continue
                rel, _dev, _ino, lo, hi = self.tasks[other]
                if not rel or lo is not None or hi is not None:
                    break
                heapq.heappop(self.heap)
                batch.append(other)
        # The least busy worker; among equals, the one after the last chosen (not always the first).
        last = self.last
        worker = min(range(self.jobs), key=lambda w: (len(self.queues[w]), (w - last - 1) % self.jobs))
        self.last = worker
        self.pool.submit((budget, [self.tasks[t] for t in batch]), worker)
        for sent in batch:
            self.sent[sent] = worker
        self.queues[worker].append(batch)

    def _store(self, tid: int, status: str, value: Any) -> None:
        if status == "err":
            message, path, code = value
            raise SnapshotError(message, path=path, code=code)
        result: dirscan.DirResult = value
        self.expected += _expected(result)
        self.spent += dirscan.cost(result)
        self.answers += 1
        self.hinted += result.below
        self.listed += sum(1 for item in result.items if item[0] == "d")
        self.split = self.split or result.split is not None
        self.results[tid] = result

    def answered(self, task: dirscan.Task, result: dirscan.DirResult) -> int:
        """Register a task a worker answered inside another one's answer (``("D", ...)`` items)."""
        tid = self.count
        self.count += 1
        self.report.tasks += 1
        self.inline[tid] = (task, result)
        return tid

    def _fill(self) -> None:
        if self.pool is None:
            return
        limit = self.jobs * WINDOW * BATCH
        while (
            self.heap
            and sum(map(len, self.queues)) < self.jobs * DEPTH
            and len(self.sent) + len(self.results) < limit
        ):
            _key, tid = heapq.heappop(self.heap)
            if tid in self.tasks and tid not in self.sent and tid not in self.results:
                self._send(tid)

    def take(self, tid: int) -> tuple[dirscan.Task, dirscan.DirResult]:
        """Task ``tid`` and its answer (sending it first if it is not out yet)."""
        inline = self.inline.pop(tid, None)
        if inline is not None:
            self._fill()
            return inline
        while tid not in self.results:
            if tid not in self.sent:
                self._maybe_start_pool()
                self._send(tid)
                continue
            self._fill()
            assert self.pool is not None
            worker = self.sent[tid]
            batch = self.queues[worker].popleft()
            status, value = self.pool.result(worker)
            answers = value if status == "ok" else [value] * len(batch)
            for done, answer in zip(batch, answers, strict=False):
                del self.sent[done]
                self._store(done, status, answer)
            for later in batch[len(answers) :]:  # the budget ran out first: sent again
                del self.sent[later]
                heapq.heappush(self.heap, (self._key(self.tasks[later]), later))
        self._fill()
        return self.tasks.pop(tid), self.results.pop(tid)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close(kill=True)
            self.pool = None
        dirscan.close_rows()


def _expected(result: dirscan.DirResult) -> int:
    """Entries an answer described (with those it answered inside) and those its subdirectories hint at."""
    total = sum(result.counts[:3]) + result.below
    for item in result.items:
        if item[0] == "D":
            total += _expected(item[4])
    return total
