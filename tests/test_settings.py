"""Settings: defaults, parsing, and a bad value stopping the start with the variable's name."""

from __future__ import annotations

import pytest

from storage_core.errors import ConfigurationError
from storage_core.settings import MiB, Settings, documentation_table


def test_defaults():
    settings = Settings.from_env({})
    assert settings.piece_size == 16 * MiB
    assert settings.bind == "127.0.0.1:8080"
    assert settings.effective_database_url.startswith("sqlite:///")


def test_nearline_settings_are_parsed():
    settings = Settings.from_env({"STORAGE_RESTORE_ON_READ": "off", "STORAGE_RESTORE_HOURS": "720",
                                  "STORAGE_RESTORE_POLL_SECONDS": "0.25",
                                  "STORAGE_EVENT_WEBHOOK_URL": "https://hooks.example.org/storage"})
    assert settings.restore_on_read is False and settings.restore_hours == 720
    assert settings.restore_poll_seconds == 0.25 and settings.event_webhook_url.startswith("https://")
    assert Settings.from_env({}).restore_on_read is True and Settings.from_env({}).restore_hours == 24


def test_values_are_parsed():
    settings = Settings.from_env({"STORAGE_PIECE_SIZE": "1048576", "STORAGE_AUTH_DISABLED": "true",
                                  "STORAGE_BIND": "0.0.0.0:9000", "STORAGE_LOG_LEVEL": "debug"})
    assert settings.piece_size == MiB and settings.auth_disabled is True
    assert settings.bind == "0.0.0.0:9000" and settings.log_level == "DEBUG"


@pytest.mark.parametrize("variable,value", [
    ("STORAGE_PIECE_SIZE", "abc"),
    ("STORAGE_PIECE_SIZE", "0"),
    ("STORAGE_WORKERS", "-1"),
    ("STORAGE_BIND", "localhost"),
    ("STORAGE_BIND", "host:99999"),
    ("STORAGE_AUTH_DISABLED", "maybe"),
    ("STORAGE_LOG_LEVEL", "LOUD"),
    ("STORAGE_FREE_READ_QUOTA", "1.5"),
    ("STORAGE_RESTORE_HOURS", "0"),
    ("STORAGE_RESTORE_HOURS", "721"),
    ("STORAGE_RESTORE_POLL_SECONDS", "soon"),
    ("STORAGE_RESTORE_POLL_SECONDS", "0"),
    ("STORAGE_RESTORE_RETRY_SECONDS", "inf"),
    ("STORAGE_RESTORE_WORKERS", "-1"),
    ("STORAGE_EVENT_WEBHOOK_URL", "ftp://example.org/hook"),
])
def test_bad_value_names_the_variable(variable, value):
    with pytest.raises(ConfigurationError, match=f"^{variable}: "):
        Settings.from_env({variable: value})


def test_bad_value_stops_the_service_command(monkeypatch, capsys):
    from bootstrap_storage.__main__ import main

    monkeypatch.setenv("STORAGE_PIECE_SIZE", "abc")
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    assert "STORAGE_PIECE_SIZE" in capsys.readouterr().err


def test_configuration_doc_lists_every_setting():
    from pathlib import Path

    doc = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    # regenerate with: python -m storage_core.settings
    assert documentation_table() in doc
