"""Every setting of the factory in one typed object, read from environment variables and `.env`.

Names and defaults follow the original product description (`shared/seed/README.ja.md`) so existing
`.env` files keep working; the settings this project adds (`DATABASE_URL`, `DATA_DIR`, `HOST`, ...) sit
beside them. Settings left at `auto` are chosen by the auto-tune profile (`aifactory.autotune`); an
explicit value always wins. `docs/configuration.md` is generated from this file (`aifactory config
--markdown`) and a test keeps it in sync.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class SettingsError(Exception):
    """A setting has an invalid value; the message names the variable and what it accepts."""


def _split_csv(value: Any) -> Any:
    # Lists are written the way the original did: comma-separated, blanks ignored.
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _empty_is_auto(value: Any) -> Any:
    # `MODEL_SIZE=` (or `auto`) in a .env means "let auto-tune choose", not "invalid".
    if isinstance(value, str) and value.strip().lower() in ("", "auto"):
        return None
    return value


CsvList = Annotated[list[str], NoDecode, BeforeValidator(_split_csv)]
ModelSize = Literal["tiny", "small", "base", "medium"]


def setting(default: Any, doc: str, group: str, **constraints: Any) -> Any:
    """A field with its one-line doc and its section in docs/configuration.md."""
    return Field(default, description=doc, json_schema_extra={"group": group}, **constraints)


NODE, ADMIN, TUNE, CRAWL, SOURCES, QUALITY, TOKENIZER, TRAIN, SERVE, EVAL = (
    "Node, server and database",
    "Admin authentication and web access",
    "Auto-tune",
    "Crawl guard and distribution",
    "Sources",
    "Data quality and weighting",
    "Dataset and tokenizer",
    "Training",
    "Inference",
    "Evaluation and promotion",
)
EXPORT = "Export and fine-tuning"
CHAT = "Chat tuning"

# Settings resolved by the auto-tune profile when left unset; the value used without auto-tune.
AUTO_FALLBACKS: dict[str, Any] = {
    "model_size": "small",
    "train_batch_size": 4,
    "train_seq_len": 512,
    "max_generate_tokens": 256,
    "max_crawler_workers": 8,
    "pytorch_cpu_threads": "cores - 1",
    "spm_num_threads": "cores - 1",
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", validate_default=True
    )

    # --- node, server and database -------------------------------------------------------------
    system_role: Literal["master", "worker"] = setting(
        "master", "Role of this node: master runs everything, worker only collects.", NODE
    )
    node_id: str = setting(
        "", "Fixed id of this node; empty = generated once and kept in DATA_DIR.", NODE, max_length=128
    )
    data_dir: Path = setting(
        Path("data"), "Directory for the SQLite database, shards, checkpoints and models.", NODE
    )
    database_url: str = setting(
        "",
        "sqlite:///PATH or postgresql://USER:PASS@HOST:PORT/DB; empty = SQLite file in DATA_DIR.",
        NODE,
    )
    host: str = setting("127.0.0.1", "Address the web server binds to.", NODE)
    port: int = setting(8000, "Port of the web server (dashboard and APIs).", NODE, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = setting(
        "info", "Level of the log printed to stderr.", NODE
    )
    node_heartbeat_interval_sec: float = setting(
        10.0, "Seconds between heartbeats a node writes to the database.", NODE, ge=0.2, le=3600
    )
    node_offline_window_sec: float = setting(
        120.0, "A node whose last heartbeat is older than this is shown offline.", NODE, ge=1, le=86400
    )
    node_list_window_hours: float = setting(
        2.0, "Offline nodes older than this are left out of the node list.", NODE, gt=0, le=8760
    )
    event_log_keep: int = setting(
        20000, "Number of most recent event-log rows kept in the database.", NODE, ge=100
    )
    database_pool_size: int = setting(
        5,
        "Database connections a node process keeps open (as many again at peak); helper processes use 1-2.",
        NODE,
        ge=1,
        le=200,
    )
    engine_stop_timeout_sec: float = setting(
        30.0,
        "Seconds an engine gets to finish its step and save when asked to stop; then it is killed.",
        NODE,
        ge=1,
        le=3600,
    )

    # --- admin authentication -----------------------------------------------------------------
    admin_api_token: SecretStr = setting(
        SecretStr(""), "Token required in the x-admin-token header of state-changing calls.", ADMIN
    )
    admin_api_token_required: bool = setting(
        False, "Refuse to start without ADMIN_API_TOKEN, even on a loopback address.", ADMIN
    )
    allow_insecure_admin: bool = setting(
        False, "Allow a non-loopback HOST without ADMIN_API_TOKEN (anyone can control it).", ADMIN
    )
    admin_read_token: SecretStr = setting(
        SecretStr(""),
        "Token (x-admin-token header) that reads need too; the admin token also works; empty = reads open.",
        ADMIN,
    )
    allowed_hosts: CsvList = setting(
        [],
        "Host names the API answers to besides localhost, loopback and HOST (*.example.com, or * = any).",
        ADMIN,
    )
    # --- dashboard (issue #16) ---
    db_ui_url: str = setting(
        "",
        "Address of a database console (e.g. Adminer) linked from the dashboard header; empty = none.",
        ADMIN,
    )
    dashboard_push_sec: float = setting(
        2.0,
        "Seconds between the dashboard's live-update checks (one stream per open page).",
        ADMIN,
        ge=0.2,
        le=60,
    )
    max_request_bytes: int = setting(
        1_048_576,
        "Largest request body accepted (413 beyond), checked before authentication.",
        ADMIN,
        ge=1024,
    )

    # --- auto-tune ------------------------------------------------------------------------------
    auto_tune: bool = setting(
        True, "Choose model size, batch, sequence, tokens, workers and threads from the hardware.", TUNE
    )
    auto_tune_realtime: bool = setting(
        True, "Re-evaluate memory-sensitive limits from free memory while running.", TUNE
    )

    # --- crawl guard and distribution -----------------------------------------------------------
    max_crawler_workers: Annotated[int | None, BeforeValidator(_empty_is_auto)] = setting(
        None, "Concurrent fetches per node (auto: min(16, 2 x cores)).", CRAWL, ge=1, le=512
    )
    max_crawl_pages_per_cycle: int = setting(
        200, "Pages per crawl cycle in total, split across the active collector nodes.", CRAWL, ge=1
    )
    collection_include_master: bool = setting(
        True, "The master takes part in collection alongside the workers.", CRAWL
    )
    collection_node_window_sec: float = setting(
        60.0, "A collector node counts as active if it sent a heartbeat within this window.", CRAWL, ge=1
    )
    crawler_respect_robots: bool = setting(True, "Obey robots.txt and crawl opt-outs.", CRAWL)
    crawler_domain_min_interval_sec: float = setting(
        0.5, "Minimum seconds between two requests to the same host.", CRAWL, ge=0, le=3600
    )
    crawler_domain_concurrency: int = setting(
        2, "Maximum simultaneous requests to the same host.", CRAWL, ge=1, le=64
    )
    crawler_batch_sleep_sec: float = setting(0.6, "Pause after each batch of fetches.", CRAWL, ge=0, le=3600)
    staging_max_pages: int = setting(
        20_000,
        "Crawling pauses while this many fetched pages wait for the text pipeline (0 = no limit).",
        CRAWL,
        ge=0,
    )
    crawler_allow_subdomains: bool = setting(False, "Follow links into subdomains of a seed's host.", CRAWL)
    crawler_politeness_per: Literal["host", "domain"] = setting(
        "domain",
        "Unit one pace and one lease apply to: host (each host name) or domain (a registrable domain "
        "with its subdomains, from the bundled Public Suffix List). Set it the same on every node.",
        CRAWL,
    )
    crawler_max_crawl_delay_sec: float = setting(
        60.0, "Longest robots.txt Crawl-delay honoured; a longer one is taken as this.", CRAWL, ge=0, le=3600
    )
    crawler_user_agent: str = setting(
        "AIFactoryBot",
        "Product token of the crawler's User-Agent; robots.txt groups for it apply.",
        CRAWL,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
    )
    crawler_contact_url: str = setting(
        "",
        "URL or e-mail put in the User-Agent so site owners can reach whoever runs the crawler.",
        CRAWL,
        max_length=300,
    )
    crawler_private_allowlist: CsvList = setting(
        [],
        "Hosts or networks (CIDR) the crawler may fetch although they are loopback/private/link-local.",
        CRAWL,
    )
    crawler_max_depth: int = setting(
        5, "Links more than this many hops from a seed are not followed.", CRAWL, ge=0
    )
    crawler_max_pages_per_host: int = setting(
        1000, "Page budget of one host: URLs fetched from it (and twice that queued) at most.", CRAWL, ge=1
    )
    crawler_max_url_variants: int = setting(
        50,
        "URLs kept per path that differ only in query (or per calendar-like path); traps stop here.",
        CRAWL,
        ge=1,
    )
    crawler_connect_timeout_sec: float = setting(
        10.0, "Seconds to resolve and connect before a fetch counts as a timeout.", CRAWL, gt=0, le=600
    )
    crawler_read_timeout_sec: float = setting(
        20.0, "Seconds without receiving data before a fetch counts as a timeout.", CRAWL, gt=0, le=600
    )
    crawler_total_timeout_sec: float = setting(
        60.0, "Seconds one fetch may take in all (a slow trickle is cut off too).", CRAWL, gt=0, le=3600
    )
    crawler_max_body_bytes: int = setting(
        2_000_000, "Largest (decompressed) page kept; bigger ones are cut off and skipped.", CRAWL, ge=1024
    )
    crawler_max_redirects: int = setting(
        5, "Redirects followed per fetch (loops are detected).", CRAWL, ge=0, le=20
    )
    crawler_max_attempts: int = setting(
        3, "Tries per URL (timeouts, resets, 5xx) before it is given up.", CRAWL, ge=1, le=100
    )
    crawler_retry_base_sec: float = setting(
        30.0,
        "Back-off after a failed fetch; doubles with each further failure (per URL and per host).",
        CRAWL,
        ge=0,
    )
    crawler_max_backoff_sec: float = setting(
        3600.0, "Longest back-off of a host, whether from Retry-After or repeated failures.", CRAWL, ge=0
    )
    crawler_robots_retry_sec: float = setting(
        600.0,
        "A host whose robots.txt is unreachable (5xx, network) is skipped this long, then retried.",
        CRAWL,
        ge=0,
    )
    crawler_lease_sec: float = setting(
        60.0,
        "A node holds a host this long per renewal; a dead node's hosts are free again after it.",
        CRAWL,
        ge=1,
        le=3600,
    )
    crawler_db_retry_sec: float = setting(
        60.0,
        "How long the crawler retries a database that is away before the collector stops with an error "
        "(the node restarts it; nothing is lost).",
        CRAWL,
        ge=0,
        le=3600,
    )
    crawler_retention_days: float = setting(
        90.0,
        "Fetched-page records and finished frontier URLs older than this are deleted (counters are "
        "kept); 0 = keep forever.",
        CRAWL,
        ge=0,
    )
    crawler_recrawl_sec: float = setting(
        604800.0,
        "Fetched pages are fetched again (conditional GET) after this many seconds; 0 = never.",
        CRAWL,
        ge=0,
    )

    # --- sources --------------------------------------------------------------------------------
    web_seed_urls: CsvList = setting([], "Comma-separated start URLs for the web crawl.", SOURCES)
    enable_wikipedia_collector: bool = setting(
        True, "Collect Wikipedia articles (random and linked) through the MediaWiki API.", SOURCES
    )
    wikipedia_languages: CsvList = setting(
        ["ja", "en"], "Wikipedia language editions to collect from, comma-separated.", SOURCES
    )
    wikipedia_articles_per_cycle: int = setting(
        10, "Wikipedia articles fetched per language per cycle.", SOURCES, ge=0, le=500
    )
    wikipedia_api_url: str = setting(
        "https://{lang}.wikipedia.org/w/api.php", "MediaWiki API endpoint; {lang} is the edition.", SOURCES
    )
    source_poll_interval_sec: float = setting(
        900.0, "Seconds between two polls of the same feed, HN list or Wikipedia edition.", SOURCES, ge=1
    )
    enable_rss_collector: bool = setting(True, "Collect articles from RSS_FEEDS.", SOURCES)
    rss_feeds: CsvList = setting([], "Comma-separated RSS/Atom feed URLs.", SOURCES)
    enable_news_collector: bool = setting(True, "Collect articles from NEWS_FEEDS and Hacker News.", SOURCES)
    rss_items_per_feed: int = setting(5, "Newest entries taken from each RSS feed per poll.", SOURCES, ge=1)
    news_feeds: CsvList = setting([], "Comma-separated news feed URLs.", SOURCES)
    news_items_per_feed: int = setting(5, "Newest entries taken from each news feed per poll.", SOURCES, ge=1)
    hn_api_url: str = setting("https://hacker-news.firebaseio.com/v0", "Hacker News API base URL.", SOURCES)
    hn_items: int = setting(15, "Hacker News top stories taken per cycle.", SOURCES, ge=0, le=500)
    enable_arxiv_collector: bool = setting(True, "Collect arXiv titles and abstracts.", SOURCES)
    arxiv_query: str = setting("cat:cs.LG OR cat:cs.CL OR cat:cs.AI", "arXiv API search query.", SOURCES)
    arxiv_max_results: int = setting(30, "arXiv results per cycle.", SOURCES, ge=1, le=2000)
    arxiv_api_url: str = setting("https://export.arxiv.org/api/query", "arXiv API endpoint.", SOURCES)
    arxiv_poll_interval_sec: float = setting(
        3600.0, "Seconds between two arXiv queries (the API asks for at least 3 s).", SOURCES, ge=3
    )
    enable_docs_collector: bool = setting(True, "Crawl documentation sites in DOC_SEED_URLS.", SOURCES)
    doc_seed_urls: CsvList = setting(
        [], "Comma-separated documentation start URLs (crawled within their path).", SOURCES
    )
    enable_auto_discovery: bool = setting(
        False, "Add new hosts found in links of good pages to the frontier.", SOURCES
    )
    auto_discovery_queries: CsvList = setting(
        [], "Comma-separated search themes for automatic discovery.", SOURCES
    )
    auto_discovery_seeds_per_cycle: int = setting(
        24, "New hosts added by automatic discovery per cycle.", SOURCES, ge=0
    )
    auto_discovery_results_per_query: int = setting(
        8, "Search results kept per discovery query.", SOURCES, ge=1
    )
    auto_discovery_search_url: str = setting(
        "",
        "Optional search endpoint for AUTO_DISCOVERY_QUERIES (JSON: results[].url), {query} in it.",
        SOURCES,
    )
    auto_discovery_min_quality: float = setting(
        0.6,
        "Only documents at least this good lend their out-links to automatic discovery.",
        SOURCES,
        ge=0,
        le=1,
    )

    # --- data quality and weighting --------------------------------------------------------------
    train_lang_only: str = setting(
        "ja,en", "Languages trained on, comma-separated (e.g. ja, en, ja,en); empty = all.", QUALITY
    )
    min_train_chars: int = setting(120, "Documents shorter than this are not trained on.", QUALITY, ge=0)
    max_doc_chars: int = setting(
        100_000,
        "Longer documents are split at paragraph boundaries into parts of this size.",
        QUALITY,
        ge=1000,
    )
    enable_text_dedup: bool = setting(True, "Drop exact and near-duplicate documents.", QUALITY)
    enable_pii_filter: bool = setting(
        True, "Mask e-mail addresses, phone numbers and IP addresses in stored text.", QUALITY
    )
    rejections_max_rows: int = setting(
        100_000,
        "Dropped pages recorded with their reason (for `aifactory explain` and the API); older rows are "
        "pruned, the per-domain totals are kept. 0 = totals only.",
        QUALITY,
        ge=0,
    )
    source_weight_wikipedia: float = setting(1.4, "Sampling weight of Wikipedia text.", QUALITY, ge=0)
    source_weight_arxiv: float = setting(1.35, "Sampling weight of arXiv text.", QUALITY, ge=0)
    source_weight_docs: float = setting(1.3, "Sampling weight of documentation pages.", QUALITY, ge=0)
    source_weight_news: float = setting(1.25, "Sampling weight of news articles.", QUALITY, ge=0)
    source_weight_rss: float = setting(1.1, "Sampling weight of RSS articles.", QUALITY, ge=0)
    source_weight_web: float = setting(1.0, "Sampling weight of crawled web pages.", QUALITY, ge=0)
    quality_weight_floor: float = setting(
        0.35, "Quality weight = QUALITY_WEIGHT_FLOOR + QUALITY_WEIGHT_BOOST x quality_score.", QUALITY, ge=0
    )
    quality_weight_boost: float = setting(
        0.9, "How much a document's quality score raises its sampling weight.", QUALITY, ge=0
    )

    # --- tokenizer -------------------------------------------------------------------------------
    train_vocab_size: int = setting(
        16000,
        "SentencePiece vocabulary size (also the model's vocabulary); see docs/tokenizer.md.",
        TOKENIZER,
        ge=300,
        le=262144,
    )
    spm_num_threads: Annotated[int | None, BeforeValidator(_empty_is_auto)] = setting(
        None, "Threads for tokenizer training (auto: cores - 1).", TOKENIZER, ge=1, le=1024
    )
    tokenizer_model_type: Literal["bpe", "unigram"] = setting(
        "bpe",
        "SentencePiece algorithm: bpe (exact in llama.cpp/GGUF) or unigram (faster encoding).",
        TOKENIZER,
    )
    tokenizer_min_corpus_chars: int = setting(
        5_000_000,
        "The tokenizer is trained once, when the allowed corpus first has this many characters.",
        TOKENIZER,
        ge=10_000,
    )
    tokenizer_sample_chars: int = setting(
        20_000_000,
        "Characters sampled (an equal share per language) to train the tokenizer; bounds its memory.",
        TOKENIZER,
        ge=100_000,
    )
    tokenizer_stall_sec: float = setting(
        1800.0,
        "When nothing is left to crawl and no text arrived for this long, train the tokenizer on what "
        "there is (0 = keep waiting for TOKENIZER_MIN_CORPUS_CHARS).",
        TOKENIZER,
        ge=0,
    )
    tokenizer_floor_chars: int = setting(
        200_000,
        "The least allowed text the tokenizer is ever trained on (when the crawl runs out early).",
        TOKENIZER,
        ge=10_000,
    )
    tokenizer_new_language_share: float = setting(
        0.05,
        "A TRAIN_LANG_ONLY language the tokenizer lacks gets a new generation proposed at this corpus share.",
        TOKENIZER,
        gt=0,
        le=1,
    )
    tokenizer_auto_new_generation: bool = setting(
        False,
        "Train that proposed generation automatically (a new model starts; old checkpoints are kept).",
        TOKENIZER,
    )
    dataset_val_fraction: float = setting(
        0.02,
        "Share of documents held out for validation, chosen by a hash of their URL.",
        TOKENIZER,
        gt=0,
        le=0.5,
    )
    dataset_val_max_tokens: int = setting(
        1_000_000,
        "A language's validation set stops taking documents at this many tokens.",
        TOKENIZER,
        ge=1000,
    )
    dataset_val_min_tokens_per_language: int = setting(
        50_000,
        "Until a language has this many validation tokens, 20% of its documents go to validation.",
        TOKENIZER,
        ge=0,
    )
    dataset_build_min_new_docs: int = setting(
        500, "The dataset engine builds once this many new documents have arrived.", TOKENIZER, ge=1
    )
    dataset_build_max_wait_sec: float = setting(
        3600.0,
        "...or once new documents have waited this long, however few; 0 = build whenever there are any.",
        TOKENIZER,
        ge=0,
    )
    dataset_poll_sec: float = setting(
        60.0, "Seconds between two checks of the dataset engine for new documents.", TOKENIZER, ge=0.1
    )
    dataset_build_workers: int = setting(
        0, "Processes encoding documents in parallel; 0 = one per core.", TOKENIZER, ge=0, le=256
    )
    dataset_shard_tokens: int = setting(
        100_000_000,
        "A token shard file is closed and a new one started after this many tokens.",
        TOKENIZER,
        ge=1000,
    )

    # --- training --------------------------------------------------------------------------------
    model_size: Annotated[ModelSize | None, BeforeValidator(_empty_is_auto)] = setting(
        None, "Model preset: tiny, small, base or medium (auto: from the hardware).", TRAIN
    )
    train_n_layer: Annotated[int | None, BeforeValidator(_empty_is_auto)] = setting(
        None, "Transformer layers (overrides the preset).", TRAIN, ge=1, le=256
    )
    train_n_head: Annotated[int | None, BeforeValidator(_empty_is_auto)] = setting(
        None, "Attention heads (overrides the preset).", TRAIN, ge=1, le=256
    )
    train_n_embd: Annotated[int | None, BeforeValidator(_empty_is_auto)] = setting(
        None, "Embedding width (overrides the preset).", TRAIN, ge=8, le=65536
    )
    train_batch_size: Annotated[int | None, BeforeValidator(_empty_is_auto)] = setting(
        None, "Sequences per micro-batch (auto: from memory).", TRAIN, ge=1, le=4096
    )
    train_seq_len: Annotated[int | None, BeforeValidator(_empty_is_auto)] = setting(
        None, "Tokens per training sequence (auto: from memory).", TRAIN, ge=8, le=131072
    )
    train_lr: float = setting(3e-4, "Peak learning rate.", TRAIN, gt=0, le=1)
    train_weight_decay: float = setting(0.1, "AdamW weight decay.", TRAIN, ge=0, le=10)
    train_grad_accum_steps: int = setting(1, "Micro-batches per optimizer step.", TRAIN, ge=1, le=4096)
    train_warmup_steps: int = setting(20, "Linear learning-rate warmup steps.", TRAIN, ge=0)
    train_total_steps: int = setting(20000, "Horizon of the cosine learning-rate schedule.", TRAIN, ge=1)
    train_min_lr_ratio: float = setting(
        0.1, "Cosine schedule floor as a fraction of TRAIN_LR.", TRAIN, ge=0, le=1
    )
    train_steps_per_cycle: int = setting(50, "Optimizer steps per training cycle.", TRAIN, ge=1)
    train_seed: int = setting(42, "Random seed that makes training reproducible.", TRAIN, ge=0)
    train_use_amp: bool = setting(True, "Mixed precision on CUDA (bf16, or fp16 with a scaler).", TRAIN)
    enable_torch_compile: bool = setting(False, "Compile the model with torch.compile.", TRAIN)
    pytorch_cpu_threads: Annotated[int | None, BeforeValidator(_empty_is_auto)] = setting(
        None, "Torch CPU threads (auto: cores - 1).", TRAIN, ge=1, le=1024
    )
    val_eval_every: int = setting(
        25, "Optimizer steps between validation evaluations when VAL_EVAL_EVERY_MIN is 0.", TRAIN, ge=1
    )
    val_eval_batches: int = setting(
        20, "Validation budget when VAL_EVAL_TOKENS is 0: this many batches of 2,048 tokens.", TRAIN, ge=1
    )
    early_stopping_patience: int = setting(
        6, "Evaluations without improvement before training pauses for new data.", TRAIN, ge=1
    )
    train_retry_max: int = setting(2, "Retries of a failed training cycle after rollback.", TRAIN, ge=0)
    train_retry_backoff_sec: float = setting(
        2.0, "Seconds before the first retry; doubles with each retry.", TRAIN, ge=0
    )
    train_n_kv_head: Annotated[int | None, BeforeValidator(_empty_is_auto)] = setting(
        None, "Key/value heads; fewer than the heads = grouped-query attention (auto: heads).", TRAIN, ge=1
    )
    train_tie_embeddings: bool = setting(
        True, "The output layer shares the token embedding matrix (fewer parameters).", TRAIN
    )
    train_lr_schedule: Literal["constant", "cosine"] = setting(
        "constant",
        "constant: warmup then TRAIN_LR for good (never-ending training); cosine: the original decay.",
        TRAIN,
    )
    train_grad_clip: float = setting(1.0, "Gradient norm clipping threshold; 0 = off.", TRAIN, ge=0)
    early_stopping_resume_growth: float = setting(
        0.1,
        "After an early-stopping pause, resume once the training tokens grew by this fraction.",
        TRAIN,
        gt=0,
    )
    train_log_every_sec: float = setting(
        2.0, "Seconds between two training-metrics rows (evaluations are always written).", TRAIN, ge=0
    )
    train_yield_threads: int = setting(
        1, "Torch threads the trainer keeps while chat requests are served (restored when idle).", TRAIN, ge=1
    )
    train_yield_nice: int = setting(
        10,
        "Niceness the trainer takes while chat requests are served, if it may restore it; 0 = keep.",
        TRAIN,
        ge=0,
        le=19,
    )
    # issue 14: the trainer at the machine's speed, checkpoints and data that cannot be corrupted
    dataset_lock_wait_sec: float = setting(
        120.0, "A second dataset builder waits this long for the first, then refuses.", TOKENIZER, ge=0
    )
    val_eval_every_min: float = setting(
        5.0, "Minutes between validation evaluations; 0 = every VAL_EVAL_EVERY steps.", TRAIN, ge=0
    )
    val_eval_tokens: int = setting(
        0,
        "Validation tokens per evaluation, the same windows every time (0 = VAL_EVAL_BATCHES).",
        TRAIN,
        ge=0,
    )
    train_checkpoint_every_min: float = setting(
        10.0,
        "Minutes between two saves of `latest` (and at Stop); 0 = at the end of every cycle.",
        TRAIN,
        ge=0,
    )
    train_keep_snapshots: int = setting(
        2, "Older checkpoints kept besides latest, best and backup.", TRAIN, ge=0, le=1000
    )
    train_lr_recover_steps: int = setting(
        200, "Stable steps after which a learning rate lowered by a NaN is doubled back.", TRAIN, ge=1
    )
    train_prefetch_batches: int = setting(
        2, "Micro-batches the loader draws ahead on a thread; 0 = on the training thread.", TRAIN, ge=0, le=64
    )
    train_tokens_per_step: int = setting(
        0,
        "Tokens per optimizer step, reached by accumulation (0 = auto: 262,144 on CUDA, else 1 batch).",
        TRAIN,
        ge=0,
    )

    # --- inference -------------------------------------------------------------------------------
    max_generate_tokens: Annotated[int | None, BeforeValidator(_empty_is_auto)] = setting(
        None, "Upper limit of max_tokens for generation requests (auto: from memory).", SERVE, ge=1, le=32768
    )
    enable_rag: bool = setting(True, "Allow answers grounded on retrieved documents (RAG).", SERVE)
    use_production_model: bool = setting(
        True, "Serve the promoted production model when there is one, else the latest.", SERVE
    )
    enable_cpu_quantization: bool = setting(False, "int8 dynamic quantization for CPU inference.", SERVE)
    api_keys: SecretStr = setting(
        SecretStr(""),
        "Comma-separated keys the generation APIs require (Bearer or x-api-key); empty = open.",
        SERVE,
    )
    serve_max_batch: int = setting(
        8, "Requests decoded together (continuous batching); more wait in the queue.", SERVE, ge=1, le=256
    )
    serve_queue_size: int = setting(
        16, "Requests waiting for a decoding slot; beyond this the API answers 503.", SERVE, ge=0, le=10000
    )
    serve_retry_after_sec: int = setting(
        2, "Retry-After seconds sent with a 503 when the queue is full.", SERVE, ge=1, le=3600
    )
    serve_threads: int = setting(
        0, "Torch CPU threads of the inference process; 0 = half the cores.", SERVE, ge=0, le=1024
    )
    serve_model_poll_sec: float = setting(
        2.0, "Seconds between two looks at the checkpoint pointers (hot switch).", SERVE, gt=0, le=3600
    )
    serve_max_body_bytes: int = setting(
        4_000_000, "Largest request body the generation APIs accept.", SERVE, ge=1024
    )
    serve_max_prompt_chars: int = setting(
        200_000, "Longest prompt (all messages together) the generation APIs accept.", SERVE, ge=1
    )
    serve_default_max_tokens: int = setting(
        128, "max_tokens of the native API and the CLI when a request gives none.", SERVE, ge=1, le=32768
    )
    rag_on_compatible_apis: bool = setting(
        False, "Also ground OpenAI chat and Ollama answers on the corpus (never /v1/completions).", SERVE
    )
    rag_passages: int = setting(3, "Passages retrieved for one answer.", SERVE, ge=1, le=20)
    rag_passage_chars: int = setting(
        600, "Documents are indexed in passages of about this many characters.", SERVE, ge=100, le=5000
    )
    rag_index_poll_sec: float = setting(
        5.0, "Seconds between two looks for new documents to index for RAG.", SERVE, gt=0, le=3600
    )

    # --- evaluation and promotion ----------------------------------------------------------------
    eval_save_to_db: bool = setting(True, "Store evaluation results in the database.", EVAL)
    eval_max_tokens: int = setting(120, "Tokens generated per evaluation prompt.", EVAL, ge=1)
    promotion_min_score: float = setting(
        0.25,
        "Minimum evaluation score (0..1) a model needs to be promoted (docs/evaluation.md: calibration).",
        EVAL,
        ge=0,
        le=1,
    )
    force_promote: bool = setting(False, "Promote even below PROMOTION_MIN_SCORE (emergencies).", EVAL)
    promotion_tolerance: float = setting(
        0.03,
        "A candidate may score this much below production and still count as not worse (task noise).",
        EVAL,
        ge=0,
        le=1,
    )
    auto_promote: bool = setting(
        False, "Promote automatically after each evaluation that passes the gate.", EVAL
    )
    eval_prompts_file: str = setting(
        "", "Prompt file for the evaluation; empty = DATA_DIR/eval_prompts.json, else the starter set.", EVAL
    )
    eval_mc_items: int = setting(
        256, "Multiple-choice items per language at most (more = less noise, slower).", EVAL, ge=8
    )
    eval_growth_tokens: int = setting(
        48, "Tokens generated greedily for each growth sample.", EVAL, ge=1, le=1024
    )
    eval_time_budget_sec: float = setting(
        600.0, "The evaluator engine gives up an evaluation that takes longer than this.", EVAL, gt=0
    )
    eval_threads: int = setting(
        2, "CPU threads of the evaluator engine (it runs at low priority).", EVAL, ge=1
    )
    eval_poll_sec: float = setting(
        30.0, "Seconds between two looks of the evaluator engine for a new best checkpoint.", EVAL, gt=0
    )
    model_keep_versions: int = setting(
        5, "Registered model versions kept besides production and its rollback target.", EVAL, ge=0
    )
    model_min_free_gb: float = setting(
        1.0, "A promotion is refused when the data directory would have less free disk than this.", EVAL, ge=0
    )

    # --- export and fine-tuning ------------------------------------------------------------------
    export_dir: str = setting(
        "", "Folder for exports made through the API (and `export ollama`); empty = DATA_DIR/exports.", EXPORT
    )
    export_gguf_type: Literal["f32", "f16", "q8_0"] = setting(
        "f16", "GGUF weight type when none is asked for: f32, f16 or q8_0 (8-bit, half of f16).", EXPORT
    )
    lmstudio_models_dir: str = setting(
        "~/.lmstudio/models", "LM Studio's models folder (`export lmstudio` writes publisher/model/).", EXPORT
    )
    ollama_bin: str = setting(
        "ollama",
        "The ollama command `export ollama` runs `ollama create` with, when it is installed.",
        EXPORT,
    )
    lora_rank: int = setting(16, "LoRA rank r of `finetune lora`.", EXPORT, ge=1, le=1024)
    lora_alpha: float = setting(32.0, "LoRA alpha (the update is scaled by alpha / r).", EXPORT, gt=0)
    lora_dropout: float = setting(0.05, "Dropout on the LoRA input during fine-tuning.", EXPORT, ge=0, lt=1)
    lora_learning_rate: float = setting(2e-4, "AdamW learning rate of the LoRA weights.", EXPORT, gt=0, le=1)
    lora_steps: int = setting(200, "Optimizer steps of a `finetune lora` run.", EXPORT, ge=1)
    lora_max_corpus_chars: int = setting(
        20_000_000, "Characters of the allowed corpus a LoRA run reads at most.", EXPORT, ge=1000
    )
    lora_seq_len: int = setting(
        0,
        "Tokens per LoRA training sequence; 0 = chosen from the device and its memory.",
        EXPORT,
        ge=0,
        le=32768,
    )
    lora_batch_size: int = setting(
        0, "Sequences per LoRA micro-batch; 0 = chosen from the device and its memory.", EXPORT, ge=0, le=4096
    )

    # --- chat tuning (issue #18) --------------------------------------------------------------------
    chat_mix_ratio: float = setting(
        0.2,
        "Share of training windows that are conversations (loss on assistant tokens only); 0 = none.",
        CHAT,
        ge=0,
        le=1,
    )
    enable_synthetic_chat: bool = setting(
        True, "Build question-and-answer conversations from the corpus (marked synthetic).", CHAT
    )
    chat_synthetic_max_share: float = setting(
        0.5, "Most of the conversation windows that may come from synthetic conversations.", CHAT, ge=0, le=1
    )
    chat_val_fraction: float = setting(
        0.05,
        "Share of conversations held out for validation, chosen by a hash of their key.",
        CHAT,
        gt=0,
        lt=1,
    )
    chat_max_chars: int = setting(
        20_000, "Longest conversation (characters of all its messages) that is ingested.", CHAT, ge=100
    )
    chat_max_turns: int = setting(64, "Most messages a conversation may have to be ingested.", CHAT, ge=2)
    chat_inbox_poll_sec: float = setting(
        30.0, "Seconds between two looks into DATA_DIR/chat-inbox for conversation files.", CHAT, gt=0
    )

    @field_validator("host")
    @classmethod
    def _host_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("sqlite:", "postgresql:", "postgres:", "postgresql+psycopg:")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        """Checks that span several settings: each value is valid alone, but together they misbehave."""
        problems = [problem for problem in cross_field_problems(self) if problem]
        if problems:
            raise ValueError("\n".join(problems))
        return self

    # --- derived values ----------------------------------------------------------------------------
    def resolved_database_url(self) -> str:
        """DATABASE_URL, or the default SQLite file under DATA_DIR."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'aifactory.db').resolve()}"

    @property
    def is_postgres(self) -> bool:
        return self.resolved_database_url().startswith(("postgres", "postgresql"))

    @property
    def host_is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def host_is_wildcard(self) -> bool:
        """HOST=0.0.0.0 or :: listens on every address of the machine."""
        return self.host in ("0.0.0.0", "::", "[::]")

    def secrets(self) -> list[str]:
        """Every secret value a message might echo (tokens, the database password), to be masked."""
        values = [self.admin_api_token.get_secret_value(), self.admin_read_token.get_secret_value()]
        values.append(url_password(self.database_url))
        return [value for value in values if len(value) >= 3]

    def source_weight(self, source_type: str) -> float:
        """SOURCE_WEIGHT_<TYPE>; source types without a setting weigh 1.0."""
        return float(getattr(self, f"source_weight_{source_type.lower()}", 1.0))

    def api_key_list(self) -> list[str]:
        """API_KEYS as a list (blanks ignored)."""
        return [key.strip() for key in self.api_keys.get_secret_value().split(",") if key.strip()]

    def languages(self) -> list[str]:
        """TRAIN_LANG_ONLY as a list; empty means every language."""
        value = self.train_lang_only.strip().lower()
        if value in ("", "any", "all"):
            return []
        return [code.strip() for code in value.split(",") if code.strip()]


def cross_field_problems(s: Settings) -> list[str]:
    """Combinations that are valid setting by setting but break the factory; one sentence each."""
    beat = s.node_heartbeat_interval_sec
    out = []
    if s.node_offline_window_sec < 2 * beat:
        out.append(
            f"NODE_OFFLINE_WINDOW_SEC={s.node_offline_window_sec:g} must be at least twice "
            f"NODE_HEARTBEAT_INTERVAL_SEC={beat:g}: nodes would flap between online and offline"
        )
    if s.collection_node_window_sec < 2 * beat:
        out.append(
            f"COLLECTION_NODE_WINDOW_SEC={s.collection_node_window_sec:g} must be at least twice "
            f"NODE_HEARTBEAT_INTERVAL_SEC={beat:g}: collectors would drop out of the crawl shares"
        )
    for name in ("crawler_connect_timeout_sec", "crawler_read_timeout_sec"):
        if getattr(s, name) > s.crawler_total_timeout_sec:
            out.append(
                f"{env_name(name)}={getattr(s, name):g} is longer than "
                f"CRAWLER_TOTAL_TIMEOUT_SEC={s.crawler_total_timeout_sec:g}, which would cut it short"
            )
    if s.crawler_retry_base_sec > s.crawler_max_backoff_sec:
        out.append(
            f"CRAWLER_RETRY_BASE_SEC={s.crawler_retry_base_sec:g} is longer than "
            f"CRAWLER_MAX_BACKOFF_SEC={s.crawler_max_backoff_sec:g}, the longest back-off"
        )
    if s.min_train_chars >= s.max_doc_chars:
        out.append(
            f"MIN_TRAIN_CHARS={s.min_train_chars} must be below MAX_DOC_CHARS={s.max_doc_chars}: "
            "every document part would be too short to train on"
        )
    if s.train_lr_schedule == "cosine" and s.train_warmup_steps >= s.train_total_steps:
        out.append(
            f"TRAIN_WARMUP_STEPS={s.train_warmup_steps} must be below TRAIN_TOTAL_STEPS="
            f"{s.train_total_steps} with TRAIN_LR_SCHEDULE=cosine"
        )
    if s.admin_read_token.get_secret_value() and not s.admin_api_token.get_secret_value():
        out.append(
            "ADMIN_READ_TOKEN is set but ADMIN_API_TOKEN is empty: reads would need a token while "
            "state-changing calls need none; set ADMIN_API_TOKEN too (it may be the same token)"
        )
    return out


def env_name(field: str) -> str:
    return field.upper()


def accepted(field: FieldInfo) -> str:
    """A short human description of what a field accepts, from its type and constraints."""
    bounds = []
    for meta in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(meta, attr, None) is not None:
                bounds.append(f"{sign} {getattr(meta, attr)}")
    annotation = str(field.annotation)
    if "Literal" in annotation:
        kind = "one of " + annotation.split("Literal[", 1)[1].split("]", 1)[0].replace("'", "")
    elif "bool" in annotation:
        kind = "1/0, true/false, yes/no or on/off"
    elif "int" in annotation:
        kind = "a whole number"
    elif "float" in annotation:
        kind = "a number"
    elif "list" in annotation:
        kind = "a comma-separated list"
    elif "Path" in annotation:
        kind = "a directory path"
    else:
        kind = "text"
    if bounds:
        kind += " " + " and ".join(bounds)
    if "None" in annotation or "Optional" in annotation:
        kind += ", or auto"
    return kind


def load_settings(**overrides: Any) -> Settings:
    """Read the settings; turn validation errors into one SettingsError naming each variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            if not error["loc"]:  # a cross-field check: its message names the settings involved
                message = str(error["msg"]).removeprefix("Value error, ")
                lines += [f"invalid settings: {line}" for line in message.splitlines()]
                continue
            name = str(error["loc"][0])
            field = Settings.model_fields.get(name)
            what = f" (accepted: {accepted(field)})" if field else ""
            value = error.get("input")
            if field is not None and field.annotation is SecretStr:
                value = None  # a token is never echoed, not even a wrong one
            elif name == "database_url" and isinstance(value, str):
                value = mask_url(value)
            shown = "" if isinstance(value, dict) or value is None else f"={value!r}"
            lines.append(f"invalid setting {env_name(name)}{shown}: {error['msg']}{what}")
        raise SettingsError("\n".join(lines)) from None


def url_password(url: str) -> str:
    """The password in a database URL, or ""."""
    if "://" not in url or "@" not in url:
        return ""
    credentials = url.split("://", 1)[1].rsplit("@", 1)[0]
    return credentials.split(":", 1)[1] if ":" in credentials else ""


def mask_secrets(text: str, secrets: list[str]) -> str:
    """`text` with every secret value replaced by ***, and any database URL's password too."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return re.sub(r"(\w+://[^:/@\s]+:)[^@\s]+@", r"\1***@", text)


def mask_url(url: str) -> str:
    """A database URL with its password replaced by ***."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, location = rest.rsplit("@", 1)
    if ":" in credentials:
        credentials = credentials.split(":", 1)[0] + ":***"
    return f"{scheme}://{credentials}@{location}"


def display_value(settings: Settings, name: str) -> str:
    """A setting's value as `aifactory config` prints it: secrets masked, lists comma-joined."""
    value = getattr(settings, name)
    if isinstance(value, SecretStr):
        return "***" if value.get_secret_value() else ""
    if name == "database_url":
        return mask_url(value)
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if value is None:
        return "auto"
    return str(value)


def default_text(name: str, field: FieldInfo) -> str:
    default = field.default
    if isinstance(default, SecretStr) or default in ("", []):
        return "(empty)"
    if isinstance(default, bool):
        return "1" if default else "0"
    if isinstance(default, list):
        return ",".join(default)
    if default is None:
        return f"auto ({AUTO_FALLBACKS.get(name, 'unset')} without AUTO_TUNE)"
    return str(default)


def configuration_markdown() -> str:
    """docs/configuration.md, generated from the Settings model."""
    out = [
        "# Configuration",
        "",
        "<!-- Generated by `aifactory config --markdown` from src/aifactory/settings.py; do not edit. -->",
        "",
        "Every setting is an environment variable (or a line in `.env` in the working directory).",
        "An invalid value stops start-up with a message naming the variable and what it accepts.",
        "Settings shown as `auto` are chosen by the auto-tune profile from the machine's cores, memory",
        "and GPU when `AUTO_TUNE=1`; an explicit value always wins.",
        "",
    ]
    groups: dict[str, list[str]] = {}
    for name, field in Settings.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        groups.setdefault(str(extra.get("group", "Other")), []).append(name)
    for group, names in groups.items():
        out += [f"## {group}", "", "| Variable | Default | Accepts | Description |", "|---|---|---|---|"]
        for name in names:
            field = Settings.model_fields[name]
            default = default_text(name, field)
            cells = [f"`{env_name(name)}`", f"`{default}`", accepted(field), field.description]
            out.append("| " + " | ".join(str(cell) for cell in cells) + " |")
        out.append("")
    return "\n".join(out)
