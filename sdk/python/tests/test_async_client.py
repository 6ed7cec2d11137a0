"""The asyncio client against the real server (plain pytest: each test runs
its own event loop)."""

import asyncio

import pytest

from techboss import AsyncClient, NotFoundError, ValidationError


def seqs(events):
    """Places in the run's log (presence events have none)."""
    return [e.seq for e in events if e.seq is not None]


def run(coro):
    return asyncio.run(coro)


def test_async_flow(answer):
    async def main():
        async with AsyncClient() as tb:
            sb = await tb.sandboxes.create("host", name="pytest-async")
            try:
                sid = sb.sandbox_id
                assert (await tb.sandboxes.get(sid)).status == "running"
                assert sid in [s.sandbox_id async for s in tb.sandboxes.iter(state="running", limit=1)]
                res = await tb.exec.run(sid, ["sh", "-c", "exit 5"])
                assert res.exit_code == 5
                events = [e async for e in tb.exec.stream(sid, ["sh", "-c", "echo hi; exit 2"])]
                assert b"".join(e.data for e in events if e.type == "stdout") == b"hi\n"
                assert events[-1].exit_code == 2

                await tb.files.write(sid, "a/b.txt", "async\n")
                assert await tb.files.read_text(sid, "a/b.txt") == "async\n"
                assert [e.name for e in await tb.files.list(sid, "a")] == ["b.txt"]

                stream = tb.claude(sid, "say hello")
                evs = [e async for e in stream]
                assert "text_delta" in [e.type for e in evs]
                assert stream.text == answer
                assert seqs(evs) == list(range(1, len(seqs(evs)) + 1))
                assert evs[-1].type == "done"

                # Resume by hand: stop after two events, continue from the last id.
                stream = tb.claude(sid, "again")
                first = []
                async for e in stream:
                    first.append(e)
                    if len(seqs(first)) == 2:
                        break
                await stream.aclose()
                rest = [e async for e in tb.runs.stream(stream.run_id, after=stream.last_event_id)]
                full = [e async for e in tb.runs.stream(stream.run_id)]
                assert seqs(first + rest) == seqs(full)
                assert seqs(full) == list(range(1, len(seqs(full)) + 1))

                s1 = await tb.snapshots.create(sid)
                await tb.files.remove(sid, "a", recursive=True)
                s2 = await tb.snapshots.create(sid)
                assert {s1.snapshot_id, s2.snapshot_id} <= {s.snapshot_id for s in await tb.snapshots.list(sid)}
                assert "a/b.txt" in (await tb.snapshots.diff(s1.snapshot_id, s2.snapshot_id)).removed
                await tb.snapshots.restore(sid, s1.snapshot_id)
                assert await tb.files.read_text(sid, "a/b.txt") == "async\n"
            finally:
                await tb.sandboxes.terminate(sb.sandbox_id)

    run(main())


def test_async_resume_automatic(flaky_url, answer):
    async def main():
        async with AsyncClient(flaky_url) as tb:
            sb = await tb.sandboxes.create("host", name="pytest-async-flaky")
            try:
                stream = tb.claude(sb.sandbox_id, "hello over a bad network")
                evs = [e async for e in stream]
                assert stream.reconnects >= 2
                assert seqs(evs) == list(range(1, len(seqs(evs)) + 1))
                assert stream.text == answer
            finally:
                await tb.sandboxes.terminate(sb.sandbox_id)

    run(main())


def test_async_errors():
    async def main():
        async with AsyncClient() as tb:
            with pytest.raises(ValidationError) as e:
                await tb.sandboxes.create("host", cpu=-2)
            assert e.value.field_names == ["cpu"]
            with pytest.raises(NotFoundError):
                await tb.runs.get("run_doesnotexist")

    run(main())
