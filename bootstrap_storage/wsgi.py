"""The WSGI app of the storage service (`STORAGE_PROFILES` may override its profile)."""

from bootstrap_storage import PROFILES
from storage_core.app import create_wsgi

# the native app, and the S3 door on its own listener when STORAGE_S3_BIND is set
app = create_wsgi(PROFILES)
