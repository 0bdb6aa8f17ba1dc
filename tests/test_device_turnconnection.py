"""The engine's own connection for device turns on PostgreSQL
(store/turnconnection.py): the same rules as the session-per-statement
claims (store/deviceturns.py), seen by both, and a broken connection made
again."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from sqlalchemy import text

from hostpower.model.errors import StorageUnavailable
from hostpower.store.db import Database
from hostpower.store.deviceturns import DeviceTurns
from hostpower.store.turnconnection import TurnConnection

DEVICE = "10.9.0.1:161"


@pytest.fixture
def db(pg_url: str):  # type: ignore[no-untyped-def]
    database = Database(pg_url)
    database.upgrade()
    yield database
    database.dispose()


def test_device_turnconnection_claims_are_the_same_rows_as_the_sessions(db: Database) -> None:
    async def main() -> None:
        turns = TurnConnection.for_engine(db.engine)
        try:
            claimed, state = await turns.claim(DEVICE, "engine e1: off of h1", "t1", 30.0)
            assert claimed is not None and state is None          # no row before
            with db.session() as s:                               # another engine sees it at once
                seen = DeviceTurns(s).state(DEVICE)
                assert seen is not None and seen.held and seen.holder == "engine e1: off of h1"
                assert 29.0 < seen.free_in <= 30.0
                assert DeviceTurns(s).claim(DEVICE, "engine e2", "t2", 30.0) is None
            refused, state = await turns.claim(DEVICE, "engine e1: status of h2", "t3", 30.0)
            assert refused is None                                # held, even by this engine
            assert state is not None and state.held and state.holder == "engine e1: off of h1"
            assert await turns.release(DEVICE, "t3", 0.0) is None  # not the holder's token
            ended = await turns.release(DEVICE, "t1", 5.0)
            assert ended is not None and ended >= claimed
            refused, state = await turns.claim(DEVICE, "engine e1: on of h1", "t4", 30.0)
            assert refused is None and state is not None          # released, not yet spaced
            assert not state.held and 4.0 < state.free_in <= 5.0
            with db.session() as s:                               # the spacing passed: free
                s.execute(text("UPDATE device_turns SET free_at = now()"))
            claimed, _ = await turns.claim(DEVICE, "engine e1: on of h1", "t4", 30.0)
            assert claimed is not None
        finally:
            await turns.close()
    asyncio.run(main())


def test_device_turnconnection_commits_without_waiting_for_the_disk(db: Database) -> None:
    async def main() -> str:
        turns = TurnConnection.for_engine(db.engine)
        try:
            row = await turns._run("SHOW synchronous_commit", {})
            assert row is not None
            return str(row[0])
        finally:
            await turns.close()
    assert asyncio.run(main()) == "off"


def test_device_turnconnection_a_broken_connection_is_made_again(db: Database,
                                                                pg_url: str) -> None:
    async def main() -> None:
        turns = TurnConnection.for_engine(db.engine)
        try:
            pid_row = await turns._run("SELECT pg_backend_pid()", {})
            assert pid_row is not None
            dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid_row[0],))
            with pytest.raises(StorageUnavailable):
                await turns.claim(DEVICE, "engine e1: off of h1", "t1", 30.0)
            claimed, _ = await turns.claim(DEVICE, "engine e1: off of h1", "t1", 30.0)
            assert claimed is not None
        finally:
            await turns.close()
    asyncio.run(main())


def test_device_turnconnection_closed_is_made_again_at_the_next_statement(db: Database) -> None:
    async def main() -> None:
        turns = TurnConnection.for_engine(db.engine)
        await turns.close()                       # never used: nothing to close
        assert (await turns.claim(DEVICE, "engine e1: off of h1", "t1", 30.0))[0] is not None
        await turns.close()
        assert await turns.release(DEVICE, "t1", 0.0) is not None
        await turns.close()
    asyncio.run(main())
