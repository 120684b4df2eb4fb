"""Profile registry: profile names, tagging of blueprints and services, activation from the environment.

Profiles work like Spring's ``@Profile``: an object is tagged with an expression such as
``"storage"``, ``"!downloader"`` or ``"storage, downloader"`` (a comma means *any of*), and the
app factory registers only what matches the active profiles. Untagged objects are always active.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TypeVar

from storage_core.errors import ConfigurationError

STORAGE = "storage"
DOWNLOADER = "downloader"
KNOWN_PROFILES = frozenset({STORAGE, DOWNLOADER})
ENV_VAR = "STORAGE_PROFILES"

T = TypeVar("T")


def parse_names(value: str | Iterable[str]) -> frozenset[str]:
    """Profile names from a comma-separated string (or an iterable); unknown names are an error."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = frozenset(item.strip() for item in items if item.strip())
    unknown = names - KNOWN_PROFILES
    if unknown:
        raise ConfigurationError(
            f"{ENV_VAR}: unknown profile(s) {', '.join(sorted(unknown))}; "
            f"known profiles are {', '.join(sorted(KNOWN_PROFILES))}"
        )
    if not names:
        raise ConfigurationError(f"{ENV_VAR}: no profile given")
    return names


def active_profiles(default: Iterable[str], environ: dict[str, str] | None = None) -> frozenset[str]:
    """The bootstrap's profiles, unless ``STORAGE_PROFILES`` overrides them."""
    env = os.environ if environ is None else environ
    override = env.get(ENV_VAR, "").strip()
    return parse_names(override) if override else parse_names(default)


def matches(expression: str | None, active: frozenset[str]) -> bool:
    """Whether a profile expression holds for the active profiles (``None`` always holds)."""
    if expression is None:
        return True
    terms = [term.strip() for term in expression.split(",") if term.strip()]
    if not terms:
        raise ConfigurationError(f"empty profile expression {expression!r}")
    for term in terms:
        negated = term.startswith("!")
        name = term[1:].strip() if negated else term
        parse_names([name])  # unknown names in code are bugs: fail at start, loudly
        if (name in active) != negated:
            return True
    return False


def profile(expression: str) -> Callable[[T], T]:
    """Tag a blueprint, service class or function with a profile expression."""
    matches(expression, frozenset())  # validate now, at import time

    def tag(obj: T) -> T:
        obj.__profile__ = expression
        return obj

    return tag


def expression_of(obj: object) -> str | None:
    return getattr(obj, "__profile__", None)


def is_active(obj: object, active: frozenset[str]) -> bool:
    return matches(expression_of(obj), active)
