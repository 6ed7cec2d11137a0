"""What the sync and async clients share: settings, paths, bodies, answers."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence
from urllib.parse import quote

import httpx

from ._errors import error_from_body

DEFAULT_URL = "http://localhost:8080"
# Creating a sandbox may build an image: the default read timeout is long.
DEFAULT_TIMEOUT = httpx.Timeout(300.0, connect=10.0)
# Streams get a heartbeat every 15 s; a minute of silence is a dead connection.
STREAM_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
USER_AGENT = "techboss-python/0.1.0"


def settings(base_url: Optional[str], token: Optional[str]) -> Dict[str, Any]:
    url = (base_url or os.environ.get("TECHBOSS_URL") or DEFAULT_URL).rstrip("/")
    tok = token if token is not None else os.environ.get("TECHBOSS_TOKEN")
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if tok:
        headers["Authorization"] = "Bearer " + tok
    return {"base_url": url, "headers": headers}


def seg(s: str) -> str:
    """One path segment, escaped."""
    return quote(s, safe="")


def files_path(sandbox_id: str, path: str) -> str:
    """/sandbox/{id}/files/{path}: relative paths are under /workspace."""
    return "/sandbox/%s/files/%s" % (seg(sandbox_id), quote(path, safe="/"))


def raise_for(res: httpx.Response, body: bytes) -> None:
    if res.status_code < 400:
        return
    try:
        parsed: Any = json.loads(body) if body else None
    except ValueError:
        parsed = body.decode("utf-8", errors="replace")
    raise error_from_body(res.status_code, parsed, res.headers.get("Retry-After"))


def data_of(res: httpx.Response) -> Any:
    """The "data" of a JSON answer."""
    body = res.json()
    if isinstance(body, dict) and "data" in body:
        return body["data"]
    return body


def drop_none(d: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def exec_body(
    command: Sequence[str],
    env: Optional[Mapping[str, str]],
    workdir: Optional[str],
    timeout_s: Optional[float],
    stdin: Optional[Any],
) -> Dict[str, Any]:
    if isinstance(command, str):
        raise TypeError("command is an argv list, e.g. ['sh', '-c', 'echo hi']")
    body: Dict[str, Any] = {"command": list(command)}
    if env:
        body["env"] = dict(env)
    if workdir:
        body["workdir"] = workdir
    if timeout_s:
        body["timeout_s"] = timeout_s
    if stdin is not None:
        if isinstance(stdin, (bytes, bytearray)):
            import base64

            body["stdin_b64"] = base64.b64encode(bytes(stdin)).decode("ascii")
        else:
            body["stdin"] = str(stdin)
    return body


def list_params(
    state: Optional[str], label: Optional[Mapping[str, str]], limit: Optional[int], cursor: Optional[str]
) -> List[Any]:
    params: List[Any] = []
    if state:
        params.append(("state", state))
    for k, v in (label or {}).items():
        params.append(("label", "%s=%s" % (k, v)))
    if limit:
        params.append(("limit", str(limit)))
    if cursor:
        params.append(("cursor", cursor))
    return params


def last_id_headers(last: Optional[int]) -> Dict[str, str]:
    h = {"Accept": "text/event-stream"}
    if last is not None:
        h["Last-Event-ID"] = str(last)
    return h


# Errors worth reconnecting after: the connection broke or the server is
# restarting (503) or busy (429).
RETRY_STATUS = (429, 502, 503, 504)


def backoff(attempt: int) -> float:
    return float(min(0.2 * (2 ** (attempt - 1)), 5.0))
