from __future__ import annotations

from pathlib import Path

import pytest

from medcycle.errors import ConfigError
from medcycle.settings import DEFAULT_SECRET, Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MEDCYCLE_HOME", str(tmp_path / "home"))


def test_defaults_live_in_the_home(tmp_path: Path) -> None:
    s = load_settings()
    assert s.home == (tmp_path / "home").resolve()
    assert s.resolved_database_url == f"sqlite:///{s.home / 'medcycle.db'}"
    assert s.resolved_object_store_url == (s.home / "objects").as_uri()
    assert s.queue_url == "embedded"
    assert s.auth_enabled is True
    assert type(s) is Settings


def test_layers_file_then_env_then_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[medcycle]\nport = 9000\nlog_level = "debug"\nqueue_url = "redis://file:6379/0"\n')
    s = load_settings(cfg)
    assert (s.port, s.log_level, s.queue_url) == (9000, "DEBUG", "redis://file:6379/0")
    monkeypatch.setenv("MEDCYCLE_PORT", "9100")
    s = load_settings(cfg)
    assert s.port == 9100 and s.queue_url == "redis://file:6379/0"
    s = load_settings(cfg, port=9200, queue_url=None)
    assert s.port == 9200 and s.queue_url == "redis://file:6379/0"


def test_config_file_in_home_and_env_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("port = 8111\n")
    assert load_settings().port == 8111
    other = tmp_path / "other.toml"
    other.write_text("port = 8222\n")
    monkeypatch.setenv("MEDCYCLE_CONFIG", str(other))
    assert load_settings().port == 8222


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("port = 'x'\n", "port"),
        ("no_such_setting = 1\n", "no_such_setting"),
        ("port = [\n", "not valid TOML"),
        ("port = 70000\n", "port"),
    ],
)
def test_bad_config_file_names_the_problem(tmp_path: Path, content: str, needle: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(content)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert needle in err.value.message
    assert str(cfg) in err.value.message
    assert err.value.hint


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_default_secret_refused_outside_development(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(environment="production")
    assert "SECRET_KEY" in err.value.message
    monkeypatch.setenv("MEDCYCLE_SECRET_KEY", "a-long-random-production-secret-0123456789")
    s = load_settings(environment="production")
    assert s.secret_key.get_secret_value() != DEFAULT_SECRET
    assert "production-secret" not in repr(s)


def test_settings_are_never_built_at_import() -> None:
    import medcycle
    import medcycle.settings as mod

    assert not any(isinstance(v, Settings) for v in vars(mod).values())
    assert not any(isinstance(v, Settings) for v in vars(medcycle).values())
