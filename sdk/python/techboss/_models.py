"""Typed views of the API's answers. Each keeps the whole JSON object in
``raw``, so fields added to the API later are reachable before this package
names them."""

from __future__ import annotations

import base64
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Type, TypeVar

T = TypeVar("T")


def _build(cls: Type[T], d: Dict[str, Any], **extra: Any) -> T:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kw = {k: v for k, v in d.items() if k in names}
    kw.update(extra)
    kw["raw"] = d
    return cls(**kw)  # type: ignore[call-arg]


@dataclass
class Sandbox:
    """A sandbox: ``status`` is ``creating``, ``running``, ``terminated``, ..."""

    sandbox_id: str
    status: str = ""
    created_at: Optional[str] = None
    owner_id: Optional[str] = None
    driver: Optional[str] = None
    spec: Dict[str, Any] = field(default_factory=dict)
    updated_at: Optional[str] = None
    last_active_at: Optional[str] = None
    terminated_at: Optional[str] = None
    error: Optional[str] = None
    capabilities: List[str] = field(default_factory=list)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return str(self.spec.get("name") or "")

    @property
    def labels(self) -> Dict[str, str]:
        return dict(self.spec.get("labels") or {})

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Sandbox":
        return _build(cls, d)


@dataclass
class SandboxPage:
    """One page of ``sandboxes.list``; pass ``next_cursor`` as ``cursor`` for the next."""

    sandboxes: List[Sandbox]
    next_cursor: Optional[str] = None


@dataclass
class ExecResult:
    """A finished command (``exec.run``): output is capped, see ``*_truncated``."""

    exit_code: int
    stdout: str = ""
    stderr: str = ""
    duration_ms: int = 0
    oom_killed: bool = False
    timed_out: bool = False
    signal: Optional[str] = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ExecResult":
        return _build(cls, d)


@dataclass
class ExecEvent:
    """One event of ``exec.stream``: ``stdout`` and ``stderr`` carry ``data``
    (bytes; ``text`` decodes them), the last one is ``exit`` with
    ``exit_code``."""

    type: str
    data: bytes = b""
    exit_code: Optional[int] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")

    @classmethod
    def from_sse(cls, event: str, payload: Dict[str, Any]) -> "ExecEvent":
        if "data_b64" in payload:
            data = base64.b64decode(payload["data_b64"])
        else:
            data = str(payload.get("data", "")).encode("utf-8")
        code = payload.get("exit_code") if event == "exit" else None
        return cls(type=event, data=data, exit_code=code, raw=payload)


@dataclass
class FileEntry:
    """One entry of a directory listing; ``type`` is ``file``, ``dir`` or ``symlink``."""

    name: str
    type: str = "file"
    size: int = 0
    mode: int = 0
    mtime: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "FileEntry":
        return _build(cls, d)


@dataclass
class Run:
    """A Claude Code run: ``status`` is ``running``, ``succeeded``, ``failed``, ``cancelled``, ..."""

    run_id: str
    sandbox_id: str = ""
    status: str = ""
    prompt: str = ""
    session_id: Optional[str] = None
    model: Optional[str] = None
    created_at: Optional[str] = None
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    usage: Dict[str, Any] = field(default_factory=dict)
    num_turns: int = 0
    exit_code: Optional[int] = None
    last_seq: int = 0
    cost_usd: float = 0.0
    duration_ms: int = 0
    error: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Run":
        return _build(cls, d)


@dataclass
class RunEvent:
    """One event of a run's log. ``seq`` is its place in the run (1, 2, ...;
    the SSE id), ``type`` one of ``run.started``, ``text_delta``, ``text``,
    ``tool_use``, ``tool_result``, ``usage``, ``result``, ``permission_request``,
    ``done``, ... and ``data`` its JSON payload."""

    type: str
    seq: Optional[int] = None
    data: Any = None
    run_id: str = ""

    @property
    def text(self) -> str:
        """The text of a ``text_delta`` or ``text`` event ("" for others)."""
        if self.type in ("text_delta", "text") and isinstance(self.data, dict):
            return str(self.data.get("text", ""))
        return ""

    @property
    def is_done(self) -> bool:
        return self.type == "done"

    @classmethod
    def from_sse(cls, event: str, id_: Optional[str], data: str, run_id: str) -> "RunEvent":
        try:
            payload: Any = json.loads(data) if data else None
        except ValueError:
            payload = data
        seq: Optional[int] = None
        if id_:
            try:
                seq = int(id_)
            except ValueError:
                seq = None
        return cls(type=event or "message", seq=seq, data=payload, run_id=run_id)


@dataclass
class Snapshot:
    """A version of a sandbox's /workspace; ``trigger`` is ``manual``, ``run``, ``stop``, ..."""

    snapshot_id: str
    sandbox_id: str = ""
    version: str = ""
    trigger: str = ""
    run_id: Optional[str] = None
    file_count: int = 0
    bytes: int = 0
    uploaded_bytes: int = 0
    created_at: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Snapshot":
        return _build(cls, d)


@dataclass
class SnapshotDiff:
    """Paths added, removed and changed from one snapshot to another."""

    from_snapshot: str
    to_snapshot: str
    added: List[str] = field(default_factory=list)
    removed: List[str] = field(default_factory=list)
    changed: List[str] = field(default_factory=list)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "SnapshotDiff":
        return cls(
            from_snapshot=str(d.get("from", "")),
            to_snapshot=str(d.get("to", "")),
            added=list(d.get("added") or []),
            removed=list(d.get("removed") or []),
            changed=list(d.get("changed") or []),
            raw=d,
        )


@dataclass
class Restored:
    """The answer of ``snapshots.restore``: counts in ``restored``."""

    sandbox_id: str
    snapshot_id: str
    version: str = ""
    restored: Dict[str, Any] = field(default_factory=dict)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Restored":
        return _build(cls, d)
