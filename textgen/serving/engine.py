"""Continuous batching: the requests to one model share one compiled generation loop.

A request's prompt is fed through the sequence kernels when it is admitted; its rows then join
the running batch at the next chunk boundary, and leave when they reach their `max_tokens`, a
stop string, or their client goes away. The batch is padded to a fixed size (1, 2, 4, ...
`max_batch`), so that joining and leaving never compiles anything new. Every row keeps its own
settings and seed (generate.generator.RowSettings), so its text is what `textgen sample` gives
with the same settings, whatever else shares the batch. Requests beyond the free rows wait in a
bounded queue.

One thread per model runs the loop; the web server hands it Jobs and receives their pieces
through each Job's `emit`, called through the engine's `dispatch` (the web server's event loop:
one wake-up per chunk for all its jobs).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from textgen.generate.stopping import StopFilter

FIRST_CHUNK_TOKENS = 16  # a batch of rows that all just joined takes a short chunk: text comes at once
CHUNK_TOKENS = 64  # otherwise longer chunks, fewer calls (each costs a few milliseconds of overhead);
# a row joining a running batch waits at most one chunk, then gets a chunk of text
log = logging.getLogger("textgen.serving")


class QueueFull(Exception):
    """Every row is busy and the queue holds `max_queue` requests already."""


@dataclass(frozen=True)
class Sampling:
    """How a job's rows sample (generate.sampling's settings, one value for all its rows)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    penalty: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Pieces:
    """What one chunk gave a job: the text of each of its rows ("" for rows already done), why
    rows finished in this chunk ("length" or "stop"), and the tokens each generated in all."""

    texts: list[str]
    finished: list[str | None]
    tokens: list[int]
    done: bool  # every row has finished: the last event of the job


@dataclass(eq=False)
class Job:
    """One prompt of a request: `n` rows that join the batch together, each a choice."""

    prompt: str
    n: int
    max_tokens: int
    sampling: Sampling
    stops: list[str]
    emit: Callable[[Pieces | BaseException], None]  # called through the engine's `dispatch`
    label: str | None = None  # a model of records: its rows start at <bos> and this label's token
    prompt_tokens: int = 0  # set when admitted
    cancelled: bool = False
    stop_filter: StopFilter | None = field(default=None, repr=False)
    finished: list[str | None] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)


class Backend(Protocol):
    """A model's prime and compiled sampling. The engine keeps rows as numpy arrays and hands the
    backend whole batches; what `sample` returns is read back with `np.asarray`."""

    eos: int | None  # a model of records: the token that ends a row's record

    def prime(self, prompts: list[tuple[str, int, str | None]]) -> list[Any]:
        """(prompt, rows, label) -> for each, a Primed: logits [n, vocab], states, seen [n, vocab],
        prompt tokens."""

    def sample(self, logits: Any, states: list[Any], seen: Any, steps: int, settings: dict[str, np.ndarray]
               ) -> tuple[np.ndarray, Any, list[Any], Any]:
        """`steps` tokens for every row -> ids [batch, steps], and what to continue from."""

    def decode(self, ids: np.ndarray) -> str: ...

    def token_lengths(self, ids: np.ndarray) -> np.ndarray: ...


@dataclass(eq=False)
class _Row:
    job: Job
    index: int  # the row's place among its job's rows (its noise's row)
    logits: Any = None  # kept between batches only while the batch changes
    states: list[Any] = field(default_factory=list)
    seen: Any = None

    @property
    def generated(self) -> int:
        return self.job.generated[self.index]


def batch_sizes(max_batch: int) -> list[int]:
    """The batch sizes the loop runs at (each compiled once, at start): 2, 4, 8, then every
    eighth of `max_batch` (at least 8 rows apart), so that a batch pads few rows.

    Never 1: a CPU multiplies a single row by a matrix-vector kernel whose sums round differently
    (by about 1e-9) from the matrix kernel of larger batches. From 2 to 7 rows per loop a row's
    sums are the same whatever shares the batch; from 8 (the column layout of
    textgen.generate.generator) they can differ in the last bits with the batch size (docs/serving.md)."""
    step = max(8, -(-max_batch // 8))
    sizes = {size for size in (2, 4, 8) if size < max_batch} | set(range(step, max_batch, step)) | {max_batch}
    return sorted(sizes)


def bucket(rows: int, max_batch: int) -> int:
    """The batch size that holds `rows`: the smallest of `batch_sizes` with room for them."""
    return next(size for size in batch_sizes(max_batch) if size >= rows)


class Engine:
    """The generation loop of one model, on a thread of its own."""

    def __init__(self, backend: Backend, *, max_batch: int = 64, max_queue: int = 256, name: str = "model"):
        self.backend = backend
        # how the jobs' events reach their consumers: a web server sets its event loop's
        # call_soon_threadsafe; by default they are called on the engine's thread
        self.dispatch: Callable[[Callable[[], None]], Any] = lambda call: call()
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.name = name
        self._waiting: collections.deque[Job] = collections.deque()
        self._rows: list[_Row] = []  # in batch order
        self._batch: tuple[Any, list[Any], Any] | None = None  # the last chunk's arrays, for self._rows
        self._batch_rows: list[_Row] = []
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"textgen-engine-{name}", daemon=True)

    # -- the web server's side ---------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job; QueueFull when the queue is full (the client should retry later)."""
        with self._wake:
            if len(self._waiting) >= self.max_queue and self._free_rows() < job.n:
                raise QueueFull(self.name)
            self._waiting.append(job)
            self._wake.notify()

    def cancel(self, job: Job) -> None:
        """The client went away: the job's rows leave the batch at the next chunk boundary."""
        with self._wake:
            job.cancelled = True
            self._wake.notify()

    def stats(self) -> dict[str, int]:
        with self._wake:
            return {"active_rows": len(self._rows), "queued_requests": len(self._waiting),
                    "max_batch": self.max_batch, "max_queue": self.max_queue}

    def stop(self) -> None:
        """Finish nothing more: the thread ends at its next chunk boundary."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=30)

    def _free_rows(self) -> int:
        return self.max_batch - len(self._rows)

    # -- the loop ------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._wake:
                self._drop_cancelled()
                while not self._stopping and not self._rows and not self._waiting:
                    self._wake.wait()
                    self._drop_cancelled()
                if self._stopping:
                    return
                admitted = self._take_admissible()
            try:
                if admitted:
                    self._admit(admitted)
                if self._rows:
                    self._chunk()
            except Exception as exc:  # a bug, not a client's mistake: fail the jobs, keep serving
                log.exception("generation failed in %s", self.name)
                self._emit([(job, exc) for job in {row.job for row in self._rows} | set(admitted)])
                with self._wake:
                    self._rows, self._batch, self._batch_rows = [], None, []

    def _drop_cancelled(self) -> None:
        self._rows = [row for row in self._rows if not row.job.cancelled]
        self._waiting = collections.deque(job for job in self._waiting if not job.cancelled)

    def _take_admissible(self) -> list[Job]:
        """Jobs from the front of the queue whose rows fit in the batch (first come, first served)."""
        free, taken = self._free_rows(), []
        while self._waiting and self._waiting[0].n <= free:
            job = self._waiting.popleft()
            free -= job.n
            taken.append(job)
        return taken

    def _admit(self, jobs: list[Job]) -> None:
        """The jobs' prompts through the sequence kernels (one call for all), their rows into the batch."""
        primed = self.backend.prime([(job.prompt, job.n, job.label) for job in jobs])
        rows = []
        for job, start in zip(jobs, primed, strict=True):
            job.prompt_tokens = start.prompt_tokens
            job.finished, job.generated = [None] * job.n, [0] * job.n
            job.stop_filter = StopFilter(job.stops, job.n) if job.stops else None
            rows.extend(_Row(job, i, start.logits[i], [s[i] for s in start.states], start.seen[i])
                        for i in range(job.n))
        with self._wake:
            self._rows.extend(rows)

    def _chunk(self) -> None:
        rows = list(self._rows)
        logits, states, seen = self._assemble(rows)
        size = len(logits)
        settings = self._settings(rows, size)
        fresh = all(row.generated == 0 for row in rows)
        remaining = max(row.job.max_tokens - row.generated for row in rows)
        steps = min(FIRST_CHUNK_TOKENS if fresh else CHUNK_TOKENS, remaining)
        tokens, logits, states, seen = self.backend.sample(logits, states, seen, steps, settings)
        self._batch, self._batch_rows = (logits, states, seen), rows
        self._deliver(rows, tokens)

    def _assemble(self, rows: list[_Row]) -> tuple[Any, list[Any], Any]:
        """The batch arrays for `rows`: the last chunk's, when the rows are the same; otherwise
        gathered row by row and padded to the bucket size with copies of the first row."""
        size = bucket(len(rows), self.max_batch)
        if self._batch is not None and self._batch_rows == rows and len(self._batch[0]) == size:
            return self._batch
        if self._batch is not None:  # keep where the rows that stay have got to
            batch_logits, batch_seen = np.asarray(self._batch[0]), np.asarray(self._batch[2])
            batch_states = [np.asarray(s) for s in self._batch[1]]
            for position, row in enumerate(self._batch_rows):
                row.logits, row.seen = batch_logits[position], batch_seen[position]
                row.states = [s[position] for s in batch_states]
        padded = rows + [rows[0]] * (size - len(rows))
        logits = np.stack([row.logits for row in padded])
        seen = np.stack([row.seen for row in padded])
        states = [np.stack([row.states[k] for row in padded]) for k in range(len(rows[0].states))]
        self._batch = None
        return logits, states, seen

    def _settings(self, rows: list[_Row], size: int) -> dict[str, np.ndarray]:
        padded = rows + [rows[0]] * (size - len(rows))

        def column(value: Callable[[_Row], Any], dtype: type) -> np.ndarray:
            return np.array([value(row) for row in padded], dtype)

        return {"temperatures": column(lambda r: [r.job.sampling.temperature], np.float32),
                "top_k": column(lambda r: r.job.sampling.top_k, np.int32),
                "top_p": column(lambda r: r.job.sampling.top_p, np.float32),
                "penalty": column(lambda r: r.job.sampling.penalty, np.float32),
                "seeds": column(lambda r: r.job.sampling.seed, np.int32),
                "steps": column(lambda r: r.generated, np.int32),
                "rows": column(lambda r: r.index, np.int32)}

    def _deliver(self, rows: list[_Row], tokens: np.ndarray) -> None:
        """Each job's new text, through its stop filter; finished rows leave the batch."""
        by_job: dict[Job, list[tuple[int, np.ndarray]]] = collections.defaultdict(list)
        for position, row in enumerate(rows):
            take = min(len(tokens[position]), row.job.max_tokens - row.generated)
            by_job[row.job].append((row.index, tokens[position, :take]))
        leaving: set[tuple[int, int]] = set()
        events: list[tuple[Job, Pieces]] = []
        for job, produced in by_job.items():
            finished, pieces = self._advance(job, dict(produced))
            leaving.update((id(job), index) for index in finished)
            if not job.cancelled:
                events.append((job, pieces))
        self._emit(events)
        with self._wake:
            self._rows = [row for row in self._rows if (id(row.job), row.index) not in leaving]

    def _emit(self, events: list[tuple[Job, Pieces | BaseException]]) -> None:
        if events:
            self.dispatch(lambda: [job.emit(event) for job, event in events])

    def _advance(self, job: Job, produced: dict[int, np.ndarray]) -> tuple[list[int], Pieces]:
        """Feed a job's new tokens through its stop filter: its rows that finished, and what to send."""
        ended = self._record_ends(produced)
        texts = [self.backend.decode(produced[i][:ended.get(i)]) if i in produced else ""
                 for i in range(job.n)]
        before = list(job.generated)
        for i, ids in produced.items():
            job.generated[i] += len(ids) if i not in ended else ended[i] + 1  # <eos> was generated
        at_length = all(reason is not None or count >= job.max_tokens
                        for reason, count in zip(job.finished, job.generated, strict=True))
        if job.stop_filter is not None:
            shown = job.stop_filter.feed(texts)
            if at_length:  # nothing more comes: what was held back for a possible stop is text
                shown = [a + b for a, b in zip(shown, job.stop_filter.flush(), strict=True)]
        else:
            shown = texts
        newly: list[str | None] = [None] * job.n
        for i in produced:
            if i in ended and not (job.stop_filter is not None and job.stop_filter.done[i]):
                newly[i] = "stop"  # the record ended: what a stop string held back is its text
                shown[i] += job.stop_filter.finish(i) if job.stop_filter is not None else ""
            elif job.stop_filter is not None and job.stop_filter.done[i]:
                newly[i] = "stop"
                job.generated[i] = before[i] + self._tokens_through_stop(job, i, produced[i])
            elif job.generated[i] >= job.max_tokens:
                newly[i] = "length"
            if newly[i]:
                job.finished[i] = newly[i]
        done = all(reason is not None for reason in job.finished)
        return [i for i in produced if newly[i]], Pieces(shown, newly, list(job.generated), done)

    def _record_ends(self, produced: dict[int, np.ndarray]) -> dict[int, int]:
        """Rows whose record ended in these tokens: where its <eos> is (a model of records only)."""
        eos = self.backend.eos
        if eos is None:
            return {}
        return {i: int(hits[0]) for i, ids in produced.items() if len(hits := np.flatnonzero(ids == eos))}

    def _tokens_through_stop(self, job: Job, index: int, ids: np.ndarray) -> int:
        """Of this chunk's tokens, those generated up to the end of the stop string (as OpenAI
        counts them: the stop string's tokens were generated, not returned)."""
        stops, text = job.stop_filter.stops, job.stop_filter.texts[index]
        hit = job.stop_filter.shown[index]
        end = hit + next(len(stop) for stop in stops if text.startswith(stop, hit))
        chunk_start = len(text) - int(self.backend.token_lengths(ids).sum())
        covered = np.cumsum(self.backend.token_lengths(ids)) + chunk_start
        return int(np.searchsorted(covered, end) + 1)
