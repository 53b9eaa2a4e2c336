"""Per-user settings (JSON store outside Slicer) and versioned cache folders."""

from __future__ import annotations

import pytest

from paranasal_ssl import __version__
from ParanasalSSLLib import settings


def test_model_folder_is_remembered_across_instances(tmp_path):
    path = tmp_path / "cfg" / "settings.json"
    first = settings.Settings(settings.JsonStore(path))
    assert first.modelFolder == "" and first.get("Device") == "auto"
    first.modelFolder = tmp_path / "models" / "demo"
    first.set("Device", "cpu")
    second = settings.Settings(settings.JsonStore(path))  # a new session
    assert second.modelFolder == str(tmp_path / "models" / "demo")
    assert second.get("Device") == "cpu"
    with pytest.raises(KeyError, match="unknown setting"):
        second.set("Typo", 1)


def test_a_damaged_settings_file_falls_back_to_defaults_and_is_rewritten(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text("{not json")
    s = settings.Settings(settings.JsonStore(path))
    assert s.modelFolder == ""
    s.modelFolder = "/data/model"
    assert settings.Settings(settings.JsonStore(path)).modelFolder == "/data/model"


def test_outside_slicer_the_store_is_the_json_file(monkeypatch, tmp_path):
    monkeypatch.setenv("PARANASAL_SETTINGS", str(tmp_path / "s.json"))
    store = settings.defaultStore()
    assert isinstance(store, settings.JsonStore) and store.path == tmp_path / "s.json"


def test_caches_are_per_user_and_versioned(monkeypatch, tmp_path):
    monkeypatch.setenv("PARANASAL_CACHE", str(tmp_path / "cache"))
    assert settings.modelCacheFolder() == tmp_path / "cache" / "models" / f"v{__version__}"
    assert settings.sampleDataCacheFolder("9.9") == tmp_path / "cache" / "sample-data" / "v9.9"
    monkeypatch.delenv("PARANASAL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if settings.sys.platform.startswith("linux"):
        assert settings.userCacheRoot() == tmp_path / "xdg" / "ParanasalSSL"
    else:
        assert settings.userCacheRoot().name == "ParanasalSSL"
