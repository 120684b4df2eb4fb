"""HTTP blueprints: thin views that validate with schemas, call one service method and serialise.

Each storage-only blueprint is tagged ``@profile("storage")``; untagged ones run under every profile.
"""

from storage_core.blueprints import (
    access_keys,
    accounts,
    buckets,
    downloads,
    files,
    health,
    locations,
    objects,
    quota,
    uploads,
)

ALL_BLUEPRINTS = [
    health.blp,
    downloads.blp,
    quota.blp,
    locations.blp,
    buckets.blp,
    objects.blp,
    files.blp,
    accounts.blp,
    uploads.blp,
    access_keys.blp,
]
