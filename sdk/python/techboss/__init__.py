"""TechBoss AI: a Python client for sandboxes, exec, files, Claude Code runs
(streamed, resumed with Last-Event-ID) and snapshots.

    from techboss import Client

    with Client() as tb:  # $TECHBOSS_URL, $TECHBOSS_TOKEN
        sb = tb.sandboxes.create()
        for ev in tb.claude(sb.sandbox_id, "say hello"):
            if ev.type == "text_delta":
                print(ev.text, end="", flush=True)
"""

from ._async_client import AsyncClient, AsyncRunStream
from ._client import Client, RunStream
from ._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FieldError,
    NotFoundError,
    PayloadTooLargeError,
    PaymentRequiredError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    StreamError,
    TechBossError,
    ValidationError,
)
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

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AsyncClient",
    "AsyncRunStream",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "ExecEvent",
    "ExecResult",
    "FieldError",
    "FileEntry",
    "NotFoundError",
    "PayloadTooLargeError",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "RateLimitError",
    "Restored",
    "Run",
    "RunEvent",
    "RunStream",
    "Sandbox",
    "SandboxPage",
    "ServiceUnavailableError",
    "Snapshot",
    "SnapshotDiff",
    "StreamError",
    "TechBossError",
    "ValidationError",
]
