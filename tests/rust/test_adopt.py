"""Adopting a Rust PostgreSQL table in place while the Rust service keeps writing.

The Rust service is played by its own SQL (conftest: ``RUST_SAVE`` and friends, prepared
server-side as sqlx does), before, during and after the adoption.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from agents_persistence import AgentStateSnapshot, migrations, open_checkpointer
from agents_persistence.cli import app
from agents_persistence.errors import (
    BackendUnavailableError,
    CheckpointerError,
    ConfigurationError,
    ConflictError,
)
from agents_persistence.rust import (
    ADOPTED_REVISION,
    AdoptionRefusedError,
    adopt_rust_table,
    rust_statements,
    verify_rust_writes,
)

from .conftest import (
    LIBPQ_URL,
    POSTGRES_URL,
    RUST_DELETE,
    RUST_LIST,
    RUST_LOAD,
    RUST_SAVE,
    RUST_STATES,
    libpq,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Engine

    from .conftest import PostgresLayout

NAMESPACE = "rust-adopted"


@pytest.fixture
def engine(rust_pg: PostgresLayout) -> Iterator[Engine]:
    made = create_engine(POSTGRES_URL, pool_size=2)
    yield made
    made.dispose()


def _columns(layout: PostgresLayout) -> list[str]:
    rows = layout.conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s"
        " ORDER BY column_name",
        (layout.table,),
    ).fetchall()
    return [row[0] for row in rows]


def _open(layout: PostgresLayout, **options: Any) -> Any:
    return open_checkpointer(
        POSTGRES_URL,
        namespace=options.pop("namespace", NAMESPACE),
        table_name=layout.table,
        **options,
    )


def test_library_statements_match_the_rust_source() -> None:
    def plain(sql: str) -> str:
        return " ".join(sql.replace("$1", ":thread_id").replace("$2", ":state").split())

    ours = rust_statements("t")
    assert plain(RUST_SAVE.format(table="t")) == plain(ours["save"])
    assert plain(RUST_LOAD.format(table="t")) == plain(ours["load"])
    assert plain(RUST_DELETE.format(table="t")) == plain(ours["delete"])
    assert plain(RUST_LIST.format(table="t")) == plain(ours["list"])


def test_rust_service_writes_before_during_and_after_adoption(
    rust_pg: PostgresLayout, engine: Engine
) -> None:
    for thread_id, state in RUST_STATES.items():
        rust_pg.write(thread_id, state)
    rust_pg.write("x" * 200, RUST_STATES["plain"])

    # The Rust service, on its own connection with prepared statements, writes all along.
    stop = threading.Event()
    spans: list[tuple[float, float]] = []
    errors: list[BaseException] = []
    last: dict[str, dict[str, Any]] = {}

    def rust_service() -> None:
        with psycopg.connect(LIBPQ_URL, autocommit=True, prepare_threshold=0) as conn:
            save = libpq(RUST_SAVE.format(table=rust_pg.table))
            n = 0
            while not stop.is_set():
                thread_id = f"live-{n % 4}"
                state = {"todos": [], "files": {}, "scratchpad": {"n": n}}
                began = time.monotonic()
                try:
                    conn.execute(
                        save, {"thread_id": thread_id, "state": psycopg.types.json.Jsonb(state)}
                    )
                except BaseException as exc:
                    errors.append(exc)
                    return
                spans.append((began, time.monotonic()))
                last[thread_id] = state
                n += 1

    writer = threading.Thread(target=rust_service)
    writer.start()
    while len(spans) < 20:
        time.sleep(0.005)
    adoption_began = time.monotonic()
    report = adopt_rust_table(engine, table_name=rust_pg.table, namespace=NAMESPACE)
    adoption_ended = time.monotonic()
    after = len(spans)
    while len(spans) < after + 20 and not errors:
        time.sleep(0.005)
    stop.set()
    writer.join()

    assert errors == []
    # Some Rust write waited on the adoption and went through after it.
    assert any(began < adoption_ended and ended > adoption_began for began, ended in spans)
    assert report.namespace == NAMESPACE
    assert report.revision == migrations.head_revision()
    assert migrations.current(engine, table_name=rust_pg.table) == migrations.head_revision()
    migrations.check(engine, table_name=rust_pg.table)  # no drift from the model

    with _open(rust_pg) as cp:
        for thread_id, state in RUST_STATES.items():
            assert cp.load_state(thread_id) == AgentStateSnapshot.model_validate_json(state)
        for thread_id, state in last.items():
            assert cp.load_state(thread_id) == AgentStateSnapshot.model_validate(state)
        listed = {thread.thread_id for thread in cp.iter_threads(page_size=3)}
        assert listed == {*RUST_STATES, "x" * 200, *last}

    # The Rust service restarts: its ensure_table() runs again, then it keeps working.
    rust_pg.ensure_table()
    rust_pg.write("after-restart", RUST_STATES["interrupted"])
    assert rust_pg.load("after-restart") == json.loads(RUST_STATES["interrupted"])


def test_every_rust_write_moves_the_version_so_no_update_is_lost(
    rust_pg: PostgresLayout, engine: Engine
) -> None:
    rust_pg.write("t", RUST_STATES["plain"])
    adopt_rust_table(engine, table_name=rust_pg.table, namespace=NAMESPACE)
    with _open(rust_pg) as cp:
        seen = cp.load_checkpoint("t")
        assert seen.info.version == 1
        for n in range(3):
            rust_pg.save("t", {"todos": [], "files": {}, "scratchpad": {"rust": n}})
        rust_write = cp.load_checkpoint("t")
        assert rust_write.info.version == 4
        assert rust_write.state.scratchpad == {"rust": 2}
        assert rust_write.info.size > 0
        assert rust_write.info.updated_at > seen.info.updated_at

        # A library writer that read version 1 cannot overwrite the Rust writes.
        with pytest.raises(ConflictError) as caught:
            cp.save_state("t", AgentStateSnapshot(files={"stale": "read"}), expected_version=1)
        assert caught.value.actual == 4
        assert cp.load_state("t").scratchpad == {"rust": 2}

        # The library's own writes count as usual, and the Rust service reads them.
        info = cp.save_state("t", AgentStateSnapshot(files={"py": "x"}), expected_version=4)
        assert info.version == 5
        assert rust_pg.load("t")["files"] == {"py": "x"}
        # A new Rust thread starts at version 1 in the adopted namespace.
        rust_pg.save("new", {"todos": [], "files": {}, "scratchpad": {}})
        assert cp.load_checkpoint("new").info.version == 1


def test_rust_write_keeps_the_library_expiry_rules(rust_pg: PostgresLayout, engine: Engine) -> None:
    rust_pg.write("t", RUST_STATES["plain"])
    adopt_rust_table(engine, table_name=rust_pg.table, namespace=NAMESPACE)
    with _open(rust_pg, ttl=3600) as cp:
        info = cp.save_state("t", AgentStateSnapshot(files={"ttl": "on"}))
        assert info.expires_at is not None
        # A Rust write makes the thread permanent, as the Rust table has no TTL.
        rust_pg.save("t", {"todos": [], "files": {"rust": "wrote"}, "scratchpad": {}})
        after = cp.load_checkpoint("t")
        assert (after.info.version, after.info.expires_at) == (info.version + 1, None)

    # A library save over an expired row restarts it at version 1 with its TTL, untouched by
    # the trigger (the case where the version does not move).
    with _open(rust_pg, ttl=1) as short:
        short.save_state("e", AgentStateSnapshot())
    later = datetime.now(UTC) + timedelta(seconds=5)
    with _open(rust_pg, ttl=60, clock=lambda: later) as cp:
        assert cp.load_checkpoint("e") is None
        fresh = cp.save_state("e", AgentStateSnapshot(files={"new": "life"}))
        assert fresh.version == 1
        assert fresh.expires_at == later + timedelta(seconds=60)
        assert cp.load_checkpoint("e").info.expires_at == later + timedelta(seconds=60)


def test_other_namespaces_are_refused_on_an_adopted_table(
    rust_pg: PostgresLayout, engine: Engine
) -> None:
    rust_pg.write("t", RUST_STATES["plain"])
    adopt_rust_table(engine, table_name=rust_pg.table, namespace=NAMESPACE)
    with _open(rust_pg, namespace="elsewhere") as other:
        with pytest.raises(CheckpointerError, match="rust_namespace"):
            other.save_state("u", AgentStateSnapshot())
        assert other.load_state("t") is None  # namespaces stay apart for reads
    count = rust_pg.conn.execute(f"SELECT count(*) FROM {rust_pg.table}").fetchone()
    assert count == (1,)


def test_refusals_change_nothing(rust_pg: PostgresLayout, engine: Engine) -> None:
    rust_pg.write("t", RUST_STATES["plain"])
    rust_pg.write("bad\x01id", RUST_STATES["plain"])
    before = _columns(rust_pg)
    with pytest.raises(AdoptionRefusedError, match="thread ids"):
        adopt_rust_table(engine, table_name=rust_pg.table)
    assert _columns(rust_pg) == before
    assert migrations.current(engine, table_name=rust_pg.table) is None

    rust_pg.conn.execute(f"DELETE FROM {rust_pg.table} WHERE thread_id = 'bad\x01id'")
    # A Rust transaction holds the table: the adoption gives up in time, changing nothing.
    with psycopg.connect(LIBPQ_URL) as holder:
        holder.execute(f"LOCK TABLE {rust_pg.table} IN ROW EXCLUSIVE MODE")
        with pytest.raises(BackendUnavailableError, match="lock"):
            adopt_rust_table(engine, table_name=rust_pg.table, lock_timeout=0.2)
        holder.rollback()
    assert _columns(rust_pg) == before

    adopt_rust_table(engine, table_name=rust_pg.table)
    with pytest.raises(AdoptionRefusedError, match="already under"):
        adopt_rust_table(engine, table_name=rust_pg.table)
    with pytest.raises(AdoptionRefusedError, match="no such table"):
        adopt_rust_table(engine, table_name=rust_pg.table + "_missing")
    with pytest.raises(ConfigurationError, match="PostgreSQL only"):
        adopt_rust_table("sqlite://", table_name=rust_pg.table)


def test_a_table_that_would_refuse_rust_writes_is_not_adopted(
    rust_pg: PostgresLayout, engine: Engine
) -> None:
    # A constraint of the team's own that the adoption's probe of the Rust statements trips:
    # the adoption must see that the Rust service could not write, and roll everything back.
    rust_pg.conn.execute(
        f"ALTER TABLE {rust_pg.table} ADD CONSTRAINT no_probe"
        " CHECK (thread_id NOT LIKE 'agents-persistence-adoption-probe-%')"
    )
    rust_pg.write("t", RUST_STATES["plain"])
    before = _columns(rust_pg)
    with pytest.raises(AdoptionRefusedError, match="Rust service"):
        adopt_rust_table(engine, table_name=rust_pg.table)
    assert _columns(rust_pg) == before
    assert migrations.current(engine, table_name=rust_pg.table) is None
    rust_pg.write("t", RUST_STATES["interrupted"])  # the Rust service never noticed


def _later_objects(engine: Engine, table: str) -> tuple[bool, int]:
    """Whether the interrupts index exists, and how many LangGraph tables: later revisions."""
    with engine.connect() as conn:
        index = conn.execute(
            text("SELECT count(*) FROM pg_indexes WHERE indexname = :name"),
            {"name": f"ix_{table}_interrupts"},
        ).scalar_one()
        tables = conn.execute(
            text("SELECT count(*) FROM pg_tables WHERE tablename LIKE :pattern"),
            {"pattern": table + "\\_lg\\_%"},
        ).scalar_one()
    return bool(index), int(tables)


def test_adoption_is_the_stamped_revision_plus_the_normal_upgrade(
    rust_pg: PostgresLayout, engine: Engine
) -> None:
    rust_pg.write("t", RUST_STATES["plain"])
    adopt_rust_table(engine, table_name=rust_pg.table)
    assert _later_objects(engine, rust_pg.table) == (True, 4)
    # The table sits in the library's history like any other: down to the stamped revision
    # undoes only what came after it, and the normal upgrade brings it back.
    migrations.downgrade(engine, ADOPTED_REVISION, table_name=rust_pg.table)
    assert _later_objects(engine, rust_pg.table) == (False, 0)
    rust_pg.save("t", {"todos": [], "files": {"at": "stamped revision"}, "scratchpad": {}})
    migrations.upgrade(engine, table_name=rust_pg.table)
    assert _later_objects(engine, rust_pg.table) == (True, 4)
    rust_pg.save("t", {"todos": [], "files": {"at": "head"}, "scratchpad": {}})
    with _open(rust_pg, namespace="default") as cp:
        checkpoint = cp.load_checkpoint("t")
    assert checkpoint.state.files == {"at": "head"}
    assert checkpoint.info.version == 3


def test_cli_adopt_rust(rust_pg: PostgresLayout) -> None:
    rust_pg.write("t", RUST_STATES["interrupted"])
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["db", "adopt-rust", "--url", POSTGRES_URL, "--table", rust_pg.table, "--namespace", "svc"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "1 threads now in namespace 'svc'" in result.stdout
    check = runner.invoke(
        app, ["db", "check", "--url", POSTGRES_URL, "--table-name", rust_pg.table]
    )
    assert check.exit_code == 0, check.output
    again = runner.invoke(
        app, ["db", "adopt-rust", "--url", POSTGRES_URL, "--table", rust_pg.table]
    )
    assert again.exit_code == 1
    assert "already under" in again.stderr
    wrong = runner.invoke(app, ["db", "adopt-rust", "--url", "redis://localhost/0"])
    assert wrong.exit_code == 2


def test_verify_catches_a_change_that_breaks_rust_writes(
    rust_pg: PostgresLayout, engine: Engine
) -> None:
    rust_pg.write("t", RUST_STATES["plain"])
    adopt_rust_table(engine, table_name=rust_pg.table)
    verify_rust_writes(engine, table_name=rust_pg.table)
    runner = CliRunner()
    args = ["db", "adopt-rust", "--verify", "--url", POSTGRES_URL, "--table", rust_pg.table]
    assert runner.invoke(app, args).exit_code == 0
    # What a later schema change could do: the unique index ON CONFLICT (thread_id) needs.
    rust_pg.conn.execute(f'DROP INDEX "uq_{rust_pg.table}_rust_thread_id"')
    with pytest.raises(AdoptionRefusedError, match="Rust service's own statements fail"):
        verify_rust_writes(engine, table_name=rust_pg.table)
    failed = runner.invoke(app, args)
    assert failed.exit_code == 1
    assert "ON CONFLICT" in failed.stderr
    assert rust_pg.load("t") is not None  # verifying wrote nothing
    assert rust_pg.conn.execute(f"SELECT count(*) FROM {rust_pg.table}").fetchone() == (1,)


def test_a_table_where_rust_cannot_read_library_writes_is_not_adopted(
    rust_pg: PostgresLayout, engine: Engine
) -> None:
    # Stands in for a storage format that keeps part of a state outside the state column: a
    # trigger of the team's own drops "files" from rows that carry a transcript (only the
    # library writes one). The adoption's probe must notice that the Rust load loses them.
    rust_pg.conn.execute(
        f"""CREATE FUNCTION {rust_pg.table}_strip() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.state ? 'messages' THEN NEW.state := NEW.state - 'files'; END IF;
            RETURN NEW;
        END $$"""
    )
    rust_pg.conn.execute(
        f"CREATE TRIGGER zz_strip BEFORE INSERT OR UPDATE ON {rust_pg.table}"
        f" FOR EACH ROW EXECUTE FUNCTION {rust_pg.table}_strip()"
    )
    rust_pg.write("t", RUST_STATES["plain"])
    before = _columns(rust_pg)
    try:
        with pytest.raises(AdoptionRefusedError, match="Rust service loads it"):
            adopt_rust_table(engine, table_name=rust_pg.table)
        assert _columns(rust_pg) == before
        assert migrations.current(engine, table_name=rust_pg.table) is None
    finally:
        rust_pg.conn.execute(f"DROP FUNCTION {rust_pg.table}_strip() CASCADE")


def test_library_saves_on_an_adopted_table_stay_whole_for_the_rust_service(
    rust_pg: PostgresLayout, engine: Engine
) -> None:
    from agents_persistence import AgentMessage

    rust_pg.write("t", RUST_STATES["plain"])
    adopt_rust_table(engine, table_name=rust_pg.table, namespace=NAMESPACE)
    # Large enough to be split into pieces on a table of the library's own.
    state = AgentStateSnapshot(
        files={"large.txt": "x" * 40_000},
        messages=[AgentMessage.text("User", f"m{n}") for n in range(3)],
    )
    with _open(rust_pg) as cp:
        for turn in range(3):  # a first save, then saves the store could make deltas
            state = state.model_copy(update={"scratchpad": {"turn": turn}})
            cp.save_state("t", state)
            assert rust_pg.load("t") == state.model_dump(mode="json", exclude_defaults=False)
            assert cp.load_state("t") == state
    with engine.connect() as conn:
        pieces = conn.execute(text(f"SELECT count(*) FROM {rust_pg.table}_pieces")).scalar_one()
        manifests = conn.execute(
            text(f"SELECT count(*) FROM {rust_pg.table} WHERE manifest IS NOT NULL")
        ).scalar_one()
    assert (pieces, manifests) == (0, 0)


def test_a_checkpointer_with_keys_is_refused_on_an_adopted_table(
    rust_pg: PostgresLayout, engine: Engine
) -> None:
    from sqlalchemy.orm import Session

    from agents_persistence import SQLCheckpointer

    from ..kits.encrypted import keyring

    rust_pg.write("t", RUST_STATES["plain"])
    adopt_rust_table(engine, table_name=rust_pg.table, namespace=NAMESPACE)
    with _open(rust_pg, keys=keyring()) as cp:
        for call in (lambda: cp.save_state("t", AgentStateSnapshot()), lambda: cp.load_state("t")):
            with pytest.raises(ConfigurationError, match="Rust service") as caught:
                call()
            assert "without keys" in str(caught.value)
    keyed = SQLCheckpointer(engine, table_name=rust_pg.table, namespace=NAMESPACE, keys=keyring())
    with Session(engine) as session, pytest.raises(ConfigurationError, match="Rust service"):
        keyed.using(session).save_state("t", AgentStateSnapshot())
    assert rust_pg.load("t") == json.loads(RUST_STATES["plain"])
    with _open(rust_pg) as plain:  # without keys the table serves as before
        assert plain.load_state("t") is not None
