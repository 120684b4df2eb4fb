"""Pytest plugin: a real S3 protocol server (moto, in a thread) for the whole test session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from moto.server import ThreadedMotoServer


@dataclass(frozen=True)
class S3Server:
    """Where the session's S3 server listens and the credentials it accepts."""

    endpoint: str
    access_key: str = "testing"
    secret_key: str = "testing"
    region: str = "us-east-1"

    def config(self, bucket: str, **extra: Any) -> dict[str, Any]:
        """A valid ``s3`` plugin config for ``bucket`` on this server; ``extra`` overrides fields."""
        return {
            "endpoint": self.endpoint,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "bucket": bucket,
            "secure": False,
            "region": self.region,
            "create_bucket": True,
            **extra,
        }


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    # Port 0 works: ThreadedMotoServer.start() returns once werkzeug has bound the socket, and
    # get_host_and_port() reads the port the kernel picked, so parallel sessions never collide.
    # Moto accepts any credentials and the clients get them explicitly (the region is fixed
    # too), so no AWS environment variables or files are read or needed.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Server(endpoint=f"{host}:{port}")
    finally:
        server.stop()


@pytest.fixture
def s3_bucket_name() -> str:
    """A bucket name no other test uses (the server's state lives for the whole session)."""
    return f"test-{uuid.uuid4().hex[:24]}"


class AuthenticatingS3Server:
    """A moto S3 server in a process of its own that checks credentials (moto's IAM authorization on from
    the first request): no access key is known to it, so every request is refused as a real S3 refuses
    bad credentials. Its own process, since moto keeps that switch in a global the session's server shares.
    """

    def __init__(self) -> None:
        import os
        import socket
        import subprocess
        import sys
        import time

        import requests

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.endpoint = f"127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://{self.endpoint}/moto-api/", timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("moto server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def authenticating_s3_server() -> Iterator[AuthenticatingS3Server]:
    server = AuthenticatingS3Server()
    yield server
    server.stop()
