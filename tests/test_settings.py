from pathlib import Path

import pytest

from enrich.errors import ConfigError
from enrich.settings import load_settings


def test_enrich_home_moves_all_state(tmp_path):
    s = load_settings({"ENRICH_HOME": str(tmp_path)})
    assert s.home == tmp_path.resolve()
    assert s.warehouse == tmp_path.resolve() / "warehouse"


def test_environment_beats_config_beats_defaults(tmp_path):
    s = load_settings({"ENRICH_HOME": str(tmp_path)})
    assert s.model == "gemini-3.1-flash-lite"  # from config/enrich.toml
    s = load_settings({"ENRICH_HOME": str(tmp_path), "ENRICH_MODEL": "gemini-2.5-flash-lite",
                       "ENRICH_WAREHOUSE": str(tmp_path / "wh")})
    assert s.model == "gemini-2.5-flash-lite"
    assert s.warehouse == (tmp_path / "wh").resolve()


def test_google_api_key_wins_and_is_never_shown(tmp_path):
    s = load_settings({"ENRICH_HOME": str(tmp_path), "GEMINI_API_KEY": "AIzaSECRET-1", "GOOGLE_API_KEY": "AIzaSECRET-2"})
    assert s.api_key.get_secret_value() == "AIzaSECRET-2"
    assert "SECRET" not in repr(s) and "SECRET" not in str(s)


def test_base_url_from_sdk_variable(tmp_path):
    s = load_settings({"ENRICH_HOME": str(tmp_path), "GOOGLE_GEMINI_BASE_URL": "http://127.0.0.1:9"})
    assert s.base_url == "http://127.0.0.1:9"


def test_config_dir_can_be_moved(tmp_path):
    (tmp_path / "enrich.toml").write_text('[run]\nmodel = "gemini-2.5-flash"\nconcurrency = 3\n')
    s = load_settings({"ENRICH_HOME": str(tmp_path), "ENRICH_CONFIG_DIR": str(tmp_path)})
    assert (s.model, s.concurrency) == ("gemini-2.5-flash", 3)


def test_bad_values_are_config_errors(tmp_path):
    with pytest.raises(ConfigError):
        load_settings({"ENRICH_HOME": str(tmp_path), "ENRICH_CONCURRENCY": "many"})
    with pytest.raises(ConfigError):
        load_settings({"ENRICH_HOME": str(tmp_path)}).with_overrides(resolution="ultra")


def test_overrides_ignore_flags_not_given(tmp_path):
    s = load_settings({"ENRICH_HOME": str(tmp_path)})
    assert s.with_overrides(model=None, concurrency=4).model == s.model


def test_prefect_home_is_created_under_enrich_home(tmp_path):
    from enrich.prefect_env import configure_prefect_env

    env = {"ENRICH_HOME": str(tmp_path / "fresh" / "home")}
    configure_prefect_env(env)
    assert env["PREFECT_HOME"] == str(tmp_path / "fresh" / "home" / "prefect")
    assert (tmp_path / "fresh" / "home" / "prefect").is_dir()  # Prefect cannot make parents itself
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


def test_rpm_and_tpm_flags_override_the_models_rate_limits_and_zero_means_none(tmp_path):
    s = load_settings({"ENRICH_HOME": str(tmp_path)})
    assert (s.rate_limit().rpm, s.rate_limit().tpm) == (4000, 4_000_000)  # config/enrich.toml
    assert s.with_overrides(rpm=1200).rate_limit().rpm == 1200
    assert s.with_overrides(rpm=1200).rate_limit().tpm == 4_000_000
    assert (s.with_overrides(rpm=0, tpm=0).rate_limit().rpm, s.with_overrides(tpm=0).rate_limit().tpm) == (None, None)
    assert load_settings({"ENRICH_HOME": str(tmp_path), "ENRICH_RPM": "15"}).rate_limit().rpm == 15
    with pytest.raises(ConfigError):
        s.with_overrides(rpm=-1)


def test_retry_pacing_and_stop_settings_are_validated(tmp_path):
    s = load_settings({"ENRICH_HOME": str(tmp_path)})
    assert (s.backoff_initial_s, s.abort_after_failures, s.stop_grace_s, s.progress) == (1.0, 50, 10.0, "auto")
    for bad in ({"backoff_initial_s": 5, "backoff_max_s": 1}, {"abort_after_failures": 0}, {"progress": "loud"},
                {"rate_headroom": 1.0}, {"stop_grace_s": -1}):
        with pytest.raises(ConfigError):
            s.with_overrides(**bad)
