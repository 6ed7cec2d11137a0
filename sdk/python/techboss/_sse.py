"""A Server-Sent Events parser fed one line at a time (sync and async
iterators share it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional


@dataclass
class SSE:
    """One dispatched event: ``id`` is None when the event had no id line."""

    event: str
    data: str
    id: Optional[str]


class SSEParser:
    """Feed lines without their line ending; ``feed`` returns an event when
    a blank line completes one. Comments (heartbeats) are dropped."""

    def __init__(self) -> None:
        self._event = ""
        self._data: List[str] = []
        self._id: Optional[str] = None
        self._has = False

    def feed(self, line: str) -> Optional[SSE]:
        line = line.rstrip("\r\n")
        if line == "":
            if not self._has:
                return None
            ev = SSE(event=self._event or "message", data="\n".join(self._data), id=self._id)
            self._event, self._data, self._id, self._has = "", [], None, False
            return ev
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._id = value
        else:
            return None
        self._has = True
        return None
