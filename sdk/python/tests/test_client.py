"""The synchronous client against the real server."""

import pytest

from techboss import Client, NotFoundError, RunEvent, ValidationError


def seqs(events):
    """The run's events by place. Events without one (presence, when a
    viewer of the sandbox comes or goes) are not part of the run's log: a
    live stream may carry them, a replay does not."""
    return [e.seq for e in events if e.seq is not None]


def test_sandbox_lifecycle(client, sandbox):
    sb = client.sandboxes.create("host", name="lifecycle", labels={"suite": "python-life"})
    assert sb.sandbox_id.startswith("sb_")
    assert sb.status == "running"
    got = client.sandboxes.get(sb.sandbox_id)
    assert got.name == "lifecycle"
    assert got.labels == {"suite": "python-life"}
    assert "files" in got.capabilities
    page = client.sandboxes.list(state="running", label={"suite": "python-life"})
    assert [s.sandbox_id for s in page.sandboxes] == [sb.sandbox_id]
    one_by_one = [s.sandbox_id for s in client.sandboxes.iter(state="running", limit=1)]
    assert len(one_by_one) >= 2
    assert one_by_one == [s.sandbox_id for s in client.sandboxes.list(state="running", limit=100).sandboxes]
    assert sb.sandbox_id in client.sandboxes.logs(sb.sandbox_id)
    ended = client.sandboxes.terminate(sb.sandbox_id)
    assert ended.status == "terminated"
    assert client.sandboxes.get(sb.sandbox_id).status == "terminated"


def test_exec_exit_code(client, sandbox):
    res = client.exec.run(sandbox.sandbox_id, ["sh", "-c", "cat; echo oops >&2; exit 3"], stdin="piped\n")
    assert res.exit_code == 3
    assert res.stdout == "piped\n"
    assert res.stderr == "oops\n"
    assert client.exec.run(sandbox.sandbox_id, ["true"]).exit_code == 0


def test_exec_stream(client, sandbox):
    events = list(
        client.exec.stream(
            sandbox.sandbox_id, ["sh", "-c", "echo out; echo err >&2; printf '\\377'; exit 7"], env={"X": "1"}
        )
    )
    out = b"".join(e.data for e in events if e.type == "stdout")
    err = b"".join(e.data for e in events if e.type == "stderr")
    assert out == b"out\n\xff"
    assert err == b"err\n"
    assert events[-1].type == "exit"
    assert events[-1].exit_code == 7


def test_files(client, sandbox):
    sid = sandbox.sandbox_id
    assert client.files.write(sid, "dir/hello.txt", "hello, files\n") == 13
    client.files.write(sid, "dir/run.sh", b"#!/bin/sh\necho ran\n", mode=0o755)
    assert client.files.read_text(sid, "dir/hello.txt") == "hello, files\n"
    assert client.files.read(sid, "/workspace/dir/hello.txt") == b"hello, files\n"
    entries = {e.name: e for e in client.files.list(sid, "dir")}
    assert sorted(entries) == ["hello.txt", "run.sh"]
    assert entries["hello.txt"].size == 13
    assert entries["run.sh"].mode & 0o777 == 0o755
    assert client.exec.run(sid, ["./dir/run.sh"]).stdout == "ran\n"
    client.files.remove(sid, "dir", recursive=True)
    with pytest.raises(NotFoundError) as e:
        client.files.read(sid, "dir/hello.txt")
    assert e.value.status_code == 404
    assert e.value.code == "not_found"


def test_claude_streamed(client, sandbox, answer):
    stream = client.claude(sandbox.sandbox_id, "say hello", max_turns=3)
    events = list(stream)
    types = [e.type for e in events]
    assert types[0] == "run.started"
    assert "text_delta" in types
    assert "".join(e.text for e in events if e.type == "text_delta") == answer
    assert stream.text == answer
    assert events[-1].type == "done"
    assert stream.result["status"] == "succeeded"
    assert seqs(events) == list(range(1, len(seqs(events)) + 1))
    assert stream.run_id and stream.run_id.startswith("run_")
    run = client.runs.get(stream.run_id)
    assert run.status == "succeeded"
    assert run.last_seq == len(events)
    assert stream.run_id in [r.run_id for r in client.runs.list(sandbox.sandbox_id)]


def test_resume_by_hand(client, sandbox):
    """Read a few events, drop the connection, resume with the last id."""
    stream = client.claude(sandbox.sandbox_id, "say hello again")
    first = []
    for ev in stream:
        first.append(ev)
        if len(seqs(first)) == 3:
            break
    stream.close()
    assert seqs(first) == [1, 2, 3]
    rest = list(client.runs.stream(stream.run_id, after=stream.last_event_id))
    full = list(client.runs.stream(stream.run_id))
    assert seqs(first + rest) == seqs(full)
    assert seqs(full) == list(range(1, len(seqs(full)) + 1))
    assert [(e.type, e.data) for e in first + rest if e.seq is not None] == [(e.type, e.data) for e in full]
    assert full[-1].type == "done"


def test_resume_automatic(sandbox, flaky_url, answer):
    """Through a proxy that cuts every stream after two events, the iterator
    reconnects with Last-Event-ID until done: no event lost or repeated."""
    with Client(flaky_url) as flaky:
        stream = flaky.claude(sandbox.sandbox_id, "say hello through a bad network")
        events = list(stream)
        assert stream.reconnects >= 2
        assert seqs(events) == list(range(1, len(seqs(events)) + 1))
        assert events[-1].type == "done"
        assert stream.text == answer
        replay = flaky.runs.stream(stream.run_id)
        again = list(replay)
        assert replay.reconnects >= 2
        assert [(e.seq, e.type, e.data) for e in again] == [(e.seq, e.type, e.data) for e in events if e.seq is not None]


def test_snapshots(client, sandbox):
    sid = sandbox.sandbox_id
    client.files.write(sid, "notes.txt", "v1\n")
    s1 = client.snapshots.create(sid)
    client.files.write(sid, "notes.txt", "v2\n")
    client.files.write(sid, "added.txt", "new\n")
    s2 = client.snapshots.create(sid)
    listed = [s.snapshot_id for s in client.snapshots.list(sid)]
    assert listed.index(s2.snapshot_id) < listed.index(s1.snapshot_id)
    diff = client.snapshots.diff(s1.snapshot_id, s2.snapshot_id)
    assert "added.txt" in diff.added
    assert "notes.txt" in diff.changed
    restored = client.snapshots.restore(sid, s1.snapshot_id)
    assert restored.snapshot_id == s1.snapshot_id
    assert client.files.read_text(sid, "notes.txt") == "v1\n"
    with pytest.raises(NotFoundError):
        client.files.read(sid, "added.txt")


def test_run_errors(client, sandbox):
    """A bad run option is a 422 naming it, raised when the stream starts."""
    with pytest.raises(ValidationError) as e:
        list(client.claude(sandbox.sandbox_id, "hi", max_turns=-1))
    assert e.value.field_names == ["max_turns"]


def test_errors(client):
    with pytest.raises(ValidationError) as e:
        client.sandboxes.create("host", memory_mb=-1)
    err = e.value
    assert err.status_code == 422
    assert err.code == "invalid"
    assert err.field_names == ["memory_mb"]
    assert err.fields[0].reason
    assert err.request_id
    with pytest.raises(ValidationError) as e:
        client.sandboxes.create("host", no_such_field=1)
    assert e.value.field_names == ["no_such_field"]
    with pytest.raises(NotFoundError):
        client.sandboxes.get("sb_doesnotexist")
    with pytest.raises(NotFoundError):
        list(client.runs.stream("run_doesnotexist"))


def test_sse_parser():
    from techboss._sse import SSEParser

    p = SSEParser()
    lines = [": heartbeat", "", "id: 4", "event: text", 'data: {"text":', 'data: "hi"}', "", "data: x", ""]
    got = [ev for ev in (p.feed(l) for l in lines) if ev]
    assert [(g.event, g.id, g.data) for g in got] == [("text", "4", '{"text":\n"hi"}'), ("message", None, "x")]
    ev = RunEvent.from_sse("text", "4", '{"text": "hi"}', "run_x")
    assert (ev.seq, ev.text) == (4, "hi")
