"""Where the client finds its server and token: ``STORAGE_URL`` / ``STORAGE_TOKEN``, else its config file (0600)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_cache_path, user_config_path

APP = "storage-client"
MiB = 1024 * 1024
DEFAULT_PART_SIZE = 64 * MiB
MAX_PARTS = 10_000  # the native multipart API numbers parts 1..10000
MIN_PART_SIZE = 5 * MiB  # every part but the last (S3's rule, kept by the native API)
SIZE_RE = re.compile(r"\s*([0-9]+)\s*([kmgt]?)(i?b)?\s*", re.IGNORECASE)


class UsageError(Exception):
    """Bad usage: exit status 2."""


def parse_size(text: str, name: str) -> int:
    """``67108864``, ``64M``, ``64MiB`` -> bytes (binary multiples)."""
    match = SIZE_RE.fullmatch(text)
    if not match:
        raise UsageError(f"{name}: expected a size such as 67108864 or 64MiB, got {text!r}")
    value = int(match.group(1)) * 1024 ** " kmgt".index(match.group(2).lower() or " ")
    if value <= 0:
        raise UsageError(f"{name}: must be more than 0")
    return value


def config_path() -> Path:
    override = os.environ.get("STORAGE_CLIENT_CONFIG")
    return Path(override) if override else user_config_path(APP) / "config.json"


def cache_dir() -> Path:
    """Resumable upload state (``$XDG_CACHE_HOME/storage-client`` on Linux)."""
    return user_cache_path(APP)


@dataclass(frozen=True)
class ClientConfig:
    url: str
    token: str | None
    part_size: int


def load_file() -> dict[str, str]:
    path = config_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the config file {path}: {exc}") from None
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def load(url_override: str | None = None) -> ClientConfig:
    """The environment wins over the config file; a server URL is required."""
    stored = load_file()
    url = url_override or os.environ.get("STORAGE_URL") or stored.get("url")
    if not url:
        raise UsageError(f"no server configured: set STORAGE_URL or run `{APP} configure`")
    if not re.match(r"https?://", url):
        raise UsageError(f"the server URL must start with http:// or https://, got {url!r}")
    token = os.environ.get("STORAGE_TOKEN") or stored.get("token") or None
    part_size = parse_size(os.environ.get("STORAGE_CLIENT_PART_SIZE") or str(DEFAULT_PART_SIZE),
                           "STORAGE_CLIENT_PART_SIZE")
    if part_size < MIN_PART_SIZE:
        raise UsageError(f"STORAGE_CLIENT_PART_SIZE: parts are at least 5MiB (the server refuses smaller ones), "
                         f"got {part_size}")
    return ClientConfig(url.rstrip("/"), token, part_size)


def save(url: str, token: str | None) -> Path:
    """Write the config file readable by its owner only (the token is a credential)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = {"url": url.rstrip("/"), **({"token": token} if token else {})}
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)  # an existing file keeps its old mode through O_CREAT
        json.dump(data, out, indent=2)
        out.write("\n")
    return path
