"""The asyncio client: the same surface as Client, with ``await`` and ``async for``."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, Union

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


class AsyncClient:
    """The asyncio twin of ``Client`` (same arguments, same resources)."""

    def __init__(
        self,
        base_url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        timeout: Union[float, httpx.Timeout, None] = None,
        max_reconnects: int = 10,
        http_client: Optional[httpx.AsyncClient] = None,
    ) -> None:
        s = b.settings(base_url, token)
        self.base_url: str = s["base_url"]
        self.max_reconnects = max_reconnects
        self._http = http_client or httpx.AsyncClient(
            base_url=s["base_url"], headers=s["headers"], timeout=timeout or b.DEFAULT_TIMEOUT
        )
        if http_client is not None:
            self._http.headers.update(s["headers"])
        self.sandboxes = AsyncSandboxes(self)
        self.exec = AsyncExec(self)
        self.files = AsyncFiles(self)
        self.runs = AsyncRuns(self)
        self.snapshots = AsyncSnapshots(self)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def claude(self, sandbox_id: str, prompt: str, **options: Any) -> "AsyncRunStream":
        """Starts a Claude Code run when iterated (``async for ev in ...``);
        see ``Client.claude``."""
        body = dict(options)
        body["prompt"] = prompt

        async def start() -> httpx.Response:
            return await self._open_stream(
                "POST", "/sandbox/%s/claude" % b.seg(sandbox_id), params={"format": "events"}, json=body
            )

        return AsyncRunStream(self, None, start=start)

    async def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """Sends a request and raises APIError for an error answer."""
        res = await self._http.request(method, path, **kw)
        if res.status_code >= 400:
            b.raise_for(res, res.content)
        return res

    async def _data(self, method: str, path: str, **kw: Any) -> Any:
        return b.data_of(await self.request(method, path, **kw))

    async def _open_stream(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", None) or {})
        headers.setdefault("Accept", "text/event-stream")
        req = self._http.build_request(method, path, headers=headers, timeout=b.STREAM_TIMEOUT, **kw)
        res = await self._http.send(req, stream=True)
        if res.status_code >= 400:
            try:
                body = await res.aread()
            finally:
                await res.aclose()
            b.raise_for(res, body)
        return res


async def _events(res: httpx.Response) -> AsyncIterator[SSE]:
    p = SSEParser()
    async for line in res.aiter_lines():
        ev = p.feed(line)
        if ev is not None:
            yield ev


class AsyncRunStream:
    """The asyncio twin of ``RunStream``: ``async for ev in stream``."""

    def __init__(
        self,
        client: AsyncClient,
        run_id: Optional[str],
        *,
        after: Optional[int] = None,
        start: Optional[Callable[[], Awaitable[httpx.Response]]] = None,
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
        return "\n".join(self._texts)

    @property
    def result(self) -> Optional[Dict[str, Any]]:
        return self._done.data if self._done else None

    async def _open(self) -> httpx.Response:
        if self._start is not None:
            start, self._start = self._start, None
            res = await start()
            self.run_id = res.headers.get("X-Run-ID") or self.run_id
            return res
        if not self.run_id:
            raise StreamError("the run's id is unknown: the stream cannot be resumed")
        return await self._client._open_stream(
            "GET", "/runs/%s/events" % b.seg(self.run_id), headers=b.last_id_headers(self.last_event_id)
        )

    async def __aiter__(self) -> AsyncIterator[RunEvent]:
        failures = 0
        first = True
        while True:
            err: Optional[BaseException] = None
            try:
                res = self._res = await self._open()
                if not first:
                    self.reconnects += 1
                first = False
                try:
                    async for sse in _events(res):
                        if sse.event == "restarting":
                            break
                        if sse.event == "error" and sse.id is None:
                            raise error_from_body(0, json.loads(sse.data or "{}"))
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
                    await res.aclose()
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
            await asyncio.sleep(b.backoff(failures))

    async def until_done(self) -> "AsyncRunStream":
        async for _ in self:
            pass
        return self

    async def aclose(self) -> None:
        if self._res is not None:
            await self._res.aclose()


class AsyncSandboxes:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def create(self, image_base: str = "host", **spec: Any) -> Sandbox:
        body = dict(spec)
        body["image_base"] = image_base
        return Sandbox.from_dict(await self._c._data("POST", "/sandbox", json=body))

    async def list(
        self,
        *,
        state: Optional[str] = None,
        label: Optional[Mapping[str, str]] = None,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
    ) -> SandboxPage:
        d = await self._c._data("GET", "/sandbox", params=b.list_params(state, label, limit, cursor))
        return SandboxPage(
            sandboxes=[Sandbox.from_dict(s) for s in d.get("sandboxes") or []],
            next_cursor=d.get("next_cursor") or None,
        )

    async def iter(
        self,
        *,
        state: Optional[str] = None,
        label: Optional[Mapping[str, str]] = None,
        limit: Optional[int] = None,
    ) -> AsyncIterator[Sandbox]:
        """Every sandbox, page after page (``async for``)."""
        cursor: Optional[str] = None
        while True:
            page = await self.list(state=state, label=label, limit=limit, cursor=cursor)
            for sb in page.sandboxes:
                yield sb
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def get(self, sandbox_id: str) -> Sandbox:
        return Sandbox.from_dict(await self._c._data("GET", "/sandbox/%s" % b.seg(sandbox_id)))

    async def terminate(self, sandbox_id: str) -> Sandbox:
        return Sandbox.from_dict(await self._c._data("DELETE", "/sandbox/%s" % b.seg(sandbox_id)))

    async def logs(self, sandbox_id: str) -> str:
        return (await self._c.request("GET", "/sandbox/%s/logs" % b.seg(sandbox_id))).text


class AsyncExec:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def run(
        self,
        sandbox_id: str,
        command: Sequence[str],
        *,
        env: Optional[Mapping[str, str]] = None,
        workdir: Optional[str] = None,
        timeout_s: Optional[float] = None,
        stdin: Union[str, bytes, None] = None,
    ) -> ExecResult:
        body = b.exec_body(command, env, workdir, timeout_s, stdin)
        d = await self._c._data("POST", "/sandbox/%s/exec" % b.seg(sandbox_id), params={"wait": "true"}, json=body)
        return ExecResult.from_dict(d)

    async def stream(
        self,
        sandbox_id: str,
        command: Sequence[str],
        *,
        env: Optional[Mapping[str, str]] = None,
        workdir: Optional[str] = None,
        timeout_s: Optional[float] = None,
        stdin: Union[str, bytes, None] = None,
    ) -> AsyncIterator[ExecEvent]:
        body = b.exec_body(command, env, workdir, timeout_s, stdin)
        res = await self._c._open_stream("POST", "/sandbox/%s/exec" % b.seg(sandbox_id), json=body)
        try:
            async for sse in _events(res):
                payload = json.loads(sse.data) if sse.data else {}
                if sse.event == "error":
                    raise error_from_body(0, {"error": payload})
                if sse.event in ("stdout", "stderr", "exit"):
                    yield ExecEvent.from_sse(sse.event, payload)
                    if sse.event == "exit":
                        return
        finally:
            await res.aclose()
        raise StreamError("exec stream ended without an exit event")


class AsyncFiles:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def read(self, sandbox_id: str, path: str) -> bytes:
        return (await self._c.request("GET", b.files_path(sandbox_id, path))).content

    async def read_text(self, sandbox_id: str, path: str, encoding: str = "utf-8") -> str:
        return (await self.read(sandbox_id, path)).decode(encoding)

    async def write(self, sandbox_id: str, path: str, content: Union[str, bytes], *, mode: Optional[int] = None) -> int:
        if isinstance(content, str):
            content = content.encode("utf-8")
        params = {"mode": "%o" % mode} if mode is not None else None
        d = await self._c._data(
            "PUT",
            b.files_path(sandbox_id, path),
            params=params,
            content=content,
            headers={"Content-Type": "application/octet-stream"},
        )
        return int(d.get("size", len(content)))

    async def list(self, sandbox_id: str, path: str = ".") -> List[FileEntry]:
        d = await self._c._data("GET", "/sandbox/%s/files" % b.seg(sandbox_id), params={"dir": path})
        return [FileEntry.from_dict(e) for e in d.get("entries") or []]

    async def remove(self, sandbox_id: str, path: str, *, recursive: bool = False) -> None:
        params = {"recursive": "true"} if recursive else None
        await self._c.request("DELETE", b.files_path(sandbox_id, path), params=params)


class AsyncRuns:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def list(self, sandbox_id: str) -> List[Run]:
        return [Run.from_dict(r) for r in await self._c._data("GET", "/sandbox/%s/runs" % b.seg(sandbox_id)) or []]

    async def get(self, run_id: str) -> Run:
        return Run.from_dict(await self._c._data("GET", "/runs/%s" % b.seg(run_id)))

    def stream(self, run_id: str, *, after: Optional[int] = None) -> AsyncRunStream:
        return AsyncRunStream(self._c, run_id, after=after)

    async def cancel(self, run_id: str) -> Run:
        return Run.from_dict(await self._c._data("POST", "/runs/%s/cancel" % b.seg(run_id)))

    async def answer_permission(
        self,
        run_id: str,
        request_id: str,
        behavior: str,
        *,
        message: Optional[str] = None,
        updated_input: Optional[Dict[str, Any]] = None,
        remember: Optional[str] = None,
    ) -> Any:
        body = b.drop_none(
            {"behavior": behavior, "message": message, "updated_input": updated_input, "remember": remember}
        )
        return await self._c._data(
            "POST", "/runs/%s/permissions/%s" % (b.seg(run_id), b.seg(request_id)), json=body
        )


class AsyncSnapshots:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def create(self, sandbox_id: str) -> Snapshot:
        return Snapshot.from_dict(await self._c._data("POST", "/sandbox/%s/snapshots" % b.seg(sandbox_id)))

    async def list(self, sandbox_id: str, *, limit: Optional[int] = None) -> List[Snapshot]:
        params = {"limit": str(limit)} if limit else None
        d = await self._c._data("GET", "/sandbox/%s/snapshots" % b.seg(sandbox_id), params=params)
        return [Snapshot.from_dict(s) for s in d.get("snapshots") or []]

    async def get(self, snapshot_id: str) -> Dict[str, Any]:
        return dict(await self._c._data("GET", "/snapshots/%s" % b.seg(snapshot_id)))

    async def diff(self, from_snapshot: str, to_snapshot: str) -> SnapshotDiff:
        d = await self._c._data("GET", "/snapshots/%s/diff/%s" % (b.seg(from_snapshot), b.seg(to_snapshot)))
        return SnapshotDiff.from_dict(d)

    async def restore(self, sandbox_id: str, snapshot_id: str) -> Restored:
        d = await self._c._data(
            "POST", "/sandbox/%s/restore" % b.seg(sandbox_id), json={"snapshot_id": snapshot_id}
        )
        return Restored.from_dict(d)
