"""The ``local`` location plugin: pieces as files under one root directory.

With ``config.restore_seconds`` it behaves as a nearline library (for development and tests): a piece
can be read only once a restore of it has been asked for and that many seconds have passed, and for
the days the restore was asked for.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates

from plugins import ExactReader, check_byte_range, check_piece_address, parse_piece_name
from storage_core.errors import NotRestored, PieceMissing, StorageUnavailable
from storage_core.plugin import READ_CHUNK, LocationPlugin, RestoreCapability, RestoreStatus

# Bytes copied from the upload stream per write; bounds memory per upload like READ_CHUNK does.
WRITE_CHUNK = 1024 * 1024
TEMP_PREFIX = ".tmp-"


class LocalConfigSchema(Schema):
    class Meta:
        unknown = RAISE

    root = fields.String(required=True)
    fsync = fields.Boolean(load_default=True)
    # set: a nearline location whose restores take this long (a tape library, for development and tests)
    restore_seconds = fields.Float(allow_none=True, validate=validate.Range(min=0, max=30 * 86400))

    @validates("root")
    def _absolute(self, value: str, **_: Any) -> None:
        # a relative root would move with the working directory of whichever process opens it
        if not os.path.isabs(value):
            raise ValidationError("must be an absolute path")
        if "\0" in value:
            raise ValidationError("must not contain NUL")


class LocalLocation(LocationPlugin):
    """Pieces at ``root/pieces/<c[0:2]>/<c[2:4]>/<checksum>.<index>``; two fan-out levels keep
    directories small (65,536 leaves) for millions of pieces."""

    name = "local"
    config_schema = LocalConfigSchema

    def __init__(self, config: Mapping[str, Any]):
        # validated here too so defaults (fsync) apply however the plugin is built
        super().__init__(self.validate_config(config))
        self.root = Path(self.config["root"])
        self._pieces = str(self.root / "pieces")
        self.fsync: bool = self.config["fsync"]
        # the root is created once, by prepare() when the location is added; a root missing later (an
        # unmounted volume, say) is a fault, and pieces are never written into the mount point below it
        # absent unless set, so that the configs of online locations stay as they were
        seconds = self.config.get("restore_seconds")
        self._restore = LocalRestore(self, seconds) if seconds is not None else None

    @property
    def restore_capability(self) -> RestoreCapability | None:
        return self._restore

    def _piece_name(self, checksum: str, index: int) -> str:
        check_piece_address(checksum, index)
        # a plain string: reads build one per block, and pathlib's parsing showed in profiles
        return f"{self._pieces}/{checksum[0:2]}/{checksum[2:4]}/{checksum}.{index}"

    def _piece_path(self, checksum: str, index: int) -> Path:
        return Path(self._piece_name(checksum, index))

    def write_piece(self, checksum: str, index: int, stream: BinaryIO, length: int) -> None:
        path = self._piece_path(checksum, index)
        check_byte_range(0, length)
        directory = path.parent
        try:
            self._make_fan_out(directory)
            fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
            # mkstemp makes 0600 files; a downloader may run as another user of the same group
            os.fchmod(fd, 0o640)
        except OSError as exc:
            raise StorageUnavailable(f"local location {self.root}: cannot create piece: {exc}") from exc

        reader = ExactReader(stream, length)
        try:
            if not self._take_spooled(stream, length, fd, tmp_name):
                with os.fdopen(fd, "wb") as out:
                    while reader.remaining:
                        out.write(reader.read(WRITE_CHUNK))
                    if self.fsync:
                        out.flush()
                        os.fsync(out.fileno())
            # readers see either no piece or the whole piece, never a partial one
            os.replace(tmp_name, path)
            if self.fsync:
                # the rename is durable only once the directory entry is
                self._fsync_dir(directory)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            if isinstance(exc, OSError) and exc is not reader.source_error:
                raise StorageUnavailable(f"local location {self.root}: write failed: {exc}") from exc
            raise

    def _take_spooled(self, stream: BinaryIO, length: int, fd: int, tmp_name: str) -> bool:
        """A piece of an upload's spool (``storage_core.spool.PieceStream``) is taken without its bytes
        passing through Python: its file hard-linked as the temporary file (same filesystem, first
        location), else copied by the kernel into it. False for any other stream (the caller copies);
        on True ``fd`` is closed and ``tmp_name`` holds the piece, fsynced when the location fsyncs."""
        link_to, copy_to = getattr(stream, "link_to", None), getattr(stream, "copy_to", None)
        if link_to is None or copy_to is None:
            return False
        os.close(fd)
        os.unlink(tmp_name)
        if link_to(tmp_name):
            fd = os.open(tmp_name, os.O_RDONLY)
            try:
                os.fchmod(fd, 0o640)
                if self.fsync:  # the spool synced it as it was written: cheap
                    os.fsync(fd)
            finally:
                os.close(fd)
            return True
        fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            copied = copy_to(fd)
            if copied != length:
                raise StorageUnavailable(f"upload stream ended after {copied} of {length} bytes")
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def _make_fan_out(self, directory: Path) -> None:
        """The fan-out directories of a piece, never the root: a missing root is a fault (``prepare``)."""
        if directory.is_dir():
            return
        if not self.root.is_dir():
            raise StorageUnavailable(f"local location root {self.root} is missing (an unmounted volume?); "
                                     "it is created only when the location is added")
        os.makedirs(directory, exist_ok=True)
        self._fsync_new_dirs(directory)

    def _fsync_new_dirs(self, directory: Path) -> None:
        """Make freshly created fan-out directories durable (their entries live in their parents)."""
        if not self.fsync:
            return
        for parent in (directory.parent, directory.parent.parent, self.root):
            self._fsync_dir(parent)

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    can_open_pieces = True

    def open_piece(self, checksum: str, index: int) -> int:
        path = self._piece_name(checksum, index)
        if self._restore is not None:
            self._restore.require_restored(checksum, index)
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not self.root.is_dir():
                # the whole location is gone (unmounted volume, removed directory): not one lost piece
                raise StorageUnavailable(f"local location {self.root} does not exist") from None
            raise PieceMissing(f"piece {checksum}.{index} not found on {self.root}") from None
        except OSError as exc:
            raise StorageUnavailable(f"local location {self.root}: cannot open piece: {exc}") from exc

    def read_piece(self, checksum: str, index: int, offset: int, length: int) -> Iterator[bytes]:
        check_byte_range(offset, length)
        fd = self.open_piece(checksum, index)
        # the finally closes the file when the generator is closed or collected before the end
        try:
            position, remaining = offset, length
            try:
                size = os.fstat(fd).st_size
            except OSError as exc:
                raise StorageUnavailable(f"local location {self.root}: {exc}") from exc
            if size < offset + length:
                raise PieceMissing(
                    f"piece {checksum}.{index} on {self.root} is truncated: "
                    f"{size} bytes, {offset + length} needed"
                )
            while remaining:
                try:
                    # pread needs no seek state, so a short read cannot desynchronise the offset
                    chunk = os.pread(fd, min(READ_CHUNK, remaining), position)
                except OSError as exc:
                    raise StorageUnavailable(f"local location {self.root}: read failed: {exc}") from exc
                if not chunk:
                    # shrank after the size check; another copy may still be whole
                    raise PieceMissing(f"piece {checksum}.{index} on {self.root} is truncated")
                position += len(chunk)
                remaining -= len(chunk)
                yield chunk
        finally:
            os.close(fd)

    def delete_piece(self, checksum: str, index: int) -> None:
        path = self._piece_path(checksum, index)
        try:
            os.unlink(path)
            if self._restore is not None:
                self._restore.forget(checksum, index)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageUnavailable(f"local location {self.root}: delete failed: {exc}") from exc

    can_move_pieces = True
    writes_in_threads = True  # a piece is its own files and descriptors

    def move_piece(self, checksum: str, index: int, new_checksum: str, new_index: int) -> None:
        source, target = self._piece_path(checksum, index), self._piece_path(new_checksum, new_index)
        try:
            self._make_fan_out(target.parent)
            os.replace(source, target)
            if self.fsync:
                self._fsync_dir(target.parent)
        except FileNotFoundError:
            raise PieceMissing(f"piece {checksum}.{index} not found on {self.root}") from None
        except OSError as exc:
            raise StorageUnavailable(f"local location {self.root}: move failed: {exc}") from exc

    def piece_exists(self, checksum: str, index: int) -> bool:
        path = self._piece_path(checksum, index)
        try:
            return path.is_file()
        except OSError as exc:
            raise StorageUnavailable(f"local location {self.root}: {exc}") from exc

    def prepare(self) -> None:
        try:
            existed = self.root.is_dir()
            os.makedirs(self.root, exist_ok=True)
            if not existed and self.fsync:
                self._fsync_dir(self.root.parent)
        except OSError as exc:
            raise StorageUnavailable(f"local location root {self.root} cannot be created: {exc.strerror}") from exc
        self.health()

    def health(self) -> None:
        if not self.root.is_dir():
            raise StorageUnavailable(f"local location root {self.root} is missing or not a directory")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageUnavailable(f"local location root {self.root} is not writable")

    def list_pieces(self) -> Iterator[tuple[str, int]]:
        # a missing root may be an unmounted volume: listing it as empty could pass for "every
        # piece is lost", so it fails like health() does
        self.health()
        # directories that vanish during the walk (a concurrent delete) count as empty
        for first in _subdirs(self.root / "pieces"):
            for second in _subdirs(first):
                for entry in _entries(second):
                    parsed = parse_piece_name(entry.name)
                    # the fan-out must match the name, or the piece is not where reads look for it
                    if (
                        parsed is not None
                        and parsed[0][0:2] == first.name
                        and parsed[0][2:4] == second.name
                        and entry.is_file(follow_symlinks=False)
                    ):
                        yield parsed

    def remove_partial_writes(self, older_than: float) -> int:
        """Remove temporary files of writes whose process died (modified before ``older_than``)."""
        self.health()
        removed = 0
        for first in _subdirs(self.root / "pieces"):
            for second in _subdirs(first):
                for entry in _entries(second):
                    if not entry.name.startswith(TEMP_PREFIX):
                        continue
                    try:
                        modified = entry.stat(follow_symlinks=False).st_mtime
                    except FileNotFoundError:
                        continue  # the write finished (renamed into place) or failed since the scan
                    if modified < older_than:
                        Path(entry.path).unlink(missing_ok=True)
                        removed += 1
        return removed


def _entries(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as it:
            return list(it)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StorageUnavailable(f"cannot list {directory}: {exc}") from exc


def _subdirs(directory: Path) -> Iterator[Path]:
    for entry in _entries(directory):
        if entry.is_dir(follow_symlinks=False):
            yield Path(entry.path)


class LocalRestore(RestoreCapability):
    """Restores of a local location acting as a nearline library: a restore of a piece is a marker file
    ``root/restores/<c[0:2]>/<checksum>.<index>`` with the times it becomes readable and unreadable again.

    Each restore actually started (not one already under way or done) is also appended to
    ``root/restores/requests.log``, as a library's audit log would be: tests count restores with it.
    """

    storage_class = "GLACIER"

    def __init__(self, location: LocalLocation, seconds: float):
        self.location = location
        self.seconds = seconds
        self._dir = location.root / "restores"

    @property
    def estimate_seconds(self) -> float:
        return self.seconds

    @property
    def check_every_seconds(self) -> float:
        # the marker says exactly when the piece is ready; asking costs a file read
        return max(self.seconds, 0.05)

    def _marker(self, checksum: str, index: int) -> Path:
        check_piece_address(checksum, index)
        return self._dir / checksum[0:2] / f"{checksum}.{index}"

    def _read(self, checksum: str, index: int) -> dict[str, float] | None:
        try:
            return json.loads(self._marker(checksum, index).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StorageUnavailable(f"local location {self.location.root}: restore marker: {exc}") from exc

    def start(self, checksum: str, index: int, days: int) -> None:
        if not self.location.piece_exists(checksum, index):
            raise PieceMissing(f"piece {checksum}.{index} not found on {self.location.root}")
        now = time.time()
        marker = self._read(checksum, index)
        if marker is not None and now < marker["expires_at"]:
            return  # under way or readable: kept as it is
        path = self._marker(checksum, index)
        data = json.dumps({"requested_at": now, "ready_at": now + self.seconds,
                           "expires_at": now + self.seconds + days * 86400})
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
            with os.fdopen(fd, "w") as out:
                out.write(data)
            try:
                if marker is None:
                    # a link fails if the marker appeared meanwhile: two starts cannot both count
                    os.link(tmp, path)
                else:
                    os.replace(tmp, path)
                    tmp = ""
            except FileExistsError:
                return
            finally:
                if tmp:
                    os.unlink(tmp)
            # O_APPEND: lines of several processes never interleave
            with open(self._dir / "requests.log", "a") as log:
                log.write(f"{now:.6f} {checksum} {index}\n")
        except OSError as exc:
            raise StorageUnavailable(f"local location {self.location.root}: cannot start restore: {exc}") from exc

    def status(self, checksum: str, index: int) -> RestoreStatus:
        if not self.location.piece_exists(checksum, index):
            raise PieceMissing(f"piece {checksum}.{index} not found on {self.location.root}")
        marker = self._read(checksum, index)
        now = time.time()
        if marker is None or now >= marker["expires_at"]:
            return RestoreStatus(RestoreStatus.ARCHIVED)
        if now < marker["ready_at"]:
            return RestoreStatus(RestoreStatus.RESTORING, ready_in=marker["ready_at"] - now)
        return RestoreStatus(RestoreStatus.RESTORED,
                             expires_at=dt.datetime.fromtimestamp(marker["expires_at"], dt.UTC))

    def require_restored(self, checksum: str, index: int) -> None:
        marker = self._read(checksum, index)
        now = time.time()
        if marker is None or not marker["ready_at"] <= now < marker["expires_at"]:
            raise NotRestored(f"piece {checksum}.{index} on nearline location {self.location.root} "
                              "is not restored")

    def forget(self, checksum: str, index: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._marker(checksum, index).unlink()
