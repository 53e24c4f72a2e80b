"""The exception hierarchy: every error the library raises derives from `CheckpointerError`.

Driver errors never escape raw: each store translates them at its boundary and chains the
original with ``raise ... from exc`` so the cause stays visible in tracebacks.

Retry or fix: `BackendUnavailableError` (also a `ConnectionError`) is the one error a retry can
cure: refused or lost connections, timeouts, an exhausted pool, a busy server. Refused
credentials (`AuthenticationError`), missing privileges (`AccessDeniedError`) and a URL naming a
database that does not exist (`DatabaseNotFoundError`) need a fix, are never
`ConnectionError`, and come out the same way from every store, sync or async.
"""

from __future__ import annotations

__all__ = [
    "AccessDeniedError",
    "AuthenticationError",
    "BackendUnavailableError",
    "CallTimeoutError",
    "DEFAULT_CALL_TIMEOUT",
    "CheckpointerError",
    "ConfigurationError",
    "ConflictError",
    "CorruptStateError",
    "DatabaseNotFoundError",
    "DecryptionError",
    "InvalidArgumentError",
    "InvalidCursorError",
    "InvalidStateError",
    "InvalidThreadIdError",
    "MissingExtraError",
    "MissingUpcasterError",
    "PayloadVersionError",
    "SchemaNotReadyError",
    "StateTooLargeError",
    "ThreadForkError",
    "TransactionAbortedError",
    "UnknownKeyError",
]


class CheckpointerError(Exception):
    """Root of every error raised by agents-persistence."""


class ConfigurationError(CheckpointerError, ValueError):
    """A checkpointer was configured with an invalid option (namespace, TTL, table name, URL)."""


class MissingExtraError(ConfigurationError, ImportError):
    """A store's driver is not installed; the message names the extra that installs it.

    Also an `ImportError`, so ``try: from agents_persistence import SQLCheckpointer`` /
    ``except ImportError:`` keeps working for applications that treat a store as optional.

    Attributes:
        extra: The extra to install, as in ``pip install 'agents-persistence[EXTRA]'``.
        name: The module that could not be imported (as on any `ImportError`).
    """

    def __init__(self, message: str, *, extra: str, name: str | None) -> None:
        super().__init__(message)
        self.msg = message
        self.extra = extra
        self.name = name


class DatabaseNotFoundError(ConfigurationError):
    """The URL names a database that does not exist; retrying will not help.

    An unknown PostgreSQL or MySQL/MariaDB database, an SQLite file the process cannot create or
    open (its directory is missing or not accessible), a Redis database number above the
    server's ``databases`` setting. Fix the URL or create the database. (A missing DynamoDB table
    or SQL table is `SchemaNotReadyError`: the database is there, the schema is not.)
    """


class InvalidArgumentError(CheckpointerError, ValueError):
    """A call received an argument outside its documented domain."""


class InvalidThreadIdError(InvalidArgumentError):
    """A thread id is not a string of 1 to 256 characters without control characters."""

    def __init__(self, thread_id: object, reason: str) -> None:
        self.thread_id = thread_id
        self.reason = reason
        super().__init__(f"invalid thread id {thread_id!r:.80}: {reason}")


class InvalidCursorError(InvalidArgumentError):
    """A listing cursor was not produced by this store (or was tampered with)."""


class InvalidStateError(CheckpointerError, TypeError):
    """The state passed to ``save_state`` is not an instance of the checkpointer's state type."""


class StateTooLargeError(CheckpointerError, ValueError):
    """The encoded state exceeds the store's ``max_state_bytes``; nothing was written."""

    def __init__(self, thread_id: str, size: int, limit: int) -> None:
        self.thread_id = thread_id
        self.size = size
        self.limit = limit
        super().__init__(
            f"state of thread {thread_id!r} is {size} bytes, above the limit of {limit} bytes"
            " (max_state_bytes); nothing was written"
        )


class ConflictError(CheckpointerError):
    """An ``expected_version`` did not match the stored version; nothing was written.

    Attributes:
        thread_id: The thread that was being saved.
        expected: The version the caller expected (0 means "must not exist yet").
        actual: The version actually stored, or ``None`` when the thread does not exist.
    """

    expected: int | str | None
    actual: int | str | None

    def __init__(self, thread_id: str, expected: int, actual: int | None) -> None:
        self.thread_id = thread_id
        self.expected = expected
        self.actual = actual
        found = "no stored thread" if actual is None else f"version {actual}"
        super().__init__(
            f"thread {thread_id!r}: expected version {expected}, found {found}; nothing was written"
        )


class ThreadForkError(ConflictError):
    """A LangGraph saver with write ownership refused a ``put`` that would fork the thread.

    Raised when the saver has ``exclusive_writes=True`` and the parent of the new checkpoint
    (the ``checkpoint_id`` of the config given to ``put``) is not the thread's latest
    checkpoint in that namespace: another writer moved the thread on first. Nothing was
    written. Load the thread's latest checkpoint again (``get_tuple``) and redo the step.

    Attributes:
        thread_id: The thread that was being written.
        checkpoint_ns: Its namespace (``""`` for the root graph).
        expected: The parent the ``put`` named (``None``: a first checkpoint).
        actual: The thread's latest checkpoint id in the namespace (``None``: it has none).
    """

    def __init__(
        self, thread_id: str, checkpoint_ns: str, expected: str | None, actual: str | None
    ) -> None:
        self.thread_id = thread_id
        self.checkpoint_ns = checkpoint_ns
        self.expected = expected
        self.actual = actual
        where = f" namespace {checkpoint_ns!r}" if checkpoint_ns else ""
        wanted = "no checkpoint yet" if expected is None else f"latest checkpoint {expected!r}"
        found = "none" if actual is None else repr(actual)
        CheckpointerError.__init__(
            self,
            f"thread {thread_id!r}{where}: put expected {wanted}, found latest {found}"
            " (another writer moved the thread on); nothing was written",
        )


class TransactionAbortedError(CheckpointerError):
    """The database ended the caller's transaction during a write of a unit of work.

    Raised only by a checkpointer bound to the caller's transaction (``SQLCheckpointer.using``):
    a deadlock (MySQL/MariaDB roll the whole transaction back) or a serialization failure
    (PostgreSQL aborts the transaction). Nothing of that transaction is kept: roll it back and
    run the whole unit of work again.
    """


class CorruptStateError(CheckpointerError):
    """A stored record exists but cannot be decoded into the checkpointer's state type."""

    def __init__(self, thread_id: str, detail: str) -> None:
        self.thread_id = thread_id
        self.detail = detail
        super().__init__(f"stored state of thread {thread_id!r} cannot be decoded: {detail}")


class DecryptionError(CorruptStateError):
    """An encrypted stored value does not open: wrong key, tampered bytes, or another place.

    Raised when the key-encryption key does not unwrap the value's data key, when the
    ciphertext or its header was changed, when the value was sealed for another namespace,
    thread or binding (a head or piece copied elsewhere), or when the value is not a sealed
    blob this library can read. The message names the thread, never the plaintext or any key
    material.
    """


class UnknownKeyError(CorruptStateError):
    """An encrypted stored value names a key-encryption key the key provider does not hold.

    Add the key (by its id) to the keyring's readable keys, or restore it in the key
    service; the message gives the key id, which is not secret.

    Attributes:
        key_id: The key id the stored value names.
    """

    def __init__(self, thread_id: str, key_id: str, detail: str | None = None) -> None:
        self.key_id = key_id
        super().__init__(
            thread_id, detail or f"it was encrypted under key {key_id!r}, which is not available"
        )


class PayloadVersionError(CorruptStateError):
    """A stored state's schema version cannot be brought to the state model's version.

    The record was written by a newer state model than the code's (``schema_version``
    above the model's), its stored version is not a valid version, or an upcaster failed.

    Attributes:
        stored: The schema version the record was written with (as stored).
        current: The state model's schema version.
    """

    def __init__(self, thread_id: str, stored: object, current: int, detail: str) -> None:
        self.stored = stored
        self.current = current
        super().__init__(thread_id, detail)


class MissingUpcasterError(PayloadVersionError):
    """No upcaster is registered for a step the stored state needs (``n -> n + 1``).

    Attributes:
        step: The schema version the missing upcaster would upgrade from.
    """

    def __init__(self, thread_id: str, stored: int, current: int, step: int) -> None:
        self.step = step
        super().__init__(
            thread_id,
            stored,
            current,
            f"schema version {stored} needs upcasters up to {current}, and none is registered"
            f" for {step} -> {step + 1}",
        )


class SchemaNotReadyError(CheckpointerError):
    """The SQL schema is missing or behind the library's migrations; the message says the fix."""


class BackendUnavailableError(CheckpointerError, ConnectionError):
    """The store's server could not be reached or did not answer in time: retrying may help.

    Refused or lost connections, timeouts, an exhausted connection pool, a server that is
    starting, busy, throttling or out of connections, SQLite's "database is locked".
    """


DEFAULT_CALL_TIMEOUT = 5.0
"""Seconds one call may take on any store by default, waits, connecting and retries included."""


class CallTimeoutError(BackendUnavailableError, TimeoutError):
    """The call ran past its time budget (``call_timeout``): the server did not answer in time.

    A hung or stopped server, a network that drops packets, a lock held too long. The call's
    outcome is unknown for a save whose request was sent (it may have been applied): load the
    thread, or save again with ``expected_version``, which refuses a duplicate. The checkpointer
    stays usable; later calls succeed once the server answers again.
    """


class AccessDeniedError(CheckpointerError):
    """The store refused the operation to these credentials; retrying will not help.

    The user has no privilege on the database, table or command (PostgreSQL's "permission
    denied", MySQL's "access denied ... to database", Redis ACL's NOPERM, DynamoDB's
    ``AccessDeniedException``), or the SQLite file is read-only. Grant the privilege or use
    other credentials. `AuthenticationError` is the case where the credentials themselves were
    refused.
    """


class AuthenticationError(AccessDeniedError):
    """The store did not accept the credentials; retrying will not help.

    A wrong or missing password, an unknown user or role, AWS keys the service does not know or
    a secret key that does not match. Fix the user name and password of the URL (or the AWS
    credentials).
    """
