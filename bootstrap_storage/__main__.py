"""`python -m bootstrap_storage` / `storage-service`: gunicorn with gevent workers."""

from pathlib import Path

from bootstrap_storage import PROFILES
from storage_core.serving import run


def main() -> None:
    run("bootstrap_storage", PROFILES, Path(__file__).with_name("gunicorn.conf.py"))


if __name__ == "__main__":
    main()
