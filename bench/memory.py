"""Memory of the gunicorn worker while it streams a big upload and big downloads.

Each measurement runs in its own service process (VmHWM cannot be reset): start, warm up with a
small upload and download, read the worker's VmRSS (the baseline), transfer, read its VmHWM.
Growth = VmHWM after - VmRSS baseline. Targets (DESIGN.md: memory is bounded by a block, not by
the piece or the file): upload < 100 MiB, download (one or several at once) < 64 MiB.

The big upload's body is generated once, before the clock starts, and sent from a memoryview in
8 MiB ``sendall`` calls over one ``http.client`` connection, so the client is not what limits the
upload's throughput (its own CPU time is printed with the result). Target: >= 300 MiB/s (issue 14)
besides the growth. Other bodies (the warm-up, the s3-upload file) are generated 1 MiB at a time;
downloads are hashed as they arrive.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from bench.harness import BUCKET, BenchError, Memory, MiB, Service, Workspace, bin_dir, fmt_mib

UPLOAD_TARGET = 100 * MiB
UPLOAD_MIB_S_TARGET = 300  # issue 14: a 1 GiB native PUT to one gevent worker at >= 300 MiB/s
SEND_CHUNK = 8 * MiB
S3_UPLOAD_RATIO = 0.8  # issue 11: a boto3 multipart upload at >= 0.8 of a single native PUT of the same bytes
DOWNLOAD_TARGET = 64 * MiB
BIG_KEY = "big"
WARMUP_KEY = "warmup"
WARMUP_SIZE = 4 * MiB + 17
TIMEOUT = (10, 600)  # connect, read: a stalled transfer fails instead of hanging the benchmark


class GeneratedBody:
    """``size`` bytes produced 1 MiB at a time, never held whole: one random 1 MiB block whose first
    8 bytes are replaced by the block counter, so no two blocks are identical.

    ``__len__`` makes requests send a ``Content-Length`` (not chunked); iterating once yields the
    body and leaves its sha256 in ``sha256``.
    """

    def __init__(self, size: int):
        self.size = size
        self.sha256: str | None = None

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        block = bytearray(os.urandom(MiB))
        digest = hashlib.sha256()
        for counter, offset in enumerate(range(0, self.size, MiB)):
            block[:8] = counter.to_bytes(8, "big")
            chunk = bytes(block[: min(MiB, self.size - offset)])
            digest.update(chunk)
            yield chunk
        self.sha256 = digest.hexdigest()


class PreparedBody:
    """``size`` bytes made once in memory (the blocks of ``GeneratedBody``) with their sha256, to send
    without the client's own work (generating, hashing, copying) counting in the upload's time."""

    def __init__(self, size: int):
        self.data = bytearray(size)
        view = memoryview(self.data)
        blocks = GeneratedBody(size)
        for offset, chunk in zip(range(0, size, MiB), blocks, strict=True):
            view[offset:offset + len(chunk)] = chunk
        assert blocks.sha256 is not None
        self.sha256: str = blocks.sha256
        self.size = size

    def change(self) -> None:
        """Other content of the same size (a first byte flipped): stored again, not found stored."""
        self.data[0] ^= 0xFF
        self.sha256 = hashlib.sha256(self.data).hexdigest()


def send_prepared(service: Service, key: str, body: PreparedBody) -> tuple[dict[str, Any], float]:
    """PUT the prepared body in ``SEND_CHUNK`` sends from a memoryview; (object JSON, client CPU seconds).

    The client's CPU is this thread's time from the request line to the parsed response."""
    url = urlsplit(object_url(service, key))
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT[1])
    cpu = time.thread_time()
    try:
        connection.putrequest("PUT", url.path)
        connection.putheader("Content-Type", "application/octet-stream")
        connection.putheader("Content-Length", str(body.size))
        connection.endheaders()
        view = memoryview(body.data)
        for offset in range(0, body.size, SEND_CHUNK):
            connection.sock.sendall(view[offset:offset + SEND_CHUNK])
        response = connection.getresponse()
        text = response.read().decode()
    finally:
        connection.close()
    cpu = time.thread_time() - cpu
    if response.status not in (200, 201):
        raise BenchError(f"PUT {key} answered {response.status}: {text[:2000]}\n{service.log_tail()}")
    view_json = json.loads(text)
    if view_json.get("checksum") != body.sha256 or view_json.get("size") != body.size:
        raise BenchError(f"upload of {key}: service reports checksum {view_json.get('checksum')} size "
                         f"{view_json.get('size')}, client sent sha256 {body.sha256} size {body.size}")
    return view_json, cpu


def object_url(service: Service, key: str) -> str:
    return service.url(f"/api/v1/buckets/{BUCKET}/objects/{key}")


def upload(service: Service, key: str, size: int) -> dict[str, Any]:
    """PUT ``size`` generated bytes; the object JSON, checked against the client's own sha256."""
    body = GeneratedBody(size)
    response = requests.put(object_url(service, key), data=body, timeout=TIMEOUT,
                            headers={"Content-Type": "application/octet-stream"})
    view = service.expect(response, 200, 201).json()
    if view.get("checksum") != body.sha256 or view.get("size") != size:
        raise BenchError(f"upload of {key}: service reports checksum {view.get('checksum')} size {view.get('size')}, "
                         f"client sent sha256 {body.sha256} size {size}")
    return view


def download(service: Service, key: str, checksum: str, size: int) -> None:
    """GET the object in 1 MiB pieces of the stream, hashing as it comes; BenchError unless it is intact."""
    digest = hashlib.sha256()
    received = 0
    with requests.get(object_url(service, key), stream=True, timeout=TIMEOUT) as response:
        service.expect(response, 200)
        for chunk in response.iter_content(MiB):
            digest.update(chunk)
            received += len(chunk)
    if received != size or digest.hexdigest() != checksum:
        raise BenchError(f"download of {key}: got {received} bytes with sha256 {digest.hexdigest()}, "
                         f"expected {size} bytes with sha256 {checksum}")


def _result(name: str, service: Service, size: int, transferred: int, elapsed: float, before: Memory,
            after: Memory, target: int) -> dict[str, Any]:
    growth = after.hwm - before.rss
    result = {
        "name": name, "profile": service.kind, "size": size, "transferred": transferred,
        "elapsed_s": elapsed, "mib_per_s": transferred / MiB / elapsed if elapsed else 0.0,
        "baseline_rss": before.rss, "baseline_hwm": before.hwm, "rss_after": after.rss, "hwm_after": after.hwm,
        "growth": growth, "target": target, "ok": growth < target, "worker_cpu_s": after.cpu_s - before.cpu_s,
    }
    result["worker_ms_per_mib"] = result["worker_cpu_s"] * 1000 / (transferred / MiB) if transferred else 0.0
    print(f"{name}: {fmt_mib(transferred)} in {elapsed:.1f} s ({result['mib_per_s']:.0f} MiB/s, worker CPU "
          f"{result['worker_cpu_s']:.1f} s = {result['worker_ms_per_mib']:.2f} ms/MiB); worker RSS "
          f"{fmt_mib(before.rss)} (peak so far {fmt_mib(before.hwm)}) -> peak {fmt_mib(after.hwm)}, "
          f"growth {fmt_mib(growth)} "
          f"(target < {fmt_mib(target)}): {'OK' if result['ok'] else 'OVER TARGET'}", flush=True)
    return result


class MemoryBenchmark:
    """The memory measurements on one workspace, with a big object of ``size`` bytes."""

    def __init__(self, workspace: Workspace, size: int, profile_dir: Path | None = None):
        self.workspace = workspace
        self.size = size
        self.profile_dir = profile_dir
        self.warmup_checksum: str | None = None
        self.big_object: dict[str, Any] | None = None

    def warm_up(self, service: Service) -> None:
        """A small upload (storage profile) and download: the baseline includes what the first requests load."""
        if service.kind == "storage":
            self.warmup_checksum = upload(service, WARMUP_KEY, WARMUP_SIZE)["checksum"]
        if self.warmup_checksum is None:
            raise BenchError("no warm-up object yet: the storage service must run before the downloader")
        download(service, WARMUP_KEY, self.warmup_checksum, WARMUP_SIZE)

    def measure_upload(self) -> dict[str, Any]:
        """Send the big object to PUT /buckets/bench/objects/big in a fresh storage service; the line misses
        its target when the growth is over it or the throughput under ``UPLOAD_MIB_S_TARGET``."""
        body = PreparedBody(self.size)  # before the service starts: its baseline is unaffected
        with self.workspace.service("storage") as service:
            self.workspace.grant_read_quota(service)
            self.warm_up(service)
            before = service.memory()
            start = time.monotonic()
            self.big_object, client_cpu = send_prepared(service, BIG_KEY, body)
            elapsed = time.monotonic() - start
            after = service.memory()
            if self.profile_dir is not None:
                self.profile_upload(service, body)
        del body
        result = _result("upload", service, self.size, self.size, elapsed, before, after, UPLOAD_TARGET)
        fast = result["mib_per_s"] >= UPLOAD_MIB_S_TARGET
        result["ok"] = result["ok"] and fast
        result["client_cpu_s"] = client_cpu
        result["name"] = f"upload (target >= {UPLOAD_MIB_S_TARGET} MiB/s)"
        print(f"upload throughput {result['mib_per_s']:.0f} MiB/s (target >= {UPLOAD_MIB_S_TARGET} MiB/s): "
              f"{'OK' if fast else 'UNDER TARGET'}; client CPU {client_cpu:.2f} s "
              f"({client_cpu * 1000 / (self.size / MiB):.2f} ms/MiB)", flush=True)
        return result

    def profile_upload(self, service: Service, body: PreparedBody) -> None:
        """One more upload (other content, figures not kept) with py-spy recording the worker's threads."""
        from bench.throughput import print_profile, summarize_profile

        py_spy = shutil.which("py-spy", path=str(bin_dir())) or shutil.which("py-spy")
        if py_spy is None:
            raise BenchError("--profile needs py-spy: .venv/bin/pip install py-spy")
        assert self.profile_dir is not None
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        path = self.profile_dir / "upload-worker.txt"
        body.change()
        spy = subprocess.Popen([py_spy, "record", "--pid", str(service.worker_pid()), "--rate", "200",
                                "--format", "raw", "--output", str(path), "--nonblocking", "--threads"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        cpu = service.memory().cpu_s
        start = time.monotonic()
        send_prepared(service, "big-profiled", body)
        elapsed = time.monotonic() - start
        cpu = service.memory().cpu_s - cpu
        spy.send_signal(signal.SIGINT)
        _, err = spy.communicate(timeout=120)
        if not path.exists():
            raise BenchError(f"py-spy wrote no profile ({spy.returncode}): {err[-2000:]}")
        stacks: Counter[str] = Counter()
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                stacks[stack] += int(count)
        print(f"\nprofile of the upload worker ({self.size / MiB / elapsed:.0f} MiB/s, worker CPU "
              f"{cpu * 1000 / (self.size / MiB):.2f} ms/MiB under py-spy); stacks in {path}")
        print_profile(summarize_profile(stacks, top=25))

    def measure_s3_upload(self) -> dict[str, Any]:
        """The same number of bytes through boto3's upload_file (multipart: 8 MiB parts, its default 10 threads)
        to the S3 listener of a fresh storage service; checked against the file's sha256."""
        import boto3
        from boto3.s3.transfer import TransferConfig

        path = self.workspace.root / "s3-upload.bin"
        digest = hashlib.sha256()
        with path.open("wb") as out:
            for chunk in GeneratedBody(self.size):
                out.write(chunk)
                digest.update(chunk)
        try:
            with self.workspace.service("storage", s3=True) as service:
                key_id, secret = self.workspace.access_key()
                self.warm_up(service)
                client = boto3.client("s3", endpoint_url=service.s3_url(""), region_name="us-east-1",
                                      aws_access_key_id=key_id, aws_secret_access_key=secret)
                before = service.memory()
                start = time.monotonic()
                client.upload_file(str(path), BUCKET, "s3-big", Config=TransferConfig(multipart_chunksize=8 * MiB))
                elapsed = time.monotonic() - start
                after = service.memory()
                listed = requests.get(service.url(f"/api/v1/buckets/{BUCKET}/objects?prefix=s3-big"),
                                      timeout=TIMEOUT)
                objects = service.expect(listed, 200).json()["objects"]
        finally:
            path.unlink(missing_ok=True)
        if [o["checksum"] for o in objects] != [digest.hexdigest()]:
            raise BenchError(f"s3 multipart upload: the service recorded {objects}, the file is {digest.hexdigest()}")
        return _result("s3-upload", service, self.size, self.size, elapsed, before, after, UPLOAD_TARGET)

    def ensure_big_object(self) -> dict[str, Any]:
        """The big object's JSON; uploaded here, unmeasured, when the upload measurement did not run."""
        if self.big_object is None:
            with self.workspace.service("storage") as service:
                self.workspace.grant_read_quota(service)
                self.warm_up(service)
                self.big_object = upload(service, BIG_KEY, self.size)
        return self.big_object

    def measure_download(self, parallel: int = 1, profile: str = "storage") -> dict[str, Any]:
        """``parallel`` simultaneous GETs of the big object in a fresh service process of ``profile``."""
        checksum = self.ensure_big_object()["checksum"]
        with self.workspace.service(profile) as service:
            self.warm_up(service)
            before = service.memory()
            start = time.monotonic()
            with ThreadPoolExecutor(parallel) as pool:
                futures = [pool.submit(download, service, BIG_KEY, checksum, self.size) for _ in range(parallel)]
                errors = [exc for exc in (f.exception() for f in futures) if exc is not None]
            elapsed = time.monotonic() - start
            after = service.memory()
        if errors:
            raise BenchError(f"{len(errors)} of {parallel} downloads failed; first: {errors[0]}") from errors[0]
        name = "download" if parallel == 1 else f"download x{parallel}"
        return _result(name, service, self.size, self.size * parallel, elapsed, before, after, DOWNLOAD_TARGET)

    def run(self, only: str | None = None, parallel: int = 8,
            download_profile: str = "storage") -> list[dict[str, Any]]:
        """The measurements (``only``: ``upload`` or ``download``), in order; their results."""
        results = []
        if only in (None, "upload", "s3-upload"):
            results.append(self.measure_upload())
        if only in (None, "s3-upload"):
            native, s3 = results[-1], self.measure_s3_upload()
            ratio = native["elapsed_s"] / s3["elapsed_s"] if s3["elapsed_s"] else 0.0
            s3["ok"] = s3["ok"] and ratio >= S3_UPLOAD_RATIO
            s3["name"] = f"s3-upload ({ratio:.2f} x native PUT, target >= {S3_UPLOAD_RATIO})"
            print(f"s3 multipart upload: {ratio:.3f} of the native PUT's speed (target >= {S3_UPLOAD_RATIO}): "
                  f"{'OK' if ratio >= S3_UPLOAD_RATIO else 'UNDER TARGET'}", flush=True)
            results.append(s3)
        if only in (None, "download"):
            results.append(self.measure_download(1, download_profile))
            if parallel > 1:
                results.append(self.measure_download(parallel, download_profile))
        return results
