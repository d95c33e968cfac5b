"""The tables, as SQLAlchemy Core objects the queries are written against.

The schema itself is created and changed only by the migrations in `db/migrations/versions/`; each
issue that needs a table adds a migration and its table here.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a real 64-bit identity.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("node_id", sa.String(128), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("hostname", sa.String(255), nullable=False, server_default=""),
    sa.Column("pid", sa.Integer),
    sa.Column("instance_id", sa.String(32), nullable=False, server_default=""),
    sa.Column("version", sa.String(32), nullable=False, server_default=""),
    # What the node is doing: running (some engine runs), idle, stopped (process ended cleanly).
    sa.Column("status", sa.String(16), nullable=False, server_default="stopped"),
    # Last start/stop command and its sequence number; the node acknowledges with applied_seq.
    sa.Column("target_status", sa.String(16)),
    sa.Column("command_seq", sa.Integer, nullable=False, server_default="0"),
    sa.Column("applied_seq", sa.Integer, nullable=False, server_default="0"),
    sa.Column("started_at", sa.Float),
    sa.Column("last_heartbeat", sa.Float),
    sa.Column("cpu_percent", sa.Float),
    sa.Column("ram_percent", sa.Float),
    sa.Column("api_url", sa.String(255), nullable=False, server_default=""),
    sa.Column("profile", sa.JSON),
    # The node process's start time on its own host (psutil): with hostname and pid it tells whether
    # the process that holds the row is still alive, so a restart after kill -9 is accepted at once.
    sa.Column("process_started", sa.Float),
)

engine_state = sa.Table(
    "engine_state",
    metadata,
    sa.Column(
        "node_id", sa.String(128), sa.ForeignKey("nodes.node_id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("engine", sa.String(64), primary_key=True),
    # desired is what the user asked for (survives restarts); phase is what the engine reports.
    sa.Column("desired", sa.String(16), nullable=False, server_default="stopped"),
    sa.Column("phase", sa.String(64), nullable=False, server_default="stopped"),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    sa.Column("counters", sa.JSON),
    sa.Column("last_error", sa.Text, nullable=False, server_default=""),
    sa.Column("restarts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("started_at", sa.Float),
    sa.Column("updated_at", sa.Float),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("level", sa.String(16), nullable=False, server_default="info"),
    sa.Column("source", sa.String(64), nullable=False, server_default=""),
    sa.Column("message", sa.Text, nullable=False),
)

# One row per (counter, node): nodes never wait on each other's row locks; readers sum by name.
counters = sa.Table(
    "counters",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("node_id", sa.String(128), primary_key=True, server_default=""),
    sa.Column("value", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("updated_at", sa.Float),
)

system_config = sa.Table(
    "system_config",
    metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Float),
)

# --- the crawler (issue #3) ---------------------------------------------------------------------------
# Work is claimed per host: a node leases a `hosts` row and fetches that host's due `frontier` rows, so
# politeness state (next allowed request, back-off, robots.txt) lives with the one node holding the lease.
# "Host" here is a URL's origin, scheme://hostname[:port], the unit robots.txt applies to.

hosts = sa.Table(
    "hosts",
    metadata,
    sa.Column("origin", sa.String(300), primary_key=True),
    sa.Column("hostname", sa.String(255), nullable=False),
    # A stable hash of the origin; node i of n active collectors prefers hosts with shard % n == i.
    sa.Column("shard", sa.Integer, nullable=False),
    sa.Column("source", sa.String(32), nullable=False, server_default="web"),
    # has_work: queued URLs exist; ready_at: politeness / back-off, the earliest the host may be claimed.
    sa.Column("has_work", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("ready_at", sa.Float, nullable=False, server_default="0"),
    sa.Column("lease_owner", sa.String(128)),
    sa.Column("lease_expires", sa.Float),
    sa.Column("crawl_delay", sa.Float),
    sa.Column("error_streak", sa.Integer, nullable=False, server_default="0"),
    # robots.txt cache shared by every node: HTTP status (0 = unreachable), body (size-limited), expiry.
    sa.Column("robots_status", sa.Integer),
    sa.Column("robots_body", sa.Text),
    sa.Column("robots_expires_at", sa.Float),
    sa.Column("tdmrep", sa.Text),  # /.well-known/tdmrep.json as fetched ("" = none)
    sa.Column("pages_fetched", sa.Integer, nullable=False, server_default="0"),
    sa.Column("urls_known", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.Float),
)

frontier = sa.Table(
    "frontier",
    metadata,
    # Keyed by a 64-bit hash of the normalized URL: a small fixed-width key instead of a text index.
    sa.Column("url_hash", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("origin", sa.String(300), nullable=False),
    sa.Column("depth", sa.Integer, nullable=False, server_default="0"),
    sa.Column("source", sa.String(32), nullable=False, server_default="web"),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    # Links found on this URL's page are followed only inside this URL prefix (see collect.urls.in_scope).
    sa.Column("scope", sa.Text, nullable=False, server_default=""),
    # queued -> done | failed | blocked | skipped; done rows come back to queued when a refetch is due.
    sa.Column("state", sa.String(16), nullable=False, server_default="queued"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_fetch_at", sa.Float),  # NULL = never again
    sa.Column("last_fetched_at", sa.Float),
    sa.Column("http_status", sa.Integer),
    sa.Column("error", sa.String(64)),
    sa.Column("etag", sa.String(300)),
    sa.Column("last_modified", sa.String(100)),
    # URLs sharing a variant key (one path with many queries, a calendar pattern) are capped together.
    sa.Column("variant_key", sa.BigInteger),
    sa.Column("discovered_at", sa.Float),
)

pages = sa.Table(
    "pages",
    metadata,
    sa.Column("url_hash", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("final_url", sa.Text, nullable=False),
    sa.Column("origin", sa.String(300), nullable=False),
    sa.Column("source", sa.String(32), nullable=False, server_default="web"),
    sa.Column("depth", sa.Integer, nullable=False, server_default="0"),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("content_type", sa.String(200), nullable=False, server_default=""),
    sa.Column("charset", sa.String(64), nullable=False, server_default=""),
    sa.Column("body_bytes", sa.Integer, nullable=False, server_default="0"),
    sa.Column("headers", sa.JSON),
    sa.Column("title", sa.Text, nullable=False, server_default=""),
    sa.Column("links", sa.Integer, nullable=False, server_default="0"),
    # False when the site opted out of AI training (robots AI groups, TDM reservation, noai).
    sa.Column("train_allowed", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("optout_reason", sa.String(200), nullable=False, server_default=""),
    sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("fetched_at", sa.Float, nullable=False),
)

# --- text pipeline (migration 0004) ---------------------------------------------------------------

documents = sa.Table(
    "documents",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("url", sa.String(2000), nullable=False, unique=True),
    sa.Column("final_url", sa.String(2000), nullable=False, server_default=""),
    sa.Column("domain", sa.String(255), nullable=False, server_default=""),
    sa.Column("title", sa.String(500), nullable=False, server_default=""),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("char_count", sa.Integer, nullable=False),
    sa.Column("language", sa.String(16), nullable=False, server_default="und"),
    sa.Column("language_confidence", sa.Float, nullable=False, server_default="0"),
    sa.Column("source_type", sa.String(32), nullable=False),
    sa.Column("quality_score", sa.Float, nullable=False, server_default="0"),
    # sha-256 (first 16 bytes) of the whitespace- and case-folded text: exact duplicates collide here
    sa.Column("content_hash", sa.LargeBinary(16), nullable=False, unique=True),
    sa.Column("license_tag", sa.String(64), nullable=False, server_default="unknown"),
    sa.Column("allowed_for_training", sa.Boolean, nullable=False, server_default=sa.true()),
    # why it may not be trained on: policy:<pattern>, or the page's own opt-out (robots, tdm, noai)
    sa.Column("block_reason", sa.String(200), nullable=False, server_default=""),
    sa.Column("optout_reason", sa.String(200), nullable=False, server_default=""),
    sa.Column("published", sa.String(64), nullable=False, server_default=""),
    sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("minhash", sa.LargeBinary),  # uint32[112] signature, to confirm LSH candidates
)

# Documents deleted because a newer version of their page replaced them. Their tokens may still sit in
# the dataset's shards; the dataset stops sampling them (like a document that became disallowed).
document_removals = sa.Table(
    "document_removals",
    metadata,
    sa.Column("doc_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("reason", sa.String(32), nullable=False, server_default="replaced"),
    sa.Column("removed_at", sa.Float, nullable=False),
)

# The LSH index: one row per (band, key) of each stored document, shared by every node.
minhash_bands = sa.Table(
    "minhash_bands",
    metadata,
    sa.Column("band", sa.SmallInteger, primary_key=True),
    sa.Column("band_key", sa.BigInteger, primary_key=True),
    sa.Column("doc_id", sa.BigInteger, sa.ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True),
)

source_policies = sa.Table(
    "source_policies",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("domain_pattern", sa.String(255), nullable=False),
    sa.Column("source_type", sa.String(32), nullable=False, server_default="any"),
    sa.Column("license_tag", sa.String(64), nullable=False, server_default="unknown"),
    sa.Column("allow_training", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("base_weight", sa.Float, nullable=False, server_default="1"),
    sa.Column("notes", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.Float),
    sa.Column("updated_at", sa.Float),
    sa.UniqueConstraint("domain_pattern", "source_type", name="uq_source_policies_pattern_type"),
)

# Pages waiting for the text pipeline: written by the crawler in its transaction, removed in the
# transaction that stores their documents; a node that dies mid-way leaves them to be claimed again.
staged_pages = sa.Table(
    "staged_pages",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("final_url", sa.String(2000), nullable=False, server_default=""),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("content_type", sa.String(200), nullable=False, server_default=""),
    sa.Column("title", sa.String(500), nullable=False, server_default=""),
    sa.Column("body", sa.LargeBinary, nullable=False),  # zlib-compressed UTF-8 text
    sa.Column("train_allowed", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("optout_reason", sa.String(200), nullable=False, server_default=""),
    sa.Column("license_hint", sa.String(64), nullable=False, server_default=""),
    sa.Column("published", sa.String(64), nullable=False, server_default=""),
    sa.Column("links", sa.JSON),  # out-links to other sites, for automatic discovery
    sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("claimed_by", sa.String(128)),
    sa.Column("claimed_until", sa.Float),
)

# --- training (issue #6) -------------------------------------------------------------------------------
# One row per logged training step; aifactory.train.metrics.prune thins old rows so the table stays small.

training_metrics = sa.Table(
    "training_metrics",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("step", sa.BigInteger, nullable=False),
    # Passes over the training tokens of the dataset at the time (it grows, so epochs are fractional).
    sa.Column("epoch", sa.Float, nullable=False),
    sa.Column("tokens_seen", sa.BigInteger, nullable=False),
    sa.Column("train_loss", sa.Float),
    sa.Column("val_loss", sa.Float),  # set on rows written right after an evaluation
    sa.Column("val_bpb", sa.Float),
    sa.Column("best_val_loss", sa.Float),
    sa.Column("lr", sa.Float),
    sa.Column("tokens_per_sec", sa.Float),
    sa.Column("mfu", sa.Float),
)

# One row per evaluation and language: validation loss and bits per byte of each language's own windows
# (the overall figures stay in training_metrics). Thinned like training_metrics.
validation_metrics = sa.Table(
    "validation_metrics",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("step", sa.BigInteger, nullable=False),
    sa.Column("language", sa.String(16), nullable=False),
    sa.Column("val_loss", sa.Float),
    sa.Column("val_bpb", sa.Float),
)

# --- dataset and tokenizer (issue #5) ------------------------------------------------------------------
# The token shards themselves live on disk (DATA_DIR/dataset/g<N>/, with their manifest as the commit
# point); these tables are the record of what was built, for the dashboard, the API and provenance.

tokenizer_generations = sa.Table(
    "tokenizer_generations",
    metadata,
    sa.Column("generation", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("tokenizer_hash", sa.String(64), nullable=False),
    sa.Column("model_type", sa.String(16), nullable=False),
    sa.Column("vocab_size", sa.Integer, nullable=False),
    sa.Column("languages", sa.String(200), nullable=False, server_default=""),
    sa.Column("sample_documents", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("sample_chars", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("train_seconds", sa.Float, nullable=False, server_default="0"),
    sa.Column("language_chars", sa.JSON),  # {language: characters in the training sample}
    sa.Column("note", sa.Text, nullable=False, server_default=""),  # e.g. trained early: the crawl ran out
    sa.Column("path", sa.Text, nullable=False, server_default=""),
    sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
)

dataset_versions = sa.Table(
    "dataset_versions",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("tag", sa.String(64), nullable=False, unique=True),  # g<generation>-v<build>
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("tokenizer_hash", sa.String(64), nullable=False),
    sa.Column("documents", sa.BigInteger, nullable=False),  # documents tokenized in all
    sa.Column("new_documents", sa.BigInteger, nullable=False),  # ...by this build
    sa.Column("train_tokens", sa.BigInteger, nullable=False),
    sa.Column("val_tokens", sa.BigInteger, nullable=False),
    sa.Column("skipped", sa.BigInteger, nullable=False, server_default="0"),  # the tokenizer failed on them
    # Running totals of the text pipeline's counters (docs.blocked.*, docs.filtered.*, docs.duplicate.*).
    sa.Column("blocked", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("filtered", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("duplicates", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("per_source", sa.JSON),  # {source: {documents, train_tokens, val_tokens}}
    sa.Column("build_seconds", sa.Float, nullable=False, server_default="0"),
    sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
)

# --- export jobs (issue #13) -------------------------------------------------------------------------
# Exports and LoRA fine-tunes started through the API. The files they write live under EXPORT_DIR; the
# row is the job's state, progress and result, written by the job's own process.

export_jobs = sa.Table(
    "export_jobs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("target", sa.String(16), nullable=False),  # hf, gguf, ollama, lmstudio, lora
    sa.Column("status", sa.String(16), nullable=False),  # queued, running, done, failed, cancelled
    sa.Column("request", sa.JSON, nullable=False),  # what was asked for, as validated by the API
    sa.Column("progress", sa.Float, nullable=False, server_default="0"),  # 0..1
    sa.Column("message", sa.Text, nullable=False, server_default=""),  # what it is doing now
    sa.Column("result", sa.JSON),  # the summary of a finished job ("file": what downloads)
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("pid", sa.Integer),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("updated_at", sa.Float),
)
sa.Index("ix_export_jobs_status", export_jobs.c.status)
