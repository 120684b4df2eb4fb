"""Uploads (one PUT, or native multipart with parallel, resumable parts) and downloads (parallel ranges,
resumed with ``Range`` + ``If-Range``, verified against the sha256 ETag, renamed into place only then).

Resumable state is small JSON: an upload's in the user's cache directory (its parts are asked of the
server, which is the authority on what arrived), a download's beside the destination (the byte
intervals already written to the temporary file).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import httpx

from storage_core.client.api import Api, ApiError, TransferBroken, bucket_path, object_path, problem_of
from storage_core.client.config import MAX_PARTS, MiB, cache_dir
from storage_core.client.progress import TransferProgress

CHUNK = 1 * MiB
PART_ATTEMPTS = 4
RANGE_ATTEMPTS = 6
STATE_FLUSH_SECONDS = 0.5
SHA256_RE = re.compile(r"[0-9a-f]{64}")


class Interrupted(Exception):
    """The person stopped the transfer (Ctrl-C): the state is kept for the next run."""


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` atomically, so a crash leaves the old state or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        json.dump(data, out)
    os.replace(temporary, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def sha256_of(path: Path, stop: threading.Event | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(4 * CHUNK):
            if stop is not None and stop.is_set():
                raise Interrupted()
            digest.update(block)
    return digest.hexdigest()


def run_parallel(jobs: int, tasks: list[Callable[[], Any]], stop: threading.Event) -> list[Any]:
    """Run ``tasks`` on ``jobs`` threads; the first failure (or Ctrl-C) stops the others at their next chunk."""
    if not tasks:
        return []
    pool = ThreadPoolExecutor(max_workers=max(1, min(jobs, len(tasks))))
    futures: list[Future[Any]] = [pool.submit(task) for task in tasks]
    try:
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in done:
            if (error := future.exception()) is not None:
                raise error
        return [future.result() for future in futures]
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ---- uploads ------------------------------------------------------------------------------------------


class FileSlice:
    """The bytes ``[offset, offset + length)`` of a file as a request body, counted into the progress bar.

    Each iteration reopens the file, so a retried request sends the slice again from its start."""

    def __init__(self, path: Path, offset: int, length: int, bar: TransferProgress, stop: threading.Event):
        self.path, self.offset, self.length, self.bar, self.stop = path, offset, length, bar, stop
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        self.sent = 0
        with self.path.open("rb") as source:
            source.seek(self.offset)
            left = self.length
            while left:
                if self.stop.is_set():
                    raise Interrupted()
                block = source.read(min(CHUNK, left))
                if not block:
                    raise ApiError(f"{self.path} shrank while it was being uploaded")
                left -= len(block)
                self.sent += len(block)
                self.bar.advance(len(block))
                yield block

    def rewind(self) -> None:
        """Take back from the bar what a failed attempt had counted."""
        self.bar.advance(-self.sent)
        self.sent = 0


def upload_state_path(url: str, bucket: str, key: str, path: Path) -> Path:
    """Where the state of uploading ``path`` to bucket/key lives. Not keyed by the server's address: an
    upload id is good on every instance of a service (another service answers 404 and a new one starts)."""
    identity = json.dumps([bucket, key, str(path.resolve())]).encode()
    return cache_dir() / "uploads" / f"{hashlib.sha256(identity).hexdigest()[:32]}.json"


def parts_of(listing: Any) -> dict[int, dict[str, Any]]:
    """The parts a ``GET .../uploads/{id}`` answer lists, by number."""
    items = listing.get("parts", []) if isinstance(listing, dict) else listing
    return {int(p["part_number"]): p for p in items or [] if isinstance(p, dict) and "part_number" in p}


def put_slice(api: Api, url_path: str, body: FileSlice, headers: dict[str, str]) -> dict[str, Any]:
    """PUT one slice; a dropped connection or a 5xx is sent again (the slice from its start)."""
    for attempt in range(1, PART_ATTEMPTS + 1):
        try:
            response = api.http.put(url_path, content=body, headers={"Content-Length": str(body.length), **headers})
        except (Interrupted, ApiError):
            raise
        except httpx.TransportError as exc:
            body.rewind()
            if attempt == PART_ATTEMPTS:
                raise ApiError(f"cannot reach {api.url}: {exc}") from None
            time.sleep(0.5 * attempt)
            continue
        if response.status_code >= 500 and attempt < PART_ATTEMPTS:
            body.rewind()
            time.sleep(0.5 * attempt)
            continue
        if response.status_code >= 400:
            raise problem_of(response)
        return response.json()
    raise AssertionError("unreachable")


def upload(api: Api, path: Path, bucket: str, key: str, *, part_size: int, jobs: int, show_progress: bool,
           content_type: str = "application/octet-stream",
           on_part: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Upload ``path`` to bucket/key and return the object JSON; large files go in parallel parts and an
    interrupted upload resumes on the next call with the same file and destination."""
    stat = path.stat()
    size = stat.st_size
    part_size = max(part_size, math.ceil(size / MAX_PARTS))
    stop = threading.Event()
    if size <= part_size:
        checksum = sha256_of(path)
        with TransferProgress(f"put {key}", size, enabled=show_progress) as bar:
            body = FileSlice(path, 0, size, bar, stop)
            return put_slice(api, object_path(bucket, key), body,
                             {"Content-Type": content_type, "X-Checksum-Sha256": checksum})
    return _multipart(api, path, stat, bucket, key, part_size, jobs, show_progress, content_type, stop, on_part)


def _multipart(api: Api, path: Path, stat: os.stat_result, bucket: str, key: str, part_size: int, jobs: int,
               show_progress: bool, content_type: str, stop: threading.Event,
               on_part: Callable[[int], None] | None) -> dict[str, Any]:
    size = stat.st_size
    uploads = f"{bucket_path(bucket)}/uploads"
    state_path = upload_state_path(api.url, bucket, key, path)
    identity = {"size": size, "mtime_ns": stat.st_mtime_ns, "part_size": part_size}
    state = read_json(state_path)
    upload_id: str | None = None
    listed: dict[int, dict[str, Any]] = {}
    if state is not None and all(state.get(name) == value for name, value in identity.items()):
        try:
            listed = parts_of(api.json("GET", f"{uploads}/{urllib.parse.quote(state['upload_id'], safe='')}"))
            upload_id = state["upload_id"]
        except ApiError as exc:
            if exc.status != 404:  # 404: aborted or expired: start again
                raise
    elif state is not None:  # the file changed since: its old parts are of no use
        with contextlib.suppress(ApiError):
            api.request("DELETE", f"{uploads}/{urllib.parse.quote(state['upload_id'], safe='')}", attempts=1)
    if upload_id is None:
        created = api.json("POST", uploads, json={"key": key, "content_type": content_type}, attempts=1)
        upload_id = str(created["upload_id"])
        write_json(state_path, {**identity, "upload_id": upload_id, "bucket": bucket, "key": key,
                                "path": str(path.resolve()), "url": api.url})
    upload_path = f"{uploads}/{urllib.parse.quote(upload_id, safe='')}"

    count = math.ceil(size / part_size)

    def length_of(number: int) -> int:
        return part_size if number < count else size - part_size * (count - 1)

    etags = {n: str(p["etag"]) for n, p in listed.items() if 1 <= n <= count and p.get("size") == length_of(n)}
    missing = [n for n in range(1, count + 1) if n not in etags]
    checksum: dict[str, str] = {}

    def hash_file() -> None:
        with contextlib.suppress(Interrupted):  # stopped with the parts: the next run hashes again
            checksum["sha256"] = sha256_of(path, stop)

    hashing = threading.Thread(target=hash_file, daemon=True)
    hashing.start()

    with TransferProgress(f"put {key}", size, sum(length_of(n) for n in etags), enabled=show_progress) as bar:
        def send(number: int) -> None:
            body = FileSlice(path, (number - 1) * part_size, length_of(number), bar, stop)
            answer = put_slice(api, f"{upload_path}/parts/{number}", body,
                               {"Content-Type": "application/octet-stream"})
            etags[number] = str(answer["etag"])
            if on_part is not None:
                on_part(number)

        run_parallel(jobs, [lambda n=n: send(n) for n in missing], stop)
    hashing.join()
    parts = [{"part_number": n, "etag": etags[n]} for n in sorted(etags)]
    stored = api.json("POST", f"{upload_path}/complete", json={"parts": parts}, attempts=1)
    state_path.unlink(missing_ok=True)
    if "sha256" in checksum and stored.get("checksum") != checksum["sha256"]:
        raise ApiError(f"the stored object's checksum {stored.get('checksum')} is not the file's {checksum['sha256']}")
    return stored


# ---- downloads ----------------------------------------------------------------------------------------


class Intervals:
    """Byte intervals ``[start, end)`` already written, kept merged."""

    def __init__(self, spans: list[list[int]] | None = None):
        self.spans: list[list[int]] = []
        for start, end in spans or []:
            self.add(int(start), int(end))

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        merged: list[list[int]] = []
        for span in self.spans:
            if span[1] < start or span[0] > end:
                merged.append(span)
            else:
                start, end = min(start, span[0]), max(end, span[1])
        merged.append([start, end])
        self.spans = sorted(merged)

    def total(self) -> int:
        return sum(end - start for start, end in self.spans)

    def missing(self, size: int) -> list[tuple[int, int]]:
        gaps, position = [], 0
        for start, end in self.spans:
            if start > position:
                gaps.append((position, start))
            position = max(position, end)
        if position < size:
            gaps.append((position, size))
        return gaps


def split(gaps: list[tuple[int, int]], jobs: int) -> list[tuple[int, int]]:
    """Cut the gaps into about ``jobs`` ranges of similar length (at least a MiB each)."""
    total = sum(end - start for start, end in gaps)
    target = max(CHUNK, math.ceil(total / max(1, jobs)))
    ranges = []
    for start, end in gaps:
        while end - start > target * 1.5:
            ranges.append((start, start + target))
            start += target
        ranges.append((start, end))
    return ranges


class ObjectChanged(Exception):
    """``If-Range`` did not match: the object was replaced since the download began."""


FILENAME_STAR_RE = re.compile(r"filename\*\s*=\s*UTF-8''([^;]+)", re.IGNORECASE)
FILENAME_RE = re.compile(r'filename\s*=\s*"((?:[^"\\]|\\.)*)"', re.IGNORECASE)


def filename_of(disposition: str | None, fallback: str) -> str:
    """A safe local file name from ``Content-Disposition`` (never a path), else ``fallback``."""
    name = ""
    if disposition:
        star = FILENAME_STAR_RE.search(disposition)
        plain = FILENAME_RE.search(disposition)
        if star:
            name = urllib.parse.unquote(star.group(1).strip())
        elif plain:
            name = re.sub(r"\\(.)", r"\1", plain.group(1))
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name if name not in ("", ".", "..") else fallback


def destination(dest: str | None, name: str) -> Path:
    if dest is None:
        return Path.cwd() / name
    target = Path(dest)
    if target.is_dir() or dest.endswith(os.sep):
        return target / name
    return target


class Download:
    """One download into ``dest``: ranges fetched on ``jobs`` threads into ``dest.part``, its progress in
    ``dest.part.json``; renamed into place once the whole file's sha256 is the expected one."""

    def __init__(self, api: Api, path: str, params: dict[str, str], dest: Path, jobs: int, show_progress: bool,
                 expected_checksum: str | None = None):
        self.api, self.path, self.params, self.dest = api, path, params, dest
        self.jobs, self.show_progress, self.expected = jobs, show_progress, expected_checksum
        self.temporary = dest.with_name(dest.name + ".part")
        self.state_path = dest.with_name(dest.name + ".part.json")
        # what is downloaded, not from which address: the ETag (the content's sha256) says the bytes are the same
        # through another instance or load balancer
        self.source = path + ("?" + urllib.parse.urlencode(params) if params else "")
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def run(self, size: int, etag: str | None) -> Path:
        for _ in range(2):  # a second time only if the object was replaced meanwhile
            try:
                return self._run(size, etag)
            except ObjectChanged:
                self.state_path.unlink(missing_ok=True)
                self.temporary.unlink(missing_ok=True)
                head = self.api.request("HEAD", self.path, params=self.params)
                size, etag = int(head.headers["Content-Length"]), head.headers.get("ETag")
        raise ApiError("the object keeps changing while it is downloaded")

    def _run(self, size: int, etag: str | None) -> Path:
        state = read_json(self.state_path)
        if (state is not None and state.get("source") == self.source and state.get("etag") == etag
                and state.get("size") == size and self.temporary.exists()
                and self.temporary.stat().st_size == size):
            self.done = Intervals(state.get("done"))
        else:
            self.done = Intervals()
            with self.temporary.open("wb") as out:
                out.truncate(size)
        self.size, self.etag = size, etag
        self._flush()
        descriptor = os.open(self.temporary, os.O_WRONLY)
        finished = threading.Event()
        # the state is written twice a second whatever the network does, so a killed run loses at most that
        flusher = threading.Thread(target=self._flush_until, args=(finished,), daemon=True)
        flusher.start()
        try:
            with TransferProgress(f"get {self.dest.name}", size, self.done.total(), enabled=self.show_progress) as bar:
                ranges = split(self.done.missing(size), self.jobs)
                try:
                    run_parallel(self.jobs, [lambda r=r: self._fetch(descriptor, r[0], r[1], bar) for r in ranges],
                                 self.stop)
                finally:
                    finished.set()
                    flusher.join()
                    self._flush()
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        return self._verify_and_rename()

    def _record(self, start: int, end: int) -> None:
        with self.lock:
            self.done.add(start, end)

    def _flush_until(self, finished: threading.Event) -> None:
        while not finished.wait(STATE_FLUSH_SECONDS):
            self._flush()

    def _flush(self) -> None:
        with self.lock:
            write_json(self.state_path, {"source": self.source, "etag": self.etag, "size": self.size,
                                         "done": [list(span) for span in self.done.spans]})

    def _fetch(self, descriptor: int, start: int, end: int, bar: TransferProgress) -> None:
        """Bytes [start, end) into the temporary file; a broken connection resumes where it stopped."""
        position, failures = start, 0
        while position < end:
            headers = {"Range": f"bytes={position}-{end - 1}"}
            if self.etag:
                headers["If-Range"] = self.etag
            try:
                with self.api.stream("GET", self.path, params=self.params, headers=headers) as response:
                    if response.status_code == 200:
                        raise ObjectChanged()
                    if response.status_code != 206 or not response.headers.get(
                            "Content-Range", "").startswith(f"bytes {position}-"):
                        raise ApiError(f"unexpected answer to a range request: {response.status_code}")
                    for block in response.iter_bytes(CHUNK):
                        if self.stop.is_set():
                            raise Interrupted()
                        block = block[:end - position]
                        os.pwrite(descriptor, block, position)
                        self._record(position, position + len(block))
                        position += len(block)
                        bar.advance(len(block))
                if position < end:
                    raise TransferBroken("the answer ended early")
            except TransferBroken:
                failures += 1
                if failures >= RANGE_ATTEMPTS:
                    raise ApiError(f"the download broke off {failures} times; run the command again to resume") \
                        from None
                time.sleep(min(5.0, 0.25 * 2 ** failures))

    def _verify_and_rename(self) -> Path:
        actual = sha256_of(self.temporary, self.stop)
        tagged = (self.etag or "").strip('"')
        wanted = self.expected or (tagged if SHA256_RE.fullmatch(tagged) else None)
        if wanted is not None and actual != wanted:
            self.temporary.unlink(missing_ok=True)
            self.state_path.unlink(missing_ok=True)
            raise ApiError(f"checksum mismatch: expected {wanted}, the downloaded bytes hash to {actual}; "
                           "nothing was written")
        os.replace(self.temporary, self.dest)
        self.state_path.unlink(missing_ok=True)
        return self.dest


def download(api: Api, path: str, params: dict[str, str], dest: str | None, fallback_name: str, *, jobs: int,
             show_progress: bool, expected_checksum: str | None = None, use_disposition: bool = False) -> Path:
    """Download into ``dest`` (a file, a directory, or the current directory); returns the file written."""
    try:
        head = api.request("HEAD", path, params=params, attempts=2)
    except ApiError as exc:
        if exc.status:  # a HEAD carries no problem body: the same GET says why
            try:
                api.request("GET", path, params=params, headers={"Range": "bytes=0-0"}, attempts=1)
            except ApiError as detailed:
                raise detailed from None
        raise
    size = int(head.headers.get("Content-Length", "0"))
    etag = head.headers.get("ETag")
    name = filename_of(head.headers.get("Content-Disposition"), fallback_name) if use_disposition else fallback_name
    target = destination(dest, name)
    if size == 0:  # no range to ask for: an empty body, still written beside and renamed
        response = api.request("GET", path, params=params)
        temporary = target.with_name(target.name + ".part")
        temporary.write_bytes(response.content)
        os.replace(temporary, target)
        return target
    return Download(api, path, params, target, jobs, show_progress, expected_checksum).run(size, etag)
