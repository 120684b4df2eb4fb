"""Entry point activating the `downloader` profile: the WSGI app, its gunicorn config and `__main__`."""

PROFILES = ("downloader",)
