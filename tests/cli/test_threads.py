"""``threads list|show|delete`` and ``purge-expired`` against every store."""

from __future__ import annotations

import json

from .conftest import Invoke, Target, put_expired, sample_state, seed


def test_list_shows_threads_most_recent_first(cli: Invoke, target: Target) -> None:
    saved = seed(target, 5)
    result = cli("threads", "list", "--json", *target.args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["namespace"] == target.namespace
    assert data["more"] is False
    listed = [thread["thread_id"] for thread in data["threads"]]
    by_update = sorted(saved, key=lambda tid: saved[tid][1].updated_at, reverse=True)
    assert listed == by_update
    first = data["threads"][0]
    info = saved[first["thread_id"]][1]
    assert first["version"] == info.version
    assert first["size"] == info.size
    assert first["updated_at"] == info.updated_at.isoformat()
    assert first["expires_at"] is None


def test_list_pages_with_limit_and_all(cli: Invoke, target: Target) -> None:
    saved = seed(target, 5, versions=1)
    page = json.loads(cli("threads", "list", "--limit", "2", "--json", *target.args).stdout)
    assert len(page["threads"]) == 2
    assert page["more"] is True
    everything = cli("threads", "list", "--limit", "2", "--all", "--json", *target.args)
    listed = [thread["thread_id"] for thread in json.loads(everything.stdout)["threads"]]
    assert sorted(listed) == sorted(saved)
    human = cli("threads", "list", "--limit", "2", *target.args)
    assert human.exit_code == 0
    assert "2 threads" in human.stdout
    assert "more exist" in human.stdout
    assert page["threads"][0]["thread_id"] in human.stdout


def test_list_of_an_empty_namespace(cli: Invoke, target: Target) -> None:
    result = cli("threads", "list", *target.args)
    assert result.exit_code == 0
    assert f"no threads in namespace '{target.namespace}'" in result.stdout


def test_show_prints_state_and_metadata(cli: Invoke, target: Target) -> None:
    saved = seed(target, 2)
    state, info = saved["thread-01"]
    result = cli("threads", "show", "thread-01", "--json", *target.args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["state"] == json.loads(state.model_dump_json())
    assert data["version"] == info.version == 3
    assert data["created_at"] == info.created_at.isoformat()
    assert data["size"] == info.size
    human = cli("threads", "show", "thread-01", *target.args)
    assert human.exit_code == 0
    assert "version    3" in human.stdout
    assert "étape 12 ✓" in human.stdout
    assert f"size       {info.size} bytes" in human.stdout


def test_show_a_missing_thread_exits_1(cli: Invoke, target: Target) -> None:
    result = cli("threads", "show", "nope", *target.args)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"error: thread 'nope' not found in namespace '{target.namespace}'"
    )


def test_delete_with_yes(cli: Invoke, target: Target) -> None:
    seed(target, 2)
    result = cli("threads", "delete", "thread-00", "--yes", *target.args)
    assert result.exit_code == 0, result.output
    assert "deleted thread 'thread-00'" in result.stdout
    with target.open() as checkpointer:
        assert checkpointer.load_state("thread-00") is None
        assert checkpointer.load_state("thread-01") is not None
    again = cli("threads", "delete", "thread-00", "--yes", *target.args)
    assert again.exit_code == 1
    assert "not found" in again.stderr


def test_delete_without_yes_off_a_terminal_refuses(cli: Invoke, target: Target) -> None:
    seed(target, 1)
    result = cli("threads", "delete", "thread-00", *target.args, input="y\n")
    assert result.exit_code == 2
    assert "--yes" in result.stderr
    with target.open() as checkpointer:
        assert checkpointer.load_state("thread-00") is not None


def test_other_namespaces_are_untouched(cli: Invoke, target: Target) -> None:
    seed(target, 1)
    with target.open(namespace=target.namespace + "-other") as other:
        other.save_state("thread-00", sample_state(7))
        try:
            result = cli("threads", "delete", "thread-00", "--yes", *target.args)
            assert result.exit_code == 0
            assert other.load_state("thread-00") == sample_state(7)
        finally:
            other.delete_thread("thread-00")


def test_purge_expired_keeps_live_threads(cli: Invoke, target: Target) -> None:
    seed(target, 2)
    put_expired(target, "old")
    listed = json.loads(cli("threads", "list", "--json", *target.args).stdout)
    assert "old" not in [thread["thread_id"] for thread in listed["threads"]]
    result = cli("purge-expired", "--json", *target.args)
    assert result.exit_code == 0, result.output
    purged = json.loads(result.stdout)["purged"]
    if target.name in ("sqlite", "postgresql", "mariadb"):
        # SQL keeps expired rows until purged; the other stores expire them by themselves.
        assert purged == 1
    with target.open() as checkpointer:
        assert {t.thread_id for t in checkpointer.iter_threads()} == {"thread-00", "thread-01"}
    again = cli("purge-expired", *target.args)
    assert again.exit_code == 0
    assert "purged 0 expired threads" in again.stdout
