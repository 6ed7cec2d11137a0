"""The synchronous client."""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import httpx

from . import _base as b
from ._errors import APIError, StreamError, error_from_body
from ._models import (
    ExecEvent,
    ExecResult,
    FileEntry,
    Restored,
    Run,
    RunEvent,
    Sandbox,
    SandboxPage,
    Snapshot,
    SnapshotDiff,
)
from ._sse import SSE, SSEParser


class Client:
    """A client of the TechBoss AI API.

    ``base_url`` defaults to ``$TECHBOSS_URL`` (else http://localhost:8080),
    ``token`` to ``$TECHBOSS_TOKEN``. Use it as a context manager, or call
    ``close()``. Streams reconnect by themselves with ``Last-Event-ID`` up to
    ``max_reconnects`` times in a row without progress.
    """

    def __init__(
        self,
        base_url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        timeout: Union[float, httpx.Timeout, None] = None,
        max_reconnects: int = 10,
        http_client: Optional[httpx.Client] = None,
    ) -> None:
        s = b.settings(base_url, token)
        self.base_url: str = s["base_url"]
        self.max_reconnects = max_reconnects
        self._http = http_client or httpx.Client(
            base_url=s["base_url"], headers=s["headers"], timeout=timeout or b.DEFAULT_TIMEOUT
        )
        if http_client is not None:
            self._http.headers.update(s["headers"])
        self.sandboxes = Sandboxes(self)
        self.exec = Exec(self)
        self.files = Files(self)
        self.runs = Runs(self)
        self.snapshots = Snapshots(self)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def claude(self, sandbox_id: str, prompt: str, **options: Any) -> "RunStream":
        """Starts a Claude Code run in the sandbox and returns its event stream.

        ``options`` are the run's other fields (``model``, ``max_turns``,
        ``permission_mode``, ``system_prompt``, ``new_session``, ``env``, ...).
        Iterate the stream for ``RunEvent`` objects up to the ``done`` event;
        ``stream.run_id`` names the run once the first answer arrived. A
        dropped connection is resumed from the last event seen.
        """
        body = dict(options)
        body["prompt"] = prompt

        def start() -> httpx.Response:
            return self._open_stream(
                "POST", "/sandbox/%s/claude" % b.seg(sandbox_id), params={"format": "events"}, json=body
            )

        return RunStream(self, None, start=start)

    # -- plumbing ---------------------------------------------------------

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """Sends a request and raises APIError for an error answer."""
        res = self._http.request(method, path, **kw)
        if res.status_code >= 400:
            b.raise_for(res, res.content)
        return res

    def _data(self, method: str, path: str, **kw: Any) -> Any:
        return b.data_of(self.request(method, path, **kw))

    def _open_stream(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", None) or {})
        headers.setdefault("Accept", "text/event-stream")
        req = self._http.build_request(method, path, headers=headers, timeout=b.STREAM_TIMEOUT, **kw)
        res = self._http.send(req, stream=True)
        if res.status_code >= 400:
            try:
                body = res.read()
            finally:
                res.close()
            b.raise_for(res, body)
        return res


def _events(res: httpx.Response) -> Iterator[SSE]:
    p = SSEParser()
    for line in res.iter_lines():
        ev = p.feed(line)
        if ev is not None:
            yield ev


class RunStream:
    """The events of one run, from the start (or after ``after``) to ``done``.

    Iterating it yields ``RunEvent``; when the connection drops, or the
    server announces a restart, it reconnects to ``GET /runs/{id}/events``
    with ``Last-Event-ID`` set to the last event it yielded, so no event is
    lost or seen twice. ``last_event_id`` is that id; ``text`` collects the
    assistant's text seen so far.
    """

    def __init__(
        self,
        client: Client,
        run_id: Optional[str],
        *,
        after: Optional[int] = None,
        start: Optional[Callable[[], httpx.Response]] = None,
    ) -> None:
        self._client = client
        self.run_id = run_id
        self.last_event_id = after
        self.reconnects = 0
        self._start = start
        self._res: Optional[httpx.Response] = None
        self._texts: List[str] = []
        self._done: Optional[RunEvent] = None

    @property
    def text(self) -> str:
        """The assistant's text so far (its ``text`` events, joined)."""
        return "\n".join(self._texts)

    @property
    def result(self) -> Optional[Dict[str, Any]]:
        """The ``done`` event's data (``status``, ``exit_code``) once seen."""
        return self._done.data if self._done else None

    def _open(self) -> httpx.Response:
        if self._start is not None:
            start, self._start = self._start, None
            res = start()
            self.run_id = res.headers.get("X-Run-ID") or self.run_id
            return res
        if not self.run_id:
            raise StreamError("the run's id is unknown: the stream cannot be resumed")
        return self._client._open_stream(
            "GET", "/runs/%s/events" % b.seg(self.run_id), headers=b.last_id_headers(self.last_event_id)
        )

    def __iter__(self) -> Iterator[RunEvent]:
        failures = 0
        first = True
        while True:
            err: Optional[BaseException] = None
            try:
                res = self._res = self._open()
                if not first:
                    self.reconnects += 1
                first = False
                try:
                    for sse in _events(res):
                        if sse.event == "restarting":
                            break  # the server stops: resume on another start
                        if sse.event == "error" and sse.id is None:
                            body = json.loads(sse.data or "{}")
                            raise error_from_body(0, body)
                        ev = RunEvent.from_sse(sse.event, sse.id, sse.data, self.run_id or "")
                        if ev.seq is not None:
                            if self.last_event_id is not None and ev.seq <= self.last_event_id:
                                raise StreamError(
                                    "run %s: event %d came again after %d" % (self.run_id, ev.seq, self.last_event_id)
                                )
                            self.last_event_id = ev.seq
                        failures = 0
                        if ev.type == "text":
                            self._texts.append(ev.text)
                        if ev.type == "done":
                            self._done = ev
                        yield ev
                        if ev.type == "done":
                            return
                finally:
                    res.close()
                    self._res = None
            except (httpx.TransportError, httpx.StreamError) as e:
                if self.run_id is None:
                    raise
                err = e
            except APIError as e:
                if first or e.status_code not in b.RETRY_STATUS:
                    raise
                err = e
            failures += 1
            if failures > self._client.max_reconnects:
                raise StreamError(
                    "run %s: the stream broke %d times after event %s" % (self.run_id, failures, self.last_event_id)
                ) from err
            time.sleep(b.backoff(failures))

    def until_done(self) -> "RunStream":
        """Reads the stream to its end (text and result are then complete)."""
        for _ in self:
            pass
        return self

    def close(self) -> None:
        """Stops reading (the run itself goes on; ``runs.cancel`` stops it)."""
        if self._res is not None:
            self._res.close()

    def __enter__(self) -> "RunStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Sandboxes:
    """``client.sandboxes``: create, list, get, terminate, logs."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def create(self, image_base: str = "host", **spec: Any) -> Sandbox:
        """Creates a sandbox and returns it once it runs. ``spec``: ``name``,
        ``labels``, ``env``, ``cpu``, ``memory_mb``, ``network``,
        ``idle_timeout_s``, ``from_snapshot``, ``volume_name``, ..."""
        body = dict(spec)
        body["image_base"] = image_base
        created = self._c._data("POST", "/sandbox", json=body)
        return Sandbox.from_dict(created)

    def list(
        self,
        *,
        state: Optional[str] = None,
        label: Optional[Mapping[str, str]] = None,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
    ) -> SandboxPage:
        """One page of your sandboxes, newest first."""
        d = self._c._data("GET", "/sandbox", params=b.list_params(state, label, limit, cursor))
        return SandboxPage(
            sandboxes=[Sandbox.from_dict(s) for s in d.get("sandboxes") or []],
            next_cursor=d.get("next_cursor") or None,
        )

    def iter(
        self,
        *,
        state: Optional[str] = None,
        label: Optional[Mapping[str, str]] = None,
        limit: Optional[int] = None,
    ) -> Iterator[Sandbox]:
        """Every sandbox, page after page (``limit``: the page size)."""
        cursor: Optional[str] = None
        while True:
            page = self.list(state=state, label=label, limit=limit, cursor=cursor)
            yield from page.sandboxes
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def get(self, sandbox_id: str) -> Sandbox:
        return Sandbox.from_dict(self._c._data("GET", "/sandbox/%s" % b.seg(sandbox_id)))

    def terminate(self, sandbox_id: str) -> Sandbox:
        """Terminates the sandbox (idempotent); the record stays."""
        return Sandbox.from_dict(self._c._data("DELETE", "/sandbox/%s" % b.seg(sandbox_id)))

    def logs(self, sandbox_id: str) -> str:
        """The sandbox's build and start log."""
        return self._c.request("GET", "/sandbox/%s/logs" % b.seg(sandbox_id)).text


class Exec:
    """``client.exec``: run a command and wait, or stream its output."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def run(
        self,
        sandbox_id: str,
        command: Sequence[str],
        *,
        env: Optional[Mapping[str, str]] = None,
        workdir: Optional[str] = None,
        timeout_s: Optional[float] = None,
        stdin: Union[str, bytes, None] = None,
    ) -> ExecResult:
        """Runs ``command`` (an argv) and returns once it exits. A non-zero
        exit is not an exception: read ``exit_code``."""
        body = b.exec_body(command, env, workdir, timeout_s, stdin)
        d = self._c._data("POST", "/sandbox/%s/exec" % b.seg(sandbox_id), params={"wait": "true"}, json=body)
        return ExecResult.from_dict(d)

    def stream(
        self,
        sandbox_id: str,
        command: Sequence[str],
        *,
        env: Optional[Mapping[str, str]] = None,
        workdir: Optional[str] = None,
        timeout_s: Optional[float] = None,
        stdin: Union[str, bytes, None] = None,
    ) -> Iterator[ExecEvent]:
        """Runs ``command`` and yields ``stdout``/``stderr`` events as the
        output comes, then one ``exit`` event with ``exit_code``."""
        body = b.exec_body(command, env, workdir, timeout_s, stdin)
        res = self._c._open_stream("POST", "/sandbox/%s/exec" % b.seg(sandbox_id), json=body)
        try:
            for sse in _events(res):
                payload = json.loads(sse.data) if sse.data else {}
                if sse.event == "error":
                    raise error_from_body(0, {"error": payload})
                if sse.event in ("stdout", "stderr", "exit"):
                    yield ExecEvent.from_sse(sse.event, payload)
                    if sse.event == "exit":
                        return
        finally:
            res.close()
        raise StreamError("exec stream ended without an exit event")


class Files:
    """``client.files``: paths are relative to /workspace, or absolute."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def read(self, sandbox_id: str, path: str) -> bytes:
        return self._c.request("GET", b.files_path(sandbox_id, path)).content

    def read_text(self, sandbox_id: str, path: str, encoding: str = "utf-8") -> str:
        return self.read(sandbox_id, path).decode(encoding)

    def write(self, sandbox_id: str, path: str, content: Union[str, bytes], *, mode: Optional[int] = None) -> int:
        """Writes a file (parents are made) and returns its size. ``mode``: e.g. 0o755."""
        if isinstance(content, str):
            content = content.encode("utf-8")
        params = {"mode": "%o" % mode} if mode is not None else None
        d = self._c._data(
            "PUT",
            b.files_path(sandbox_id, path),
            params=params,
            content=content,
            headers={"Content-Type": "application/octet-stream"},
        )
        return int(d.get("size", len(content)))

    def list(self, sandbox_id: str, path: str = ".") -> List[FileEntry]:
        d = self._c._data("GET", "/sandbox/%s/files" % b.seg(sandbox_id), params={"dir": path})
        return [FileEntry.from_dict(e) for e in d.get("entries") or []]

    def remove(self, sandbox_id: str, path: str, *, recursive: bool = False) -> None:
        params = {"recursive": "true"} if recursive else None
        self._c.request("DELETE", b.files_path(sandbox_id, path), params=params)


class Runs:
    """``client.runs``: list, get, follow and cancel Claude Code runs."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def list(self, sandbox_id: str) -> List[Run]:
        """The sandbox's runs, newest first."""
        return [Run.from_dict(r) for r in self._c._data("GET", "/sandbox/%s/runs" % b.seg(sandbox_id)) or []]

    def get(self, run_id: str) -> Run:
        return Run.from_dict(self._c._data("GET", "/runs/%s" % b.seg(run_id)))

    def stream(self, run_id: str, *, after: Optional[int] = None) -> RunStream:
        """The run's events after ``after`` (from the start when None),
        replayed and then followed live until ``done``."""
        return RunStream(self._c, run_id, after=after)

    def cancel(self, run_id: str) -> Run:
        return Run.from_dict(self._c._data("POST", "/runs/%s/cancel" % b.seg(run_id)))

    def answer_permission(
        self,
        run_id: str,
        request_id: str,
        behavior: str,
        *,
        message: Optional[str] = None,
        updated_input: Optional[Dict[str, Any]] = None,
        remember: Optional[str] = None,
    ) -> Any:
        """Answers a ``permission_request`` event: ``behavior`` is ``allow`` or ``deny``."""
        body = b.drop_none(
            {"behavior": behavior, "message": message, "updated_input": updated_input, "remember": remember}
        )
        return self._c._data("POST", "/runs/%s/permissions/%s" % (b.seg(run_id), b.seg(request_id)), json=body)


class Snapshots:
    """``client.snapshots``: versions of a sandbox's /workspace."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def create(self, sandbox_id: str) -> Snapshot:
        return Snapshot.from_dict(self._c._data("POST", "/sandbox/%s/snapshots" % b.seg(sandbox_id)))

    def list(self, sandbox_id: str, *, limit: Optional[int] = None) -> List[Snapshot]:
        """The sandbox's snapshots, newest first."""
        params = {"limit": str(limit)} if limit else None
        d = self._c._data("GET", "/sandbox/%s/snapshots" % b.seg(sandbox_id), params=params)
        return [Snapshot.from_dict(s) for s in d.get("snapshots") or []]

    def get(self, snapshot_id: str) -> Dict[str, Any]:
        """A snapshot's summary and (the first page of) its file list."""
        return dict(self._c._data("GET", "/snapshots/%s" % b.seg(snapshot_id)))

    def diff(self, from_snapshot: str, to_snapshot: str) -> SnapshotDiff:
        d = self._c._data("GET", "/snapshots/%s/diff/%s" % (b.seg(from_snapshot), b.seg(to_snapshot)))
        return SnapshotDiff.from_dict(d)

    def restore(self, sandbox_id: str, snapshot_id: str) -> Restored:
        """Makes the sandbox's workspace exactly the snapshot again."""
        d = self._c._data("POST", "/sandbox/%s/restore" % b.seg(sandbox_id), json={"snapshot_id": snapshot_id})
        return Restored.from_dict(d)
