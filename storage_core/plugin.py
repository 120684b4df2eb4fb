"""The storage location plugin interface and the registry that finds plugins by entry point."""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, BinaryIO, ClassVar

from marshmallow import Schema, ValidationError

from storage_core.errors import InvalidArgument, NotRestored, PieceMissing, StorageUnavailable

ENTRY_POINT_GROUP = "storage_core.plugins"

# A block read from a plugin is never larger than this, so memory per stream stays bounded.
READ_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RestoreStatus:
    """Where the restore of one piece of a nearline location stands."""

    ARCHIVED = "archived"  # not readable: a restore must be started
    RESTORING = "restoring"  # a restore is under way
    RESTORED = "restored"  # readable until ``expires_at`` (None: for as long as it stays there)

    state: str
    ready_in: float | None = None  # seconds until restored, when the location can tell
    expires_at: dt.datetime | None = None


class RestoreCapability(abc.ABC):
    """What a nearline location can do about its pieces, which cannot be read before they are restored.

    A plugin whose pieces are read directly has none (``LocationPlugin.restore_capability`` is None):
    callers ask, and never get a restore that quietly does nothing.
    """

    #: the storage class an S3 client is shown for copies here (x-amz-storage-class), e.g. GLACIER
    storage_class: ClassVar[str] = "GLACIER"

    @property
    @abc.abstractmethod
    def estimate_seconds(self) -> float:
        """A typical restore time: the Retry-After of downloads waiting for it."""

    @property
    @abc.abstractmethod
    def check_every_seconds(self) -> float:
        """How often a restore under way is asked how it stands (each ask may cost a request)."""

    @abc.abstractmethod
    def start(self, checksum: str, index: int, days: int) -> None:
        """Ask for the piece to be readable for ``days``. Idempotent: a restore under way or done is kept."""

    @abc.abstractmethod
    def status(self, checksum: str, index: int) -> RestoreStatus:
        """How the restore of the piece stands; ``PieceMissing`` if the piece is not here."""


class LocationPlugin(abc.ABC):
    """One storage location. Pieces are addressed by (file checksum, piece index) only.

    Implementations raise ``PieceMissing`` when a piece is absent and ``StorageUnavailable`` for
    any other failure to reach the location; callers fail over to another copy on both.
    """

    #: name used in ``StorageLocation.plugin`` and in the entry-point group
    name: ClassVar[str]
    #: marshmallow schema validating (and loading) the plugin's configuration
    config_schema: ClassVar[type[Schema]]
    #: configuration fields that are accepted but never returned by the API
    secret_fields: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: Mapping[str, Any]):
        self.config = dict(config)

    @classmethod
    def validate_config(cls, config: Any) -> dict[str, Any]:
        """Load ``config`` with the plugin's schema; ``InvalidArgument`` names the bad fields."""
        if not isinstance(config, Mapping):
            raise InvalidArgument("config must be an object")
        try:
            return cls.config_schema().load(config)
        except ValidationError as exc:
            raise InvalidArgument(f"invalid {cls.name} config: {exc.messages}") from exc

    @classmethod
    def public_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """The configuration without its secrets, fit for an API answer."""
        return {k: v for k, v in config.items() if k not in cls.secret_fields}

    @property
    def restore_capability(self) -> RestoreCapability | None:
        """The restore capability when this location is nearline (its pieces must be restored before they
        are read, and reading one that is not raises ``NotRestored``); None when pieces are read directly."""
        return None

    @abc.abstractmethod
    def write_piece(self, checksum: str, index: int, stream: BinaryIO, length: int) -> None:
        """Store exactly ``length`` bytes read from ``stream`` as the piece, atomically."""

    @abc.abstractmethod
    def read_piece(self, checksum: str, index: int, offset: int, length: int) -> Iterator[bytes]:
        """Yield ``length`` bytes of the piece from ``offset``, in chunks of at most READ_CHUNK."""

    #: whether ``open_piece`` hands out a piece as an OS file descriptor (a file on a local file system):
    #: downloads then hash it mapped and give it to the socket with sendfile, instead of copying every byte
    #: through Python twice; callers that need bytes use ``read_piece`` whatever this says
    can_open_pieces: ClassVar[bool] = False

    def open_piece(self, checksum: str, index: int) -> int:
        """An open, read-only file descriptor of the piece (the caller closes it); ``PieceMissing`` or
        ``StorageUnavailable`` as ``read_piece``. Only when ``can_open_pieces``."""
        raise NotImplementedError(f"{self.name} cannot open pieces as files")

    @abc.abstractmethod
    def delete_piece(self, checksum: str, index: int) -> None:
        """Remove the piece; removing an absent piece is not an error."""

    @abc.abstractmethod
    def piece_exists(self, checksum: str, index: int) -> bool:
        """Whether the piece is stored here."""

    @abc.abstractmethod
    def health(self) -> None:
        """Raise ``StorageUnavailable`` when the location cannot serve."""

    #: whether ``write_piece`` may run on several real threads at once (an upload writes its pieces in
    #: parallel, so that their fsyncs share journal commits); False for a plugin whose client is bound to
    #: the event loop
    writes_in_threads: ClassVar[bool] = False

    #: whether ``move_piece`` renames a piece where it lies (no bytes through the service); callers that
    #: need a piece under another name copy it themselves when this is False
    can_move_pieces: ClassVar[bool] = False

    def move_piece(self, checksum: str, index: int, new_checksum: str, new_index: int) -> None:
        """Give a stored piece another address (multipart Complete: a part's pieces become the file's)."""
        raise NotImplementedError(f"{self.name} cannot move pieces")

    def prepare(self) -> None:
        """Make a new location ready to hold pieces, once, when it is added; raise ``StorageUnavailable``
        with the reason when it still cannot serve (unreachable, refused credentials, no bucket).

        Whatever a location needs that its plugin can create is created here and only here (a local
        root, an S3 bucket with ``create_bucket``), so that its absence later is a fault, not a new
        location. The default only checks ``health()``.
        """
        self.health()

    def list_pieces(self) -> Iterator[tuple[str, int]]:
        """Yield ``(checksum, index)`` of every piece stored here (for garbage collection)."""
        raise NotImplementedError(f"{self.name} cannot list pieces")

    def remove_partial_writes(self, older_than: float) -> int:
        """Remove leftovers of writes interrupted by a crash, older than ``older_than`` (epoch seconds).

        Plugins whose writes leave nothing behind (or whose backend expires them) keep this default.
        """
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; called when the location's configuration changes."""


class PluginRegistry:
    """Plugin classes by name, as registered in the ``storage_core.plugins`` entry-point group."""

    def __init__(self, plugins: Mapping[str, type[LocationPlugin]]):
        self._plugins = dict(plugins)

    @classmethod
    def from_entry_points(cls) -> PluginRegistry:
        plugins = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            plugin = ep.load()
            if not (isinstance(plugin, type) and issubclass(plugin, LocationPlugin)):
                raise TypeError(f"entry point {ep.name!r} does not name a LocationPlugin subclass")
            plugins[ep.name] = plugin
        return cls(plugins)

    def names(self) -> list[str]:
        return sorted(self._plugins)

    def get(self, name: str) -> type[LocationPlugin]:
        try:
            return self._plugins[name]
        except KeyError:
            raise InvalidArgument(
                f"unknown plugin {name!r}; available: {', '.join(self.names()) or 'none'}"
            ) from None


__all__ = [
    "ENTRY_POINT_GROUP",
    "READ_CHUNK",
    "LocationPlugin",
    "NotRestored",
    "PieceMissing",
    "PluginRegistry",
    "RestoreCapability",
    "RestoreStatus",
    "StorageUnavailable",
]
