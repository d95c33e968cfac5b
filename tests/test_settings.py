"""Settings: every variable of the original description, its default, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from aifactory.settings import (
    Settings,
    SettingsError,
    configuration_markdown,
    load_settings,
    mask_secrets,
    mask_url,
)

# Every environment variable the original product description names, with its documented default.
SEED_DEFAULTS = {
    "MAX_GENERATE_TOKENS": None,
    "MAX_CRAWLER_WORKERS": None,
    "ENABLE_TORCH_COMPILE": False,
    "ENABLE_RSS_COLLECTOR": True,
    "ENABLE_NEWS_COLLECTOR": True,
    "ENABLE_ARXIV_COLLECTOR": True,
    "ENABLE_DOCS_COLLECTOR": True,
    "NEWS_FEEDS": [],
    "HN_ITEMS": 15,
    "ENABLE_AUTO_DISCOVERY": False,
    "AUTO_DISCOVERY_QUERIES": [],
    "AUTO_DISCOVERY_SEEDS_PER_CYCLE": 24,
    "AUTO_DISCOVERY_RESULTS_PER_QUERY": 8,
    "ARXIV_QUERY": "cat:cs.LG OR cat:cs.CL OR cat:cs.AI",
    "ARXIV_MAX_RESULTS": 30,
    "DOC_SEED_URLS": [],
    "MODEL_SIZE": None,
    "TRAIN_STEPS_PER_CYCLE": 50,
    "TRAIN_GRAD_ACCUM_STEPS": 1,
    "TRAIN_WARMUP_STEPS": 20,
    "VAL_EVAL_EVERY": 25,
    "VAL_EVAL_BATCHES": 20,
    "EARLY_STOPPING_PATIENCE": 6,
    "ENABLE_RAG": True,
    "EVAL_SAVE_TO_DB": True,
    "COLLECTION_INCLUDE_MASTER": True,
    "MAX_CRAWL_PAGES_PER_CYCLE": 200,
    "PROMOTION_MIN_SCORE": 0.25,  # the original said 0.72; recalibrated for this score (docs/evaluation.md)
    "FORCE_PROMOTE": False,
    "USE_PRODUCTION_MODEL": True,
    "PYTORCH_CPU_THREADS": None,
    "TRAIN_BATCH_SIZE": None,
    "SPM_NUM_THREADS": None,
    "AUTO_TUNE": True,
    "AUTO_TUNE_REALTIME": True,
    "CRAWLER_RESPECT_ROBOTS": True,
    "CRAWLER_DOMAIN_MIN_INTERVAL_SEC": 0.5,
    "CRAWLER_DOMAIN_CONCURRENCY": 2,
    "CRAWLER_BATCH_SLEEP_SEC": 0.6,
    "ADMIN_API_TOKEN": "",
    "ENABLE_TEXT_DEDUP": True,
    "MIN_TRAIN_CHARS": 120,
    "SOURCE_WEIGHT_WIKIPEDIA": 1.4,
    "SOURCE_WEIGHT_ARXIV": 1.35,
    "SOURCE_WEIGHT_DOCS": 1.3,
    "SOURCE_WEIGHT_NEWS": 1.25,
    "SOURCE_WEIGHT_RSS": 1.1,
    "SOURCE_WEIGHT_WEB": 1.0,
    "QUALITY_WEIGHT_FLOOR": 0.35,
    "QUALITY_WEIGHT_BOOST": 0.9,
    "TRAIN_RETRY_MAX": 2,
    "TRAIN_RETRY_BACKOFF_SEC": 2.0,
    "ENABLE_CPU_QUANTIZATION": False,
    "TRAIN_SEED": 42,
    "DATABASE_URL": "",
}
PROJECT_SETTINGS = ["DATA_DIR", "HOST", "PORT", "SYSTEM_ROLE", "NODE_ID", "NODE_HEARTBEAT_INTERVAL_SEC"]


def clean(**values: object) -> Settings:
    return load_settings(_env_file=None, **values)


def test_every_seed_variable_exists_with_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SEED_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    settings = clean()
    for name, default in SEED_DEFAULTS.items():
        value = getattr(settings, name.lower())
        if name == "ADMIN_API_TOKEN":
            value = value.get_secret_value()
        assert value == default, name
    for name in PROJECT_SETTINGS:
        assert name.lower() in Settings.model_fields


def test_every_setting_has_a_one_line_description() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description and "\n" not in field.description, name


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("CRAWLER_RESPECT_ROBOTS", "0")
    monkeypatch.setenv("RSS_FEEDS", "https://a.example/feed, https://b.example/rss ,")
    monkeypatch.setenv("MODEL_SIZE", "auto")
    monkeypatch.setenv("TRAIN_BATCH_SIZE", "")
    settings = clean()
    assert settings.port == 9001 and settings.crawler_respect_robots is False
    assert settings.rss_feeds == ["https://a.example/feed", "https://b.example/rss"]
    assert settings.model_size is None and settings.train_batch_size is None


def test_dotenv_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HN_ITEMS", raising=False)
    env = tmp_path / ".env"
    env.write_text("HN_ITEMS=42\nMODEL_SIZE=tiny\n")
    settings = load_settings(_env_file=env)
    assert settings.hn_items == 42 and settings.model_size == "tiny"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("PORT", "abc", "accepted: a whole number >= 1 and <= 65535"),
        ("PORT", "70000", "<= 65535"),
        ("MODEL_SIZE", "huge", "one of tiny, small, base, medium"),
        ("PROMOTION_MIN_SCORE", "1.5", "<= 1"),
        ("CRAWLER_RESPECT_ROBOTS", "maybe", "1/0, true/false"),
        ("DATABASE_URL", "mysql://x", "must start with sqlite:/// or postgresql://"),
        ("MAX_CRAWLER_WORKERS", "0", ">= 1"),
    ],
)
def test_invalid_values_name_the_variable_and_what_it_accepts(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as error:
        clean()
    message = str(error.value)
    assert message.startswith(f"invalid setting {variable}={value!r}")
    assert expected in message


def test_all_invalid_values_are_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "-1")
    monkeypatch.setenv("TRAIN_LR", "0")
    with pytest.raises(SettingsError) as error:
        clean()
    assert "PORT" in str(error.value) and "TRAIN_LR" in str(error.value)


def test_derived_values() -> None:
    settings = clean(data_dir=Path("/srv/factory"), train_lang_only="JA, en")
    assert settings.resolved_database_url() == "sqlite:////srv/factory/aifactory.db"
    assert not settings.is_postgres
    assert settings.languages() == ["ja", "en"]
    assert clean(train_lang_only="").languages() == []
    assert settings.source_weight("wikipedia") == 1.4 and settings.source_weight("unheard-of") == 1.0
    assert clean(host="0.0.0.0").host_is_loopback is False
    assert clean(host="::1").host_is_loopback and clean(host="localhost").host_is_loopback
    assert clean(database_url="postgres://u:p@h/db").is_postgres


def test_database_passwords_are_masked() -> None:
    assert mask_url("postgresql://llm:secret@db:5432/llm") == "postgresql://llm:***@db:5432/llm"
    assert mask_url("postgresql://llm@db/llm") == "postgresql://llm@db/llm"
    assert mask_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_configuration_doc_is_generated_from_the_settings() -> None:
    doc = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
    assert doc.read_text() == configuration_markdown() + "\n", (
        "docs/configuration.md is out of date: run `make docs` (aifactory config --markdown)"
    )
    for name in SEED_DEFAULTS:
        assert f"`{name}`" in doc.read_text()


def test_settings_that_misbehave_together_are_refused_naming_both() -> None:
    """Each is valid alone: a heartbeat every hour is fine, but not with a two-minute offline window."""
    with pytest.raises(SettingsError) as error:
        clean(node_heartbeat_interval_sec=3600, node_offline_window_sec=120)
    message = str(error.value)
    assert message.startswith("invalid settings: NODE_OFFLINE_WINDOW_SEC=120 must be at least twice")
    assert "NODE_HEARTBEAT_INTERVAL_SEC=3600" in message and "COLLECTION_NODE_WINDOW_SEC=60" in message
    for values, named in [
        (
            {"crawler_connect_timeout_sec": 90, "crawler_total_timeout_sec": 60},
            "CRAWLER_CONNECT_TIMEOUT_SEC=90",
        ),
        ({"crawler_retry_base_sec": 7200}, "CRAWLER_RETRY_BASE_SEC=7200"),
        ({"min_train_chars": 5000, "max_doc_chars": 4000}, "MIN_TRAIN_CHARS=5000"),
        (
            {"train_lr_schedule": "cosine", "train_warmup_steps": 500, "train_total_steps": 100},
            "TRAIN_WARMUP",
        ),
        ({"admin_read_token": "r"}, "ADMIN_READ_TOKEN is set but ADMIN_API_TOKEN is empty"),
    ]:
        with pytest.raises(SettingsError, match=named):
            clean(**values)
    clean(admin_read_token="r", admin_api_token="a", node_heartbeat_interval_sec=30)  # consistent: fine


def test_errors_never_echo_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://llm:hunter2@db/llm")
    with pytest.raises(SettingsError) as error:
        clean()
    assert "hunter2" not in str(error.value) and "mysql://llm:***@db/llm" in str(error.value)
    settings = clean(admin_api_token="s3cret-token", database_url="postgresql://u:pw123@h/db")
    assert mask_secrets("token s3cret-token at postgresql://u:pw123@h/db", settings.secrets()) == (
        "token *** at postgresql://u:***@h/db"
    )
