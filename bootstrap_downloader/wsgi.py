"""The WSGI app of the downloader service (`STORAGE_PROFILES` may override its profile)."""

from bootstrap_downloader import PROFILES
from storage_core.app import create_app

app = create_app(PROFILES)
