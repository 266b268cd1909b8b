from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from runtime.settings import Settings, describe_settings, load_settings


def test_env_vars_are_read_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRISM_KAFKA_BOOTSTRAP", "10.0.0.1:9092")
    monkeypatch.setenv("PRISM_PARTITIONS", "6")
    settings = Settings()
    assert settings.kafka_bootstrap == "10.0.0.1:9092"
    assert settings.partitions == 6
    assert settings.topic("scores") == "prism.scores"


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.partitions = 9  # type: ignore[misc]


def test_invalid_value_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRISM_ENCODING", "xml")
    with pytest.raises(ValidationError, match="encoding"):
        Settings()


def test_redis_password_is_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRISM_REDIS_URL", "redis://:s3cret@127.0.0.1:6379/0")
    assert "s3cret" not in repr(Settings())


def test_stack_file_is_a_fallback_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PRISM_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("PRISM_KAFKA_BOOTSTRAP", raising=False)
    (tmp_path / "stack.env").write_text(
        "PRISM_KAFKA_BOOTSTRAP=127.0.0.1:1111\nPRISM_REDIS_URL=redis://:pw@127.0.0.1:2222/0\n"
    )
    assert load_settings().kafka_bootstrap == "127.0.0.1:1111"
    assert load_settings(use_stack_file=False).kafka_bootstrap is None
    monkeypatch.setenv("PRISM_KAFKA_BOOTSTRAP", "127.0.0.1:3333")
    assert load_settings().kafka_bootstrap == "127.0.0.1:3333"


def test_help_lists_every_setting() -> None:
    text = describe_settings()
    for name in Settings.model_fields:
        assert f"PRISM_{name.upper()}" in text


def test_state_and_cache_dirs_follow_xdg_base_directories(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("PRISM_STATE_DIR", "PRISM_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    settings = Settings()
    assert settings.state_dir == tmp_path / "state" / "prism"
    assert settings.cache_dir == tmp_path / "cache" / "prism"
    assert settings.env_file == tmp_path / "state" / "prism" / "stack.env"
    monkeypatch.setenv("PRISM_STATE_DIR", str(tmp_path / "mine"))  # the explicit setting wins
    assert Settings().state_dir == tmp_path / "mine"


@pytest.mark.parametrize("value", [None, "", "relative/dir"])
def test_unset_empty_or_relative_xdg_falls_back_to_the_home_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str | None
) -> None:
    """The XDG spec: relative paths in these variables are invalid and ignored."""
    for name in ("PRISM_STATE_DIR", "PRISM_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("XDG_STATE_HOME", "XDG_CACHE_HOME"):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.state_dir == tmp_path / ".local" / "state" / "prism"
    assert settings.cache_dir == tmp_path / ".cache" / "prism"


def test_xdg_dir_reads_the_mapping_it_is_given() -> None:
    from runtime.settings import xdg_dir

    assert xdg_dir("XDG_CACHE_HOME", ".cache", {"XDG_CACHE_HOME": "/c"}) == Path("/c/prism")
    assert xdg_dir("XDG_CACHE_HOME", ".cache", {}) == Path.home() / ".cache" / "prism"
