"""Helpers of the nearline tests: a tape library (a local location with ``restore_seconds``), a restore cache,
the restore workers of a process in threads, the restores a library logged, and a webhook receiver."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from storage_core.container import Container
from storage_core.workers import BackgroundWorkers


def add_tape(storage: Container, root: Path, restore_seconds: float, name: str = "tape") -> str:
    storage.location_service().create({
        "name": name, "plugin": "local", "tier": "cold", "priority": 0, "enabled": True, "access": "nearline",
        "config": {"root": str(root), "restore_seconds": restore_seconds}})
    return name


def add_cache(storage: Container, root: Path, capacity: int | None, name: str = "cache") -> str:
    storage.location_service().create({
        "name": name, "plugin": "local", "tier": "hot", "priority": 0, "enabled": True, "purpose": "cache",
        "capacity": capacity, "config": {"root": str(root)}})
    return name


def restore_log(root: Path) -> list[tuple[str, int]]:
    """(checksum, piece) of every restore the library actually started, in order."""
    path = root / "restores" / "requests.log"
    if not path.exists():
        return []
    return [(line.split()[1], int(line.split()[2])) for line in path.read_text().splitlines()]


def wait_for(condition: Callable[[], Any], timeout: float, every: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(every)


class Workers:
    """The background loops of one storage-service process, in threads of the test process."""

    def __init__(self, container: Container, count: int = 1):
        self.loops = BackgroundWorkers(container, count)
        self.loops.start()

    def stop(self) -> None:
        self.loops.stop(10)


class WebhookReceiver:
    """An HTTP receiver on loopback that answers ``statuses`` in turn (then 200) and keeps every delivery."""

    def __init__(self, statuses: list[int]):
        self.statuses = list(statuses)
        self.deliveries: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.deliveries.append({"headers": dict(self.headers), "body": body, "status": status,
                                            "time": time.monotonic()})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(d["body"]) for d in self.deliveries]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
