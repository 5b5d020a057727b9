"""engine=ray's streams: one long-lived Ray Data execution per target (a server, or the vLLM replicas).

Requests handed over by the runner's workers are put into a bounded Ray queue, read by a source
that never ends on its own (`queue_datasource`), sent by the processor's actors, and each reply is
handed back to its request as it comes out. The fixed cost of an execution (actors started, plan
built) is paid once per server, not once per batch of rows. Requests waiting together are queued
in affinity order (task and static-block variant).

The driver's state per execution grows with the rows it has carried (Ray Data's operator stats,
the iterator's bookkeeping: about 0.7 KB a row, measured): after ``restart_rows`` requests an
execution is retired, its input closed once what waits has been queued; it finishes its rows in
flight while a fresh execution takes the new ones. The driver's memory is bounded by
``restart_rows``, not by the size of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from longicl.errors import one_line

#: the HTTP stage's reply when the request never got an HTTP answer (refused, reset, timed out)
NO_HTTP_ANSWER = 0

_END = "__end_of_stream__"
_BATCH_COLUMN = "__idx_in_batch"  # Ray's HttpRequestUDF.IDX_IN_BATCH_COLUMN


class _Envelope:
    """What the HTTP stage sees of one Ray Data row's replies: always ``200``, and ``json()`` is
    a string (a JSON list, one ``{"status", "text", ...}`` per request of the row).

    ``HttpRequestUDF`` retries some statuses itself and raises (failing a whole batch, which Ray
    Data then drops) when a request ends without a JSON body. Wrapping every outcome, the
    server's status and raw text or the transport error, keeps each request's fate in its own
    entry: the request policy reads it (`longicl.engines.policy`)."""

    status = 200
    reason = "OK"

    def __init__(self, outcomes: list[dict[str, Any]]) -> None:
        # ``HttpRequestUDF`` drops the row when its column name is ``in`` what ``json()`` returns:
        # on this text, a substring test that a reply quoting the name would fail. In JSON text
        # the name can only be inside a string, where ``\u005f`` reads back as ``_``.
        text = json.dumps(outcomes, ensure_ascii=False)
        self._text = text.replace(_BATCH_COLUMN, "\\u005f" + _BATCH_COLUMN[1:])

    async def __aenter__(self) -> _Envelope:
        return self

    async def __aexit__(self, *_: Any) -> None:
        return None

    async def json(self, **_: Any) -> str:
        return self._text


_CONNECTORS: dict[int, tuple[asyncio.AbstractEventLoop, aiohttp.TCPConnector]] = {}
_CONNECTORS_LOCK = threading.Lock()


def shared_connector(keepalive_s: float) -> aiohttp.TCPConnector:
    """The actor's one connection pool, kept across rows (for the running event loop).

    ``HttpRequestUDF`` opens a session per batch, that is per Ray Data row: with a connector of its
    own, every request of every row opened a new connection, and a row's requests arrived at the
    server as a burst of connects. Sharing the pool keeps the connections alive between rows, as
    the OpenAI client does for ``engine=openai``. No limit of its own: what is in flight is
    bounded by ``engine.concurrency`` already.

    An idle connection is closed after ``keepalive_s`` (``engine.ray.keepalive``), before the
    server's own idle timeout (uvicorn's 5 s): ``aiohttp`` does not check that a pooled socket
    is still open before reusing it, so a request sent as the server closed its connection
    would fail, and a row's requests fail together (one row can take a server out)."""
    loop = asyncio.get_running_loop()
    with _CONNECTORS_LOCK:  # actors run one loop, but a process may run several in threads
        held = _CONNECTORS.get(id(loop))
        if held is None or held[0] is not loop or held[1].closed:
            for key in [key for key, (other, _) in _CONNECTORS.items() if other.is_closed()]:
                del _CONNECTORS[key]  # pools of loops that are gone
            held = (loop, aiohttp.TCPConnector(limit=0, keepalive_timeout=keepalive_s))
            _CONNECTORS[id(loop)] = held
    return held[1]


class EnvelopeSession(aiohttp.ClientSession):
    """The HTTP stage's session: posts each pre-serialised body carried in the row, all at once,
    and answers with one `_Envelope` whatever happened.

    A row's payload is the list of its requests' bodies, each already serialised (strings), so
    Arrow never reshapes a body. ``HttpRequestUDF`` posts ``json.dumps(row["payload"])``; this
    session reads the list back and sends every body as is, concurrently."""

    def __init__(
        self, *args: Any, timeout_s: float, connect_s: float | None, keepalive_s: float, **kwargs: Any
    ) -> None:
        timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_s)
        kwargs.setdefault("connector", shared_connector(keepalive_s))
        super().__init__(*args, timeout=timeout, connector_owner=False, **kwargs)

    def post(self, url: Any, *, data: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        bodies = json.loads(data) if isinstance(data, str) else [data]
        return self._enveloped(url, bodies, kwargs)

    async def _enveloped(self, url: Any, bodies: list[Any], kwargs: dict[str, Any]) -> _Envelope:
        outcomes = await asyncio.gather(*(self._one(url, body, kwargs) for body in bodies))
        return _Envelope(list(outcomes))

    async def _one(self, url: Any, body: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        data = body.encode("utf-8") if isinstance(body, str) else body
        try:
            async with super().post(url, data=data, **kwargs) as response:
                return {
                    "status": response.status,
                    "text": await response.text(),
                    "retry_after": response.headers.get("Retry-After"),
                }
        except TimeoutError as exc:
            return {"status": NO_HTTP_ANSWER, "kind": "timeout", "text": f"{type(exc).__name__}"}
        except (aiohttp.ClientError, OSError) as exc:
            text = f"{type(exc).__name__}: {one_line(exc, 300)}"
            return {"status": NO_HTTP_ANSWER, "kind": "connection", "text": text}


def queue_datasource(queue: Any) -> Any:
    """A `QueueDatasource` over ``queue`` (the class is made here: ray is an optional extra)."""
    import pyarrow as pa
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    class QueueDatasource(Datasource):
        """A Ray Data source that never ends on its own: one read task yields each item put into
        ``queue`` (a ``ray.util.queue.Queue``; an item is a list of rows) as a block of its own,
        until the end marker.

        A block per item, and ``DataContext.target_max_block_size`` of one byte, so that no
        operator holds rows back waiting for more to fill a block or a batch."""

        def __init__(self, queue: Any) -> None:
            super().__init__()
            self.queue = queue

        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context=None):
            queue = self.queue

            def read() -> Any:
                while True:
                    rows = queue.get(block=True)
                    if rows == _END:
                        return
                    yield pa.Table.from_pylist(rows)

            metadata = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
            return [ReadTask(read, metadata)]

    return QueueDatasource(queue)


@dataclass
class _Stream:
    """One long-lived Ray Data execution for one target.

    Requests go in through a bounded Ray queue and their replies come out of the dataset's
    iterator, read by a thread that hands each reply to the waiting request's future."""

    target: str
    queue: Any
    waiting: list[tuple[int, str, str]] = field(default_factory=list)  # (key, affinity, body)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    pending: dict[int, asyncio.Future] = field(default_factory=dict)
    feeder: asyncio.Task | None = None
    reader: threading.Thread | None = None
    ended: str | None = None  # why the execution ended; a new stream replaces an ended one
    closing: bool = False  # retired: its input ends once what waits is queued
    rows: int = 0
    up: asyncio.Event = field(default_factory=asyncio.Event)  # a first reply came back
    # How the execution's output rows read back: the fields of the processor's data column that
    # ``postprocess`` needs, and ``postprocess`` (a row to ``{"keys", "reply"}``), run here in the
    # driver rather than as a Ray Data map (see `replies_of`).
    fields: tuple[str, ...] = ("keys", "reply")
    postprocess: Callable[[dict[str, Any]], dict[str, Any]] | None = None


class Streams:
    """The streams of one engine, one per target at a time (a retired one finishes its rows).

    ``dataset(stream)`` builds the execution's dataset; ``row_per_request`` makes a row of each
    request (vLLM batches them itself) instead of one row per block of requests (HTTP)."""

    def __init__(
        self,
        *,
        dataset: Callable[[_Stream], Any],
        queue_items: int,
        requests_per_row: int,
        row_per_request: bool,
        reply_deadline: float,
        restart_rows: int,
    ) -> None:
        self.dataset = dataset
        self.queue_items = queue_items
        self.requests_per_row = requests_per_row
        self.row_per_request = row_per_request
        self.reply_deadline = reply_deadline
        self.restart_rows = restart_rows
        self.current: dict[str, _Stream] = {}
        self.retired: list[_Stream] = []
        self.executions: list[dict[str, Any]] = []  # per execution: target, rows, how it ended
        self._keys = itertools.count()

    def stream(self, target: str) -> _Stream:
        stream = self.current.get(target)
        if stream is not None and stream.ended is None and stream.rows >= self.restart_rows:
            self.retire(stream)
            stream = None
        if stream is None or stream.ended is not None:
            from ray.util.queue import Queue

            # Bounded: prompts waiting inside Ray are at most about `concurrency` per target (an
            # item is a block of up to `requests_per_row` requests, in one row or a row each).
            stream = _Stream(target, Queue(maxsize=self.queue_items))
            self.current[target] = stream
            loop = asyncio.get_running_loop()
            dataset = self.dataset(stream)
            stream.reader = threading.Thread(
                target=self._read_replies, args=(stream, dataset, loop), name=f"ray-{target}", daemon=True
            )
            stream.reader.start()
            stream.feeder = asyncio.ensure_future(self.feed(stream))
        return stream

    def retire(self, stream: _Stream) -> None:
        """Close ``stream``'s input once what waits is queued; its rows in flight still come back."""
        stream.closing = True
        stream.wake.set()
        self.retired = [s for s in self.retired if s.ended is None] + [stream]

    async def send(self, target: str, affinity: str, body: str) -> tuple[dict | None, str | None]:
        """One request through the target's stream: (reply, None) or (None, why it has none)."""
        stream = self.stream(target)
        key = next(self._keys)
        future = asyncio.get_running_loop().create_future()
        stream.pending[key] = future
        stream.waiting.append((key, affinity, body))
        stream.wake.set()
        try:
            # The envelope session ends every request within `timeout`; a row that is not back
            # well after that was lost inside Ray (a crashed worker) and is asked again. The
            # deadline counts from the execution being up (its first reply, or a deadline spent
            # waiting for one): starting actors on a busy cluster is not a lost row.
            if not stream.up.is_set():
                up = asyncio.ensure_future(stream.up.wait())
                try:
                    await asyncio.wait(
                        {up, future}, timeout=self.reply_deadline, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    up.cancel()
            return await asyncio.wait_for(asyncio.shield(future), self.reply_deadline)
        except TimeoutError:
            why = f"no reply from the Ray Data stream within {self.reply_deadline:g} s"
            self.abandon(stream, why)
            return None, why
        finally:
            stream.pending.pop(key, None)

    def abandon(self, stream: _Stream, why: str) -> None:
        """A stream that lost a row (e.g. with a node) is stuck or broken: its requests fail now
        (the policy asks them again) and the next request starts a fresh execution."""
        if self.current.get(stream.target) is stream:
            del self.current[stream.target]
        stream.closing = True
        if stream.ended is not None:
            return  # ended already (failed, or abandoned by another of its requests)
        self._ended(stream, f"abandoned: {why}")
        # Its input ends (if its queue still lives), so that the execution winds down and gives
        # its actors back instead of holding them next to the fresh one.
        ending = asyncio.ensure_future(asyncio.wait_for(stream.queue.put_async(_END), 30))
        ending.add_done_callback(lambda task: task.cancelled() or task.exception())

    async def feed(self, stream: _Stream) -> None:
        """Move waiting requests into the stream's queue, requests of one static block next to
        each other (prefix affinity: an actor or replica works through one block at a time).

        Up to ``requests_per_row`` waiting requests of one static block travel as one Ray Data
        row (or a row each), sent together: Ray's fixed cost per row (a block, a task, an
        object) is paid once per row, not once per request. Nothing waits to fill a row: a
        request alone goes alone. A retired stream's feeder ends its input when nothing waits."""
        try:
            await self._feed(stream)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. the queue's actor died with its node
            self.abandon(stream, f"its queue failed: {type(exc).__name__}: {one_line(exc, 200)}")

    async def _feed(self, stream: _Stream) -> None:
        while True:
            await stream.wake.wait()
            stream.wake.clear()
            waiting, stream.waiting = stream.waiting, []
            waiting.sort(key=lambda row: (row[1], row[0]))
            for _, group in itertools.groupby(waiting, key=lambda row: row[1]):
                requests = list(group)
                for start in range(0, len(requests), self.requests_per_row):
                    block = requests[start : start + self.requests_per_row]
                    parts = [[request] for request in block] if self.row_per_request else [block]
                    rows = [{"keys": [r[0] for r in part], "payload": [r[2] for r in part]} for part in parts]
                    await stream.queue.put_async(rows)
                    stream.rows += len(block)
            if stream.closing and not stream.waiting:
                await stream.queue.put_async(_END)
                return

    def _read_replies(self, stream: _Stream, dataset: Any, loop: asyncio.AbstractEventLoop) -> None:
        """The stream's execution (in a thread): each reply to its request's future, as it comes."""
        try:
            # No prefetching: a prefetching iterator holds the last reply until another arrives.
            for batch in dataset.iter_batches(batch_size=None, prefetch_batches=0, batch_format="pyarrow"):
                loop.call_soon_threadsafe(resolve_all, stream, replies_of(batch, stream))
            # Ended without its end marker: the task reading its queue was lost (with a node; Ray
            # Data skips a failed task, `max_errored_blocks=-1`) and took its rows with it.
            ended = "the input ended" if stream.closing else "the execution ended before its input (lost)"
        except Exception as exc:  # noqa: BLE001 - a failed execution fails its rows, not the run
            ended = f"Ray Data execution failed: {type(exc).__name__}: {one_line(exc, 300)}"
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(self._ended, stream, ended)
        # The execution is over (its requests are told first): its queue's actor, a process of
        # ~170 MB, goes too; nothing reads the queue any more. Left alive, a run of a million
        # rows kept one per restart_rows requests. Killed, not asked to exit: an async actor
        # would first wait for a call still blocked in it (a feeder's put on a full queue).
        with contextlib.suppress(Exception):
            stream.queue.shutdown(force=True)

    def _ended(self, stream: _Stream, why: str) -> None:
        if stream.ended is None:
            stream.ended = why
            self.executions.append({"target": stream.target, "rows": stream.rows, "ended": why})
        for future in stream.pending.values():
            if not future.done():
                future.set_result((None, why))
        if stream.feeder is not None and not stream.feeder.done():
            stream.feeder.cancel()

    async def end(self, stream: _Stream, why: str) -> None:
        if stream.feeder is not None and not stream.closing:
            stream.feeder.cancel()
            await asyncio.gather(stream.feeder, return_exceptions=True)
        if stream.ended is None:
            # An execution that is gone already has nothing to end.
            if not stream.closing:
                stream.closing = True  # its input ends here (not lost)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(stream.queue.put_async(_END), 30)
            if stream.reader is not None:
                await asyncio.to_thread(stream.reader.join, 60)
            self._ended(stream, why)

    async def close(self) -> None:
        streams = [*self.current.values(), *self.retired]
        self.current, self.retired = {}, []
        for stream in streams:
            await self.end(stream, "the engine closed")


#: the column Ray's LLM processor keeps each row's fields in, between its stages
DATA_COLUMN = "__data"


def replies_of(batch: Any, stream: _Stream) -> list[tuple[list[int], str]]:
    """A block of the execution's output (a ``pyarrow.Table``) as (keys, reply) pairs.

    The processor's rows keep their fields in one struct column (``__data``). Only the fields the
    stream's postprocess needs become Python objects (never the request bodies that travelled in
    the same row), and the postprocess runs here: as a Ray Data map after the actors' stage it
    cost one Ray task per row (an actor's output cannot be fused with a task's map), about a
    fifth of Ray's CPU per request on the 2-core machine (docs/serving.md)."""
    if DATA_COLUMN in batch.column_names:
        rows: list[dict[str, Any]] = []
        for chunk in batch.column(DATA_COLUMN).chunks:
            names = [f.name for f in chunk.type if f.name in stream.fields]
            columns = [chunk.field(name).to_pylist() for name in names]
            rows.extend(dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True))
    else:
        rows = batch.to_pylist()
    if stream.postprocess is not None:
        rows = [stream.postprocess(row) for row in rows]
    return [(row["keys"], row["reply"]) for row in rows]


def resolve_all(stream: _Stream, replies: list[tuple[list[int], str]]) -> None:
    """Hand each row of a block its replies (one call into the event loop per block)."""
    for keys, reply in replies:
        resolve(stream, keys, reply)


def resolve(stream: _Stream, keys: list[int], reply: str) -> None:
    """Hand a row's replies (a JSON list, one per request, in the row's order) to their requests."""
    try:
        replies = json.loads(reply)
    except ValueError as exc:
        replies, why = None, f"unreadable reply: {one_line(exc, 200)}"
    else:
        why = f"unreadable reply: {len(keys)} requests, not a list of as many replies"
    if isinstance(replies, list) and len(replies) == len(keys):
        outcomes = [(r, None) for r in replies]
    else:
        outcomes = [(None, why)] * len(keys)
    stream.up.set()
    for key, outcome in zip(keys, outcomes, strict=True):
        future = stream.pending.get(int(key))
        if future is not None and not future.done():
            future.set_result(outcome)
