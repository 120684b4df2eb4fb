"""Real bearer tokens for tests (as the Flask tutorial's ``AuthActions``): who a request acts as."""

from __future__ import annotations

from storage_core.auth import Authenticator
from storage_core.settings import Settings

# the suite's HS256 secret (tests that check other keys set their own)
TEST_JWT_SECRET = "suite-secret-of-at-least-thirty-two-characters"


class AuthActions:
    """Tokens signed by the service's own key, so requests go through real authentication."""

    def __init__(self, settings: Settings):
        self._authenticator = Authenticator(settings)

    def token(self, account: str, roles: list[str] | None = None, ttl: int = 3600) -> str:
        return self._authenticator.issue_token(account, roles or [], ttl)

    def headers(self, account: str, roles: list[str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(account, roles)}"}

    @property
    def admin(self) -> dict[str, str]:
        return self.headers("admin", ["admin"])
