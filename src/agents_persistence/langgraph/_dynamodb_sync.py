"""`DynamoDBCheckpointSaver`: LangGraph's ``BaseCheckpointSaver`` on a DynamoDB table."""

from __future__ import annotations

# First, before any driver: without the extras this raises MissingExtraError naming them.
from agents_persistence.repositories import _dynamodb_extra  # noqa: F401

# isort: split

import copy
from typing import TYPE_CHECKING, Any, Self, TypeVar

from agents_persistence._core import _validate_ttl, utc_now
from agents_persistence.errors import (
    ConfigurationError,
    InvalidArgumentError,
    SchemaNotReadyError,
)
from agents_persistence.langgraph._dynamodb_io import LangGraphTable
from agents_persistence.langgraph._dynamodb_ops import Operations
from agents_persistence.langgraph._setup import no_pickle
from agents_persistence.langgraph._threaded import ThreadedSaver, check_keep_last
from agents_persistence.models.dynamodb import ConnectionSettings
from agents_persistence.repositories._call_budget import deadline, validate_call_timeout
from agents_persistence.repositories._dynamodb_budget import TIMEOUT_SHARES, derive_timeouts
from agents_persistence.repositories._dynamodb_errors import driver_errors
from agents_persistence.repositories._dynamodb_mapping import parse_url, validate_table_name

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterator, Sequence
    from datetime import timedelta

    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import (
        ChannelVersions,
        Checkpoint,
        CheckpointMetadata,
        CheckpointTuple,
    )
    from langgraph.checkpoint.serde.base import SerializerProtocol

    from agents_persistence._core import Clock

__all__ = ["DEFAULT_LANGGRAPH_TABLE", "DEFAULT_SAVER_CALL_TIMEOUT", "DynamoDBCheckpointSaver"]

DEFAULT_LANGGRAPH_TABLE = "agents-persistence-langgraph"
"""The table the DynamoDB savers use unless told otherwise."""

DEFAULT_SAVER_CALL_TIMEOUT = 30.0
"""Default ``call_timeout`` of the DynamoDB savers: a saver call is several requests (a ``put``
writes its values, then its checkpoint, then applies retention)."""

_CONNECT_TIMEOUT = 1.0
_READ_TIMEOUT = 2.0
_T = TypeVar("_T")
_URL_OPTIONS = frozenset(
    {"region", "endpoint_url", "call_timeout", "connect_timeout", "read_timeout", "max_retries"}
)
_URL_OPTIONS_WITH_TTL = _URL_OPTIONS | {"ttl"}


def _positive(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an int of at least {minimum}, got {value!r}")
    return value


def _thread(config: RunnableConfig | None) -> str:
    thread_id = ((config or {}).get("configurable") or {}).get("thread_id")
    return thread_id if isinstance(thread_id, str) else ""


class DynamoDBCheckpointSaver(ThreadedSaver):
    """LangGraph checkpoints in a DynamoDB table, through PynamoDB.

    Needs the extras ``dynamodb`` and ``langgraph``. One partition per thread: a header item,
    the checkpoints, channel values and pending writes, each an item told apart by its sort
    key. A value larger than fits in one item (DynamoDB's 400 KB limit) is split over several
    items of the same partition and joined on read, so no value is refused for its size.
    Create the table once with `setup` (or `create_table`). The async methods run the sync ones
    in a worker thread; `AsyncDynamoDBCheckpointSaver` is the twin with a bounded pool of its
    own.

    Args:
        table_name: The table (default ``agents-persistence-langgraph``).
        region: AWS region; ``None`` uses the standard configuration.
        endpoint_url: Custom endpoint such as ``http://localhost:4566`` (LocalStack, moto).
        aws_access_key_id: Explicit credentials; ``None`` uses the standard credential chain.
        aws_secret_access_key: Secret of explicit credentials.
        aws_session_token: Token of temporary explicit credentials.
        call_timeout: Seconds one saver call may take in all, requests, retries and backoff
            included (30 s by default); past it the call raises `CallTimeoutError`. A listing
            gets it per checkpoint yielded.
        connect_timeout: Seconds to wait for a connection (``None``: 1 s, at most 20 % of
            call_timeout).
        read_timeout: Seconds to wait for a response (``None``: 2 s, at most 40 % of
            call_timeout).
        max_retries: Most retries of one request (throttling, 5xx, network errors).
        max_pool_connections: HTTP connections kept to the endpoint.
        serde: A LangGraph serializer; by default `default_serde` (msgpack with an allowlist).
            Whatever is given is wrapped so that pickle is refused.
        keep_last: Retention: after each ``put``, keep only the newest ``keep_last``
            checkpoints of that thread and namespace, with their writes, and the channel values
            they use; ``None`` (the default) keeps everything.
        ttl: Seconds (or a timedelta, at least 1 s) a thread lives after its last write
            (``put`` or ``put_writes``, each refreshes it). An expired thread is invisible at
            once, a write starts it afresh; DynamoDB's Time to Live removes its header later
            and `purge_expired` deletes the rest. ``None``: no expiry.
        clock: Returns the current aware time (tests); the system's UTC clock by default.
        exclusive_writes: Write ownership: a ``put`` whose parent (the ``checkpoint_id`` of
            its config) is not the thread's latest checkpoint in that namespace raises
            `ThreadForkError` (a `ConflictError`) and writes nothing, instead of forking the
            thread; a ``put`` without a parent passes only on a thread with no checkpoint.
            The checkpoint is written in one transaction with the namespace's head item,
            conditioned on the head the check read.

    Raises:
        ConfigurationError: Invalid table name, timeouts, counts, or a serializer with pickle.
    """

    def __init__(
        self,
        table_name: str = DEFAULT_LANGGRAPH_TABLE,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        call_timeout: float = DEFAULT_SAVER_CALL_TIMEOUT,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        max_retries: int = 3,
        max_pool_connections: int = 10,
        serde: SerializerProtocol | None = None,
        keep_last: int | None = None,
        ttl: float | timedelta | None = None,
        clock: Clock | None = None,
        exclusive_writes: bool = False,
    ) -> None:
        super().__init__(serde=no_pickle(serde))
        if endpoint_url is not None and not endpoint_url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"endpoint_url must start with http:// or https://: {endpoint_url!r}"
            )
        if (aws_access_key_id is None) != (aws_secret_access_key is None):
            raise ConfigurationError(
                "give both aws_access_key_id and aws_secret_access_key, or neither"
            )
        check_keep_last(keep_last)
        budget = validate_call_timeout(call_timeout)
        if connect_timeout is None:
            connect_timeout = min(_CONNECT_TIMEOUT, budget * TIMEOUT_SHARES["connect_timeout"])
        if read_timeout is None:
            read_timeout = min(_READ_TIMEOUT, budget * TIMEOUT_SHARES["read_timeout"])
        budget, connect, read = derive_timeouts(budget, connect_timeout, read_timeout)
        settings = ConnectionSettings(
            table_name=validate_table_name(table_name),
            region=region,
            endpoint_url=endpoint_url,
            connect_timeout=connect,
            read_timeout=read,
            max_retries=_positive(max_retries, "max_retries", 0),
            call_timeout=budget,
            max_pool_connections=_positive(max_pool_connections, "max_pool_connections", 1),
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token,
        )
        self._table = LangGraphTable(settings)
        self._ops = Operations(
            self._table,
            self.serde,
            ttl=_validate_ttl(ttl),
            keep_last=keep_last,
            clock=clock or utc_now,
            exclusive=bool(exclusive_writes),
        )

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """A saver on ``dynamodb://TABLE?region=...&endpoint=...``.

        Query keys: ``region``, ``endpoint``, ``call_timeout``, ``connect_timeout``,
        ``read_timeout``, ``retries``, ``ttl`` (seconds). Keywords are the constructor's and
        win over the URL's values. Credentials never go in URLs.
        """
        parsed = parse_url(url)
        unknown = set(parsed.options) - _URL_OPTIONS_WITH_TTL
        if unknown:
            raise ConfigurationError(
                f"dynamodb:// URL options {sorted(unknown)} do not apply to the LangGraph savers"
            )
        given = {name: value for name, value in options.items() if value is not None}
        return cls(parsed.table_name, **{**parsed.options, **given})

    @property
    def table_name(self) -> str:
        """The DynamoDB table."""
        return self._table.table_name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(table={self.table_name!r})"

    # --- life cycle ----------------------------------------------------------------------

    def _call(self, function: Callable[..., _T], *args: Any, thread_id: str = "") -> _T:
        """Run one saver call within ``call_timeout``, driver errors translated."""
        try:
            with (
                driver_errors(self.table_name, thread_id=thread_id),
                deadline(self._table.settings.call_timeout),
            ):
                return function(*args)
        except SchemaNotReadyError as exc:
            raise SchemaNotReadyError(
                f"DynamoDB table {self.table_name!r} does not exist or has other keys than the"
                " LangGraph savers' (pk, sk): create it with saver.setup() or create_table()"
            ) from exc

    def create_table(self, *, wait: bool = True) -> bool:
        """Create the table and enable its Time to Live, unless they exist. Idempotent.

        On-demand billing, hash key ``pk``, range key ``sk`` (both strings), no index; Time to
        Live on ``expires_at``.

        Args:
            wait: Return only once the table is active and its TTL enabled.

        Returns:
            True if the table was created, False if it existed.
        """
        with driver_errors(self.table_name):
            return self._table.create_table(wait=wait)

    def setup(self) -> None:
        """`create_table`, waiting until the table is active."""
        self.create_table(wait=True)

    def delete_table(self, *, wait: bool = True) -> bool:
        """Delete the table with every thread in it; False if it did not exist."""
        with driver_errors(self.table_name):
            return self._table.delete_table(wait=wait)

    def close(self) -> None:
        """Close the client's HTTP connections."""
        self._table.close()

    def with_allowlist(self, extra_allowlist: Collection[tuple[str, ...]]) -> Self:
        """A shallow copy whose serializer also revives ``extra_allowlist`` (LangGraph API)."""
        serde = self.serde.with_msgpack_allowlist(extra_allowlist)  # type: ignore[attr-defined]
        clone = copy.copy(self)
        clone.serde = serde
        clone._ops = copy.copy(self._ops)
        clone._ops.serde = serde
        return clone

    # --- the saver API -------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names (or its thread's latest), with values and writes."""
        return self._call(self._ops.get_tuple, config, thread_id=_thread(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first: of a thread (and namespace) if ``config`` names them.

        ``filter`` keeps the checkpoints whose metadata has each given key equal to the given
        value; ``before`` keeps those older than its checkpoint; ``limit`` caps the count.
        Without a thread, the listing scans the table.
        """
        found = self._ops.listing(config, filter, before, limit)
        done: Any = object()
        while (item := self._call(next, found, done, thread_id=_thread(config))) is not done:
            yield item

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store ``checkpoint`` (with the values of ``new_versions``); return its config."""
        return self._call(
            self._ops.put, config, checkpoint, metadata, new_versions, thread_id=_thread(config)
        )

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's pending writes against the checkpoint ``config`` names."""
        self._call(
            self._ops.put_writes, config, writes, task_id, task_path, thread_id=_thread(config)
        )

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, value and write of ``thread_id``, in all namespaces."""
        self._call(self._ops.delete_threads, [thread_id], thread_id=str(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints made by ``run_ids`` and their writes (scans the table)."""
        self._call(self._ops.delete_for_runs, run_ids)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, value and write of one thread to a thread that has none."""
        self._call(
            self._ops.copy_thread, source_thread_id, target_thread_id, thread_id=target_thread_id
        )

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``"keep_latest"``: keep each namespace's newest checkpoint; ``"delete"``: delete all."""
        if strategy == "keep_latest":
            self._call(self._ops.keep_latest, thread_ids, 1)
        elif strategy == "delete":
            self._call(self._ops.delete_threads, thread_ids)
        else:
            raise InvalidArgumentError(
                f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'"
            )

    def purge_expired(self) -> int:
        """Delete the items of every expired thread (a Scan, unbounded by ``call_timeout``).

        Returns the number of threads deleted.
        """
        with driver_errors(self.table_name):
            return self._ops.purge_expired(self._ops.clock())
