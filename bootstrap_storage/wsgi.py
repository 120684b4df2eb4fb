"""The WSGI app of the storage service (`STORAGE_PROFILES` may override its profile)."""

from bootstrap_storage import PROFILES
from storage_core.app import create_app

app = create_app(PROFILES)
