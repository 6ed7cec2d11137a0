"""The suite runs against a real server: TECHBOSS_URL and TECHBOSS_TOKEN
name it (cmd/server's TestSDKs starts one and sets them), TECHBOSS_FLAKY_URL
is the same server behind a proxy that cuts run streams, and
TECHBOSS_SDK_ANSWER is what its scripted model answers."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from techboss import Client  # noqa: E402


def env(name: str) -> str:
    v = os.environ.get(name)
    if not v:
        pytest.fail("%s is not set: run the suite through cmd/server's TestSDKs (make test)" % name)
    return v


@pytest.fixture(scope="session")
def answer() -> str:
    return env("TECHBOSS_SDK_ANSWER")


@pytest.fixture(scope="session")
def flaky_url() -> str:
    return env("TECHBOSS_FLAKY_URL")


@pytest.fixture(scope="module")
def client():
    env("TECHBOSS_URL")
    env("TECHBOSS_TOKEN")
    with Client() as c:
        yield c


@pytest.fixture(scope="module")
def sandbox(client):
    sb = client.sandboxes.create("host", name="pytest", labels={"suite": "python"})
    yield sb
    client.sandboxes.terminate(sb.sandbox_id)
