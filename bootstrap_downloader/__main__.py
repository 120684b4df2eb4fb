"""`python -m bootstrap_downloader` / `downloader-service`: gunicorn with gevent workers."""

from pathlib import Path

from bootstrap_downloader import PROFILES
from storage_core.serving import run


def main() -> None:
    run("bootstrap_downloader", PROFILES, Path(__file__).with_name("gunicorn.conf.py"))


if __name__ == "__main__":
    main()
