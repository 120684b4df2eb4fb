"""Entry point activating the `storage` profile: the WSGI app, its gunicorn config and `__main__`."""

PROFILES = ("storage",)
