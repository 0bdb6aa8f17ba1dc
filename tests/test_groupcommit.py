"""The group-commit writer (store/groupcommit.py) on SQLite and PostgreSQL:
writes of one moment share a transaction, a caller resumes only after its
write committed, one bad write fails only its caller, a database error fails
the whole batch and nothing is written twice, and writes nobody waits for
are durable before any write queued after them."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import Connection, insert, select, text

from hostpower.context import EngineContext
from hostpower.model.errors import ConflictError, StorageUnavailable
from hostpower.store.groupcommit import GroupCommit
from hostpower.store.tables import ConfigRow

_CONFIG = ConfigRow.__table__


def _put(key: str, value: str = "v"):  # type: ignore[no-untyped-def]
    def work(c: Connection) -> str:
        c.execute(insert(_CONFIG).values(key=key, value=value))
        return key
    return work


def _keys(ctx: EngineContext, prefix: str) -> set[str]:
    with ctx.db.engine.connect() as c:
        return {k for (k,) in c.execute(select(_CONFIG.c.key)) if k.startswith(prefix)}


async def _held(writer: GroupCommit) -> tuple[threading.Event, asyncio.Future[None]]:
    """The writer busy with a work that waits for the returned event: works
    queued meanwhile are taken together into the next transaction."""
    release, started = threading.Event(), threading.Event()

    def hold(_c: Connection) -> None:
        started.set()
        release.wait(10)
    future = writer.future(hold)
    await asyncio.to_thread(started.wait, 10)
    return release, future


def test_groupcommit_concurrent_writes_share_transactions_and_all_commit(ctx: EngineContext) -> None:
    writer = GroupCommit(ctx.db)

    async def scenario() -> list[str]:
        release, held = await _held(writer)
        futures = [writer.future(_put(f"gc.many.{n}")) for n in range(40)]
        release.set()
        await held
        return list(await asyncio.gather(*futures))

    try:
        keys = asyncio.run(scenario())
    finally:
        writer.close()
    assert keys == [f"gc.many.{n}" for n in range(40)]
    assert _keys(ctx, "gc.many.") == set(keys)
    assert writer.writes == 41 and writer.batches == 2  # the held work, then the other 40 at once


def test_groupcommit_a_failing_write_fails_its_caller_only(ctx: EngineContext) -> None:
    writer = GroupCommit(ctx.db)

    async def scenario() -> list[object]:
        await writer.run(_put("gc.dup.taken"))
        release, held = await _held(writer)
        futures = [writer.future(_put("gc.dup.a")), writer.future(_put("gc.dup.taken")),
                   writer.future(_put("gc.dup.b"))]
        release.set()
        await held
        return list(await asyncio.gather(*futures, return_exceptions=True))

    try:
        a, duplicate, b = asyncio.run(scenario())
    finally:
        writer.close()
    assert (a, b) == ("gc.dup.a", "gc.dup.b")
    assert isinstance(duplicate, ConflictError)
    assert _keys(ctx, "gc.dup.") == {"gc.dup.taken", "gc.dup.a", "gc.dup.b"}


def test_groupcommit_a_database_error_fails_the_whole_batch_and_writes_nothing(
        ctx: EngineContext) -> None:
    writer = GroupCommit(ctx.db)
    broken = ("SELECT * FROM no_such_table" if ctx.db.engine.dialect.name == "sqlite"
              else "SELECT pg_terminate_backend(pg_backend_pid())")  # the connection dies

    async def scenario() -> list[object]:
        release, held = await _held(writer)
        futures = [writer.future(_put("gc.outage.before")),
                   writer.future(lambda c: c.execute(text(broken))),
                   writer.future(_put("gc.outage.after"))]
        release.set()
        await held
        answers = list(await asyncio.gather(*futures, return_exceptions=True))
        answers.append(await writer.run(_put("gc.outage.later")))  # a new connection
        return answers

    try:
        *batch, later = asyncio.run(scenario())
    finally:
        writer.close()
    assert all(isinstance(answer, StorageUnavailable) for answer in batch), batch
    assert later == "gc.outage.later"
    # Not retried one by one: a commit cut off may have happened.
    assert _keys(ctx, "gc.outage.") == {"gc.outage.later"}
    assert ctx.db.errors >= 1


def test_groupcommit_a_write_nobody_waits_for_is_durable_before_the_next_one_returns(
        ctx: EngineContext) -> None:
    writer = GroupCommit(ctx.db)

    async def scenario() -> None:
        for n in range(20):
            writer.submit(_put(f"gc.fifo.{n}"))
            await writer.run(_put(f"gc.fifo.waited.{n}"))
            assert f"gc.fifo.{n}" in _keys(ctx, "gc.fifo.")

    try:
        asyncio.run(scenario())
    finally:
        writer.close()


def test_groupcommit_close_commits_what_is_queued_and_refuses_more(ctx: EngineContext) -> None:
    writer = GroupCommit(ctx.db)

    async def scenario() -> None:
        release, held = await _held(writer)
        for n in range(5):
            writer.submit(_put(f"gc.close.{n}"))
        release.set()
        await held

    asyncio.run(scenario())
    writer.close()
    assert _keys(ctx, "gc.close.") == {f"gc.close.{n}" for n in range(5)}
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(_put("gc.close.late"))


def test_inline_reads_run_on_sqlite_and_a_failing_one_goes_to_the_reader(
        sqlite_ctx: EngineContext) -> None:
    """Small reads of the engine run on the event loop on SQLite
    (store/inlineread.py); one SQLite refuses there is given to the reader
    thread, which reports it as the database's sessions do."""
    from hostpower.fencing.gateway import EngineGateway
    from hostpower.store import revisions
    from hostpower.store.inlineread import InlineReader, InlineUnavailable

    inline = InlineReader(sqlite_ctx.db)
    try:
        with sqlite_ctx.db.session() as s:
            expected = revisions.current(s)
        assert inline.run(revisions.current) == expected
        with pytest.raises(InlineUnavailable):
            inline.run(lambda c: c.execute(text("SELECT * FROM no_such_table")))
        assert inline.run(revisions.current) == expected  # a new connection
    finally:
        inline.close()

    gateway = EngineGateway(sqlite_ctx)

    async def scenario() -> object:
        try:
            assert await gateway.read(revisions.current) == expected
            return await gateway.read(lambda c: c.execute(text("SELECT * FROM no_such_table")))
        finally:
            await gateway.close()

    with pytest.raises(StorageUnavailable):
        asyncio.run(scenario())
