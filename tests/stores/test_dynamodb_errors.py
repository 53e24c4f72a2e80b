"""DynamoDB errors and configuration: unreachable endpoints, item size limits, corrupt items,
invalid settings, URLs and the standard credential chain."""

from __future__ import annotations

import socket
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from agents_persistence import (
    AgentStateSnapshot,
    AsyncDynamoDBCheckpointer,
    BackendUnavailableError,
    ConfigurationError,
    CorruptStateError,
    DynamoDBCheckpointer,
    StateTooLargeError,
    open_async_checkpointer,
    open_checkpointer,
)
from agents_persistence.repositories.dynamodb import SINGLE_ITEM_MAX_STATE_BYTES

from ..kits.dynamodb import (
    CREDENTIALS,
    REGION,
    SINGLE_ITEM_KIT,
    DynamoDBKit,
    record_requests,
    started,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..support import Harness, Portal


@pytest.fixture
def kit() -> DynamoDBKit:
    """A DynamoDB kit with a table of the single-item format, also behind the harness."""
    return started(SINGLE_ITEM_KIT)


def _state_of_size(size: int) -> AgentStateSnapshot:
    base = len(AgentStateSnapshot(files={"f": ""}).model_dump_json())
    state = AgentStateSnapshot(files={"f": "x" * (size - base)})
    assert len(state.model_dump_json()) == size
    return state


@pytest.mark.timeout(60)
def test_closed_endpoint_is_unavailable_for_every_operation(harness: Harness) -> None:
    cp = harness.make_unreachable()
    operations: list[Callable[[], Any]] = [
        lambda: cp.save_state("t", AgentStateSnapshot()),
        lambda: cp.save_state("t", AgentStateSnapshot(), expected_version=3),
        lambda: cp.load_checkpoint("t"),
        lambda: cp.delete_thread("t"),
        lambda: cp.list_threads(),
        lambda: cp.purge_expired(),
    ]
    for operation in operations:
        with pytest.raises(BackendUnavailableError) as raised:
            operation()
        assert raised.value.__cause__ is not None


@pytest.mark.timeout(60)
def test_closed_endpoint_fails_table_management(kit: DynamoDBKit) -> None:
    with kit.make_unreachable(namespace="n") as cp:
        with pytest.raises(BackendUnavailableError):
            cp.create_table()
        with pytest.raises(BackendUnavailableError):
            cp.delete_table()


@pytest.mark.timeout(60)
def test_a_server_that_never_answers_times_out(kit: DynamoDBKit) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections are accepted by the kernel, never answered
        port = silent.getsockname()[1]
        cp = DynamoDBCheckpointer(
            kit.table,
            **{
                **kit.unreachable_options(),
                "endpoint_url": f"http://127.0.0.1:{port}",
                "read_timeout": 0.3,
            },
        )
        with pytest.raises(BackendUnavailableError, match=r"(?i)timeout") as raised:
            cp.load_state("t")
        assert raised.value.__cause__ is not None


@pytest.mark.timeout(60)
def test_retries_are_bounded_by_max_retries(kit: DynamoDBKit) -> None:
    cp = kit.make_unreachable(namespace="n")
    sent: list[str] = []
    client = cp._table.connection.connection.client
    client.meta.events.register("before-send.dynamodb.*", lambda **_: sent.append("x"))
    with pytest.raises(BackendUnavailableError):
        cp.load_state("t")
    assert len(sent) == 1  # the kit's unreachable checkpointer has max_retries=0

    retrying = DynamoDBCheckpointer(kit.table, **{**kit.unreachable_options(), "max_retries": 1})
    sent.clear()
    client = retrying._table.connection.connection.client
    client.meta.events.register("before-send.dynamodb.*", lambda **_: sent.append("x"))
    with pytest.raises(BackendUnavailableError):
        retrying.load_state("t")
    assert len(sent) == 2


def test_default_limit_leaves_room_for_the_rest_of_the_item(harness: Harness) -> None:
    cp = harness.make()
    assert SINGLE_ITEM_MAX_STATE_BYTES == 350_000  # the default on tables of this format
    longest = "😀" * 256  # 1 KB of UTF-8, part of both the table key and the index key
    state = _state_of_size(350_000)
    cp.save_state(longest, state)
    cp.save_state(longest, state)  # replacing a full item works too
    assert cp.load_state(longest) == state
    with pytest.raises(StateTooLargeError) as raised:
        cp.save_state("over", _state_of_size(350_001))
    assert (raised.value.size, raised.value.limit) == (350_001, 350_000)
    assert cp.load_state("over") is None


def test_item_over_the_limit_is_refused_before_any_request(kit: DynamoDBKit) -> None:
    cp = kit.make(namespace="n" + uuid.uuid4().hex[:8], max_state_bytes=2_000_000)
    assert cp.load_state("t") is None  # the table's format is known from here on
    calls = record_requests(cp)
    with pytest.raises(StateTooLargeError) as raised:
        cp.save_state("t", _state_of_size(420_000))
    assert calls == []
    assert raised.value.size == 420_000
    assert 405_000 < raised.value.limit < 409_600
    cp.close()


def test_item_refused_by_the_service_is_state_too_large(kit: DynamoDBKit, harness: Harness) -> None:
    # moto's item limit (405,000 bytes) is below DynamoDB's (409,600): the library's estimate
    # lets this item through and the service refuses it, as DynamoDB would a few KB later.
    cp = harness.make(max_state_bytes=2_000_000)
    cp.save_state("t", AgentStateSnapshot(scratchpad={"small": True}))
    calls = record_requests(cp)
    with pytest.raises(StateTooLargeError) as raised:
        cp.save_state("t", _state_of_size(406_000))
    assert [op for op, _, _ in calls] == ["PutItem"]
    assert raised.value.__cause__ is not None
    assert "refused" in str(raised.value)
    checkpoint = cp.load_checkpoint("t")
    assert checkpoint.state == AgentStateSnapshot(scratchpad={"small": True})
    assert checkpoint.info.version == 1


def _put_raw(kit: DynamoDBKit, namespace: str, thread_id: str, **attributes: Any) -> None:
    stamp = "2030-01-01T00:00:00.000000+0000"
    item = {
        "pk": {"S": f"{namespace}#{thread_id}"},
        "list_pk": {"S": namespace},
        "list_sk": {"S": f"{stamp}#{thread_id}"},
        "state": {"S": "{}"},
        "version": {"N": "1"},
        "created_at": {"S": stamp},
        "updated_at": {"S": stamp},
        "size": {"N": "2"},
        **attributes,
    }
    kit.client.put_item(TableName=kit.table, Item=item)


@pytest.mark.parametrize(
    "attributes",
    [
        {"state": {"N": "3"}},
        {"version": {"S": "one"}},
        {"updated_at": {"S": "yesterday"}},
        {"size": {"S": "2"}},
        {"expires_at_us": {"S": "soon"}},
    ],
    ids=["state", "version", "updated_at", "size", "expires_at_us"],
)
def test_items_with_wrong_attribute_types_are_corrupt(
    kit: DynamoDBKit, harness: Harness, attributes: dict[str, Any]
) -> None:
    cp = harness.make()
    _put_raw(kit, harness.namespace, "bad", **attributes)
    with pytest.raises(CorruptStateError) as raised:
        cp.load_checkpoint("bad")
    assert raised.value.thread_id == "bad"
    if not {"state", "expires_at_us"} & set(attributes):
        # The index carries neither the state nor, usefully, a mistyped expiry: DynamoDB's
        # filter on expires_at_us just does not match such an item.
        with pytest.raises(CorruptStateError):
            cp.list_threads()


def test_item_without_metadata_is_corrupt_and_never_overwritten(
    kit: DynamoDBKit, harness: Harness
) -> None:
    cp = harness.make()
    kit.client.put_item(
        TableName=kit.table,
        Item={"pk": {"S": f"{harness.namespace}#bare"}, "state": {"S": "{}"}},
    )
    with pytest.raises(CorruptStateError):
        cp.load_state("bare")
    with pytest.raises(CorruptStateError):
        cp.save_state("bare", AgentStateSnapshot())


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"table_name": "x"}, "table name"),
        ({"table_name": "has space"}, "table name"),
        ({"endpoint_url": "localhost:8000"}, "endpoint_url"),
        ({"index_shards": 0}, "index_shards"),
        ({"index_shards": 65}, "index_shards"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"read_timeout": "5"}, "read_timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"aws_secret_access_key": None}, "aws_access_key_id"),
        ({"namespace": "a#b"}, "namespace"),
    ],
)
def test_invalid_settings_are_refused(
    kit: DynamoDBKit, options: dict[str, Any], match: str
) -> None:
    settings: dict[str, Any] = {"table_name": kit.table, **kit.connection(), **options}
    with pytest.raises(ConfigurationError, match=match):
        DynamoDBCheckpointer(**settings)


def test_async_twin_refuses_a_bad_thread_count(kit: DynamoDBKit) -> None:
    with pytest.raises(ConfigurationError, match="max_threads"):
        AsyncDynamoDBCheckpointer(kit.table, max_threads=0, **kit.connection())


def test_secrets_stay_out_of_repr(kit: DynamoDBKit) -> None:
    with DynamoDBCheckpointer(
        kit.table, **{**kit.connection(), "aws_secret_access_key": "s3cr3t-value"}
    ) as cp:
        assert "s3cr3t-value" not in repr(cp)
        assert "s3cr3t-value" not in repr(cp.settings)


def test_url_opens_the_store_with_its_settings(kit: DynamoDBKit) -> None:
    url = (
        f"dynamodb://{kit.table}?region={REGION}&endpoint={kit.endpoint}"
        "&call_timeout=6&connect_timeout=2&read_timeout=3.5&retries=1&index_shards=2"
        "&namespace=from-url&ttl=90"
    )
    with open_checkpointer(url, **CREDENTIALS) as cp:
        assert isinstance(cp, DynamoDBCheckpointer)
        assert (cp.table_name, cp.namespace, cp.index_shards) == (kit.table, "from-url", 2)
        assert cp.ttl is not None
        assert cp.ttl.total_seconds() == 90
        settings = cp.settings
        assert (settings.region, settings.endpoint_url) == (REGION, kit.endpoint)
        assert (settings.connect_timeout, settings.read_timeout, settings.max_retries) == (
            2.0,
            3.5,
            1,
        )
        assert settings.call_timeout == 6.0
        cp.save_state("t", AgentStateSnapshot(scratchpad={"url": True}))
    with open_checkpointer(url, namespace="from-url", **CREDENTIALS) as again:
        assert again.load_state("t") == AgentStateSnapshot(scratchpad={"url": True})


def test_async_url_and_the_standard_credential_chain(
    kit: DynamoDBKit, portal: Portal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-env")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    url = f"dynamodb://{kit.table}?endpoint={kit.endpoint}&namespace=chain"

    async def roundtrip() -> Any:
        cp = open_async_checkpointer(url)
        assert isinstance(cp, AsyncDynamoDBCheckpointer)
        assert cp.settings.aws_access_key_id is None
        try:
            await cp.save_state("t", AgentStateSnapshot(scratchpad={"chain": 1}))
            return await cp.load_state("t")
        finally:
            await cp.close()

    assert portal.call(roundtrip) == AgentStateSnapshot(scratchpad={"chain": 1})


def test_missing_region_is_a_configuration_error(
    kit: DynamoDBKit, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    cp = DynamoDBCheckpointer(kit.table, endpoint_url=kit.endpoint, **CREDENTIALS)
    with cp, pytest.raises(ConfigurationError, match="region"):
        cp.load_state("t")


@pytest.mark.parametrize(
    "url",
    [
        "dynamodb://ab",
        "dynamodb://table?colour=blue",
        "dynamodb://table?retries=many",
        "dynamodb://table?connect_timeout=nan",
        "redis://table",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        DynamoDBCheckpointer.from_url(url)
