"""gunicorn configuration of the storage service: every figure comes from the STORAGE_* settings."""

from storage_core.serving import (  # noqa: F401 - gunicorn reads the hooks by name
    child_exit,
    gunicorn_options,
    post_fork,
    post_worker_init,
    prepare_metrics_dir,
    worker_exit,
)
from storage_core.settings import Settings

prepare_metrics_dir()
globals().update(gunicorn_options(Settings.from_env()))
