"""The DynamoDB store's kit: moto's DynamoDB server on a free loopback port, one table.

The server runs in this process but is reached over HTTP like the real service: no request
mocking. Every test gets its own namespace in the session's table; tests that need a table of
their own take a name from `DynamoDBKit.new_table_name`.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import uuid
from typing import TYPE_CHECKING, Any

from .base import StoreKit, closed_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from agents_persistence import AsyncDynamoDBCheckpointer, DynamoDBCheckpointer

REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


class MotoServer:
    """moto's server (what ``ThreadedMotoServer`` runs) handling one request at a time.

    DynamoDB applies each conditional write atomically. moto's threaded server evaluates a
    condition and stores the item without a lock, so two racing writes can both pass their
    condition; serializing requests restores the service's guarantee, and the racing tests
    then test the store rather than moto.
    """

    def __init__(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        app = DomainDispatcherApplication(create_backend_app)
        lock = threading.Lock()

        def serialized(
            environ: dict[str, Any], start_response: Callable[..., Any]
        ) -> Iterable[bytes]:
            with lock:
                return list(app(environ, start_response))

        self._server = make_server(
            "127.0.0.1", 0, serialized, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, daemon=True, name="moto-dynamodb"
        )
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.endpoint = f"http://{host}:{port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()


class DynamoDBKit(StoreKit):
    name = "dynamodb"
    db_system = "aws.dynamodb"
    # Larger states (above the 400 KB item limit) are tested in tests/stores: moto copies the
    # whole table for every transaction, which makes many large states slow the suite.
    large_state_bytes = 300_000

    table_format = "pieces"

    def __init__(self) -> None:
        self.table = "agents-persistence-" + uuid.uuid4().hex[:12]
        self.endpoint = ""
        self._server: MotoServer | None = None
        self._client: Any = None
        self.used = False

    def unavailable_reason(self) -> str | None:
        try:
            import moto.server  # noqa: F401
        except ImportError as exc:
            return f"moto[server] is not installed ({exc})"
        return None

    def start(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = MotoServer()
        self.endpoint = self._server.endpoint
        self._create_table()
        STARTED.append(self)

    def _create_table(self) -> None:
        from agents_persistence import DynamoDBCheckpointer

        with DynamoDBCheckpointer(self.table, **self.connection()) as cp:
            cp.create_table(table_format=self.table_format)

    def fresh_table(self) -> None:
        """Replace the kit's table with a new, empty one and delete the old one.

        moto deep-copies a table for every item of a transaction, so a table that keeps the
        items of every earlier test makes each transaction slower than the last; one table per
        test module keeps the suite's DynamoDB timing independent of what ran before.
        """
        old, self.table = self.table, "agents-persistence-" + uuid.uuid4().hex[:12]
        self._create_table()
        self.client.delete_table(TableName=old)
        self.used = False

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def connection(self) -> dict[str, Any]:
        """Keyword arguments that reach the moto server.

        The budget is wider than the default 5 s: moto answers in this process, on two cores
        shared with the rest of the suite. The budget's own tests set theirs explicitly.
        """
        return {
            "region": REGION,
            "endpoint_url": self.endpoint,
            "call_timeout": 15.0,
            **CREDENTIALS,
        }

    def partition(self, namespace: str, thread_id: str, table: str | None = None) -> list[str]:
        """The sort keys of every item of a thread's partition (pieces format)."""
        pages = self.client.get_paginator("query").paginate(
            TableName=table or self.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"{namespace}#{thread_id}"}},
            ProjectionExpression="sk",
            ConsistentRead=True,
        )
        return [item["sk"]["S"] for page in pages for item in page["Items"]]

    def new_table_name(self) -> str:
        return "ap-test-" + uuid.uuid4().hex[:12]

    @property
    def client(self) -> Any:
        """A boto3 client for looking behind the library."""
        if self._client is None:
            import boto3

            self._client = boto3.client(
                "dynamodb", region_name=REGION, endpoint_url=self.endpoint, **CREDENTIALS
            )
        return self._client

    def make(
        self, *, namespace: str, table: str | None = None, **options: Any
    ) -> DynamoDBCheckpointer[Any]:
        from agents_persistence import DynamoDBCheckpointer

        return DynamoDBCheckpointer(
            table or self.table, namespace=namespace, **{**self.connection(), **options}
        )

    async def make_async(
        self, *, namespace: str, table: str | None = None, **options: Any
    ) -> AsyncDynamoDBCheckpointer[Any]:
        from agents_persistence import AsyncDynamoDBCheckpointer

        return AsyncDynamoDBCheckpointer(
            table or self.table, namespace=namespace, **{**self.connection(), **options}
        )

    def key(self, namespace: str, thread_id: str) -> dict[str, Any]:
        """The table key of a thread's item (its head item in the pieces format)."""
        key = {"pk": {"S": f"{namespace}#{thread_id}"}}
        return key if self.table_format != "pieces" else {**key, "sk": {"S": "h"}}

    def corrupt(self, namespace: str, thread_id: str) -> None:
        """Replace the head's state with broken JSON (a sealed head with it, if any)."""
        from agents_persistence.models.dynamodb import ThreadHeadItem

        remove = "" if self.table_format != "pieces" else " REMOVE #b"
        names = {"#s": "state"}
        if remove:
            names["#b"] = ThreadHeadItem.sealed.attr_name
        self.client.update_item(
            TableName=self.table,
            Key=self.key(namespace, thread_id),
            UpdateExpression="SET #s = :s" + remove,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={":s": {"S": '{"todos": "not a list"'}},
        )

    def stored_values(self, namespace: str, thread_id: str) -> list[bytes]:
        """The head (inline or from its overflow chunks) and every piece, as stored."""
        from agents_persistence._layout import unpack
        from agents_persistence.models.dynamodb import PieceItem, ThreadHeadItem

        pages = self.client.get_paginator("query").paginate(
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"{namespace}#{thread_id}"}},
            ConsistentRead=True,
        )
        head: ThreadHeadItem | None = None
        groups: dict[str, list[bytes]] = {}
        for raw in (item for page in pages for item in page["Items"]):
            if raw["sk"]["S"] == "h":
                head = ThreadHeadItem.from_raw_data(raw)
            else:
                group = raw["sk"]["S"].rpartition("#")[0]
                groups.setdefault(group, []).append(PieceItem.from_raw_data(raw).body or b"")
        assert head is not None, "no head item"
        values = [b"".join(parts) for group, parts in groups.items() if group.startswith("p#")]
        if head.overflow is not None:
            (overflow,) = [b"".join(p) for g, p in groups.items() if g.startswith("o#")]
            assert isinstance(head.head_bytes, int)
            return [unpack(thread_id, overflow)[: head.head_bytes], *values]
        stored = head.sealed if head.sealed is not None else (head.state or "").encode()
        return [stored, *values]

    def stored_count(self, namespace: str, table: str | None = None) -> int:
        """Threads (head items) stored in a namespace, expired or not."""
        # A scan is fine here: it looks behind the library, which itself never scans.
        pages = self.client.get_paginator("scan").paginate(
            TableName=table or self.table,
            FilterExpression="begins_with(pk, :prefix) AND attribute_exists(version)",
            ExpressionAttributeValues={":prefix": {"S": f"{namespace}#"}},
            ProjectionExpression="pk",
        )
        return sum(len(page["Items"]) for page in pages)

    def unreachable_options(self) -> dict[str, Any]:
        return {
            "region": REGION,
            "endpoint_url": f"http://127.0.0.1:{closed_port()}",
            "connect_timeout": 0.5,
            "read_timeout": 0.5,
            "max_retries": 0,
            **CREDENTIALS,
        }

    def make_unreachable(self, *, namespace: str) -> DynamoDBCheckpointer[Any]:
        from agents_persistence import DynamoDBCheckpointer

        return DynamoDBCheckpointer(self.table, namespace=namespace, **self.unreachable_options())

    async def make_unreachable_async(self, *, namespace: str) -> AsyncDynamoDBCheckpointer[Any]:
        from agents_persistence import AsyncDynamoDBCheckpointer

        return AsyncDynamoDBCheckpointer(
            self.table, namespace=namespace, **self.unreachable_options()
        )


class SingleItemDynamoDBKit(DynamoDBKit):
    """A moto server with a table of the single-item format (one item per thread), as the
    library made before the pieces format: such tables keep working."""

    name = "dynamodb-single-item"  # started apart from the pieces-format kit
    table_format = "single-item"
    large_state_bytes = 300_000


STARTED: list[DynamoDBKit] = []
"""The kits whose moto server runs (`DynamoDBKit.start` adds them)."""


def fresh_tables() -> None:
    """A new table for every started kit that a test used since the last call."""
    for kit in STARTED:
        if kit.used and kit._server is not None:
            kit.fresh_table()


PIECES_KIT = DynamoDBKit()
# No encrypted twin in the contract suite for DynamoDB: moto copies the whole table on every
# transaction, and the whole suite run a second time on moto (its 1,000-turn conversation
# included) slowed later requests into timeouts, even on a server of its own. Encryption on
# DynamoDB is covered by tests/stores/test_dynamodb_encryption.py and the command's tests
# (tests/cli/test_keys.py), which run on every store.
KITS = [PIECES_KIT]
SINGLE_ITEM_KIT = SingleItemDynamoDBKit()


def record_requests(checkpointer: Any) -> list[tuple[str, dict[str, Any], str]]:
    """Record (operation, parameters, thread name) of every request a checkpointer sends."""
    inner = getattr(checkpointer, "inner", checkpointer)  # the async harness wraps it
    client = inner._table.connection.connection.client
    calls: list[tuple[str, dict[str, Any], str]] = []

    def hook(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((model.name, params, threading.current_thread().name))

    client.meta.events.register("provide-client-params.dynamodb.*", hook)
    return calls


def started(kit: DynamoDBKit) -> DynamoDBKit:
    """``kit`` with its moto server and table ready (made once per test session)."""
    from ..conftest import _ready

    ready = _ready(kit)
    assert isinstance(ready, DynamoDBKit)
    return ready


def noise(size: int) -> str:
    """Text of ``size`` characters that does not compress (random bytes in base64)."""
    return base64.b64encode(os.urandom(size * 3 // 4)).decode()[:size]
