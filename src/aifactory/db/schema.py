"""The tables, as SQLAlchemy Core objects the queries are written against.

The schema itself is created and changed only by the migrations in `db/migrations/versions/`; each
issue that needs a table adds a migration and its table here.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

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

# --- the crawler (issues #3, #15) ----------------------------------------------------------------------
# Work is claimed per *site*, the unit of politeness: a host name, or a registrable domain with all its
# subdomains (CRAWLER_POLITENESS_PER). A node leases a `sites` row and fetches the due `frontier` rows
# of that site's origins, so the pace of requests to one server is kept by the one node holding the
# lease. `hosts` has one row per origin (scheme://hostname[:port], the unit robots.txt applies to).

sites = sa.Table(
    "sites",
    metadata,
    sa.Column("site", sa.String(300), primary_key=True),
    # A stable hash of the site; node i of n active collectors prefers sites with shard % n == i.
    sa.Column("shard", sa.Integer, nullable=False),
    # has_work: some origin has URLs to fetch. ready_at: the earliest the site may be claimed
    # (politeness, back-off), and while it is leased the lease's expiry: a claim is one index range.
    sa.Column("has_work", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("ready_at", sa.Float, nullable=False, server_default="0"),
    sa.Column("lease_owner", sa.String(128)),
    # Incremented by every claim: writes for the site carry the token and are refused once it changed.
    sa.Column("lease_token", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("error_streak", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.Float),
)
sa.Index("ix_sites_claim", sites.c.has_work, sites.c.ready_at)
sa.Index("ix_sites_lease_owner", sites.c.lease_owner)

hosts = sa.Table(
    "hosts",
    metadata,
    sa.Column("origin", sa.String(300), primary_key=True),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("site", sa.String(300), nullable=False, server_default=""),
    sa.Column("source", sa.String(32), nullable=False, server_default="web"),
    # has_work: queued URLs exist that may be fetched (refetches, or new pages within the budget).
    sa.Column("has_work", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("crawl_delay", sa.Float),
    # robots.txt cache shared by every node: HTTP status (0 = unreachable), body (size-limited), expiry
    # (which is also the version a node's parsed copy is checked against).
    sa.Column("robots_status", sa.Integer),
    sa.Column("robots_body", sa.Text),
    sa.Column("robots_expires_at", sa.Float),
    sa.Column("tdmrep", sa.Text),  # /.well-known/tdmrep.json as fetched ("" = none)
    sa.Column("pages_fetched", sa.Integer, nullable=False, server_default="0"),
    sa.Column("urls_known", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.Float),
)
sa.Index("ix_hosts_site", hosts.c.site)

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
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),  # failures since a success
    sa.Column("next_fetch_at", sa.Float),  # NULL = never again (the row is finished)
    sa.Column("last_fetched_at", sa.Float),
    sa.Column("finished_at", sa.Float),  # when the last outcome was recorded (retention of finished rows)
    sa.Column("http_status", sa.Integer),
    sa.Column("error", sa.String(64)),
    sa.Column("etag", sa.String(300)),
    sa.Column("last_modified", sa.String(100)),
    # URLs sharing a variant key (one path with many queries, a calendar pattern) are capped together.
    sa.Column("variant_key", sa.BigInteger),
    sa.Column("discovered_at", sa.Float),
)
# A leased origin's due URLs in exactly the order they are fetched (an index range, no sort); the
# soonest queued URL of an origin; refetches coming due; finished rows by age; the trap cap's count.
sa.Index(
    "ix_frontier_queue",
    frontier.c.origin,
    frontier.c.state,
    frontier.c.priority.desc(),
    frontier.c.discovered_at,
    frontier.c.url_hash,
)
sa.Index("ix_frontier_next", frontier.c.origin, frontier.c.state, frontier.c.next_fetch_at)
sa.Index("ix_frontier_refetch", frontier.c.state, frontier.c.next_fetch_at)
sa.Index(
    "ix_frontier_finished",
    frontier.c.finished_at,
    postgresql_where=frontier.c.next_fetch_at.is_(None),
    sqlite_where=frontier.c.next_fetch_at.is_(None),
)
sa.Index("ix_frontier_variant", frontier.c.variant_key)

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
    # [[offset, level, heading], ...]: where the text's section headings start (migration 0018). The
    # headings are lines of `text` as it is; this only says which lines they are.
    sa.Column("sections", sa.JSON),
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
    # Claims so far: a page that keeps crashing the text engine's pool is quarantined after a few.
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
)

# --- dropped pages (migration 0006) ---------------------------------------------------------------
# Every page (or part of a long one) the text pipeline drops, with the rule that dropped it: what it
# measured and the threshold. A bounded log (REJECTIONS_MAX_ROWS, oldest pruned), for `aifactory explain`
# and the dashboard; the per domain x reason totals in rejection_counts are never pruned.

rejections = sa.Table(
    "rejections",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("domain", sa.String(255), nullable=False, server_default=""),
    sa.Column("source", sa.String(32), nullable=False, server_default=""),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("detail", sa.String(64), nullable=False, server_default=""),  # e.g. "cjk dup_5gram"
    sa.Column("value", sa.Float, nullable=False, server_default="0"),
    sa.Column("threshold", sa.Float, nullable=False, server_default="0"),
    sa.Column("language", sa.String(16), nullable=False, server_default=""),
    sa.Column("chars", sa.Integer, nullable=False, server_default="0"),
    sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
)

rejection_counts = sa.Table(
    "rejection_counts",
    metadata,
    sa.Column("domain", sa.String(255), primary_key=True),
    sa.Column("reason", sa.String(64), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("last_at", sa.Float),
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

# --- serving (issue #10) --------------------------------------------------------------------------------
# RAG passages: documents cut into passages of about RAG_PASSAGE_CHARS characters, deleted with their
# document. The full-text index lives beside them: on SQLite an FTS5 table `rag_fts` (trigram tokenizer,
# kept in sync by triggers, created by migration 0009); on PostgreSQL the `grams` tsvector with a GIN
# index (NULL on SQLite).
rag_passages = sa.Table(
    "rag_passages",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("doc_id", sa.BigInteger, sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
    sa.Column("ord", sa.Integer, nullable=False),  # the passage's place in its document
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("grams", sa.Text().with_variant(postgresql.TSVECTOR(), "postgresql")),
    sa.UniqueConstraint("doc_id", "ord", name="uq_rag_passages_doc_ord"),
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

# --- conversations (issue #18) -------------------------------------------------------------------------
# One row per conversation for chat tuning: ingested from files (OpenAI, ShareGPT, Alpaca) or built from
# the corpus (synthetic, with the document it came from). `key` names the conversation across versions
# (file and record, or the document and question), like a document's URL: a new text under the same key
# replaces the row and counts up `version`. `split` is drawn once from the key and never changes.
conversations = sa.Table(
    "conversations",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(600), nullable=False, unique=True),
    sa.Column("origin", sa.String(500), nullable=False, server_default=""),  # file name or "corpus"
    sa.Column("source_url", sa.String(2000), nullable=False, server_default=""),
    sa.Column("domain", sa.String(255), nullable=False, server_default=""),
    sa.Column("format", sa.String(32), nullable=False),  # openai, sharegpt, alpaca, definition, howto
    sa.Column("synthetic", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("messages", sa.JSON, nullable=False),  # [{"role", "content"}, ...]
    sa.Column("language", sa.String(16), nullable=False, server_default="und"),
    sa.Column("split", sa.String(8), nullable=False, server_default="train"),  # train | val
    sa.Column("content_hash", sa.LargeBinary(16), nullable=False, unique=True),
    sa.Column("turns", sa.Integer, nullable=False, server_default="0"),
    sa.Column("char_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("license_tag", sa.String(64), nullable=False, server_default="unknown"),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("doc_id", sa.BigInteger),  # the document a synthetic conversation was built from
    sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
sa.Index("ix_conversations_split", conversations.c.split, conversations.c.synthetic)
sa.Index("ix_conversations_doc_id", conversations.c.doc_id)

# --- evaluation and model registry (issue #12) ---------------------------------------------------------
# One evaluation_runs row per finished evaluation, written in one transaction with its parts, prompt
# results and growth samples: an interrupted evaluation leaves nothing. evaluation_jobs is the progress
# of evaluations asked for through the API (a job is not a run). model_versions are the registered,
# immutable version directories under DATA_DIR/models; model_registry is one row (id 1) that says which
# version is production and which is its rollback target, moved by compare-and-set on `revision`, so
# of two promotions at once exactly one wins. model_promotions is the history of moves and refusals.

evaluation_runs = sa.Table(
    "evaluation_runs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(64), nullable=False),  # best, latest, production, v3, a path's name
    sa.Column("checkpoint", sa.String(255), nullable=False),  # the checkpoint directory's name
    sa.Column("version", sa.Integer),  # the model version it was, when it was a registered one
    sa.Column("step", sa.BigInteger, nullable=False),
    sa.Column("tokens_seen", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("digest", sa.String(64), nullable=False),  # sha256 of the weights
    sa.Column("task_version", sa.String(64), nullable=False),  # scores compare only within one
    sa.Column("score", sa.Float, nullable=False),  # 0..1, see docs/evaluation.md
    sa.Column("mc_accuracy", sa.Float, nullable=False),
    sa.Column("mc_chance", sa.Float, nullable=False),
    sa.Column("bpb", sa.Float),
    sa.Column("prompt_score", sa.Float),
    sa.Column("report", sa.JSON, nullable=False),  # the whole report, as `aifactory eval --json` prints
    sa.Column("seconds", sa.Float, nullable=False),
    sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
)
sa.Index("ix_evaluation_runs_digest", evaluation_runs.c.digest)

evaluation_parts = sa.Table(
    "evaluation_parts",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "run_id", sa.BigInteger, sa.ForeignKey("evaluation_runs.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("part", sa.String(32), nullable=False),  # mc, bpb
    sa.Column("language", sa.String(16), nullable=False),  # "" = overall
    sa.Column("value", sa.Float),  # accuracy for mc, bits per byte for bpb
    sa.Column("chance", sa.Float),  # mc: the accuracy of guessing
    sa.Column("items", sa.Integer, nullable=False, server_default="0"),
)
sa.Index("ix_evaluation_parts_run", evaluation_parts.c.run_id)

prompt_results = sa.Table(
    "prompt_results",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "run_id", sa.BigInteger, sa.ForeignKey("evaluation_runs.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("prompt_id", sa.String(128), nullable=False),
    sa.Column("language", sa.String(16), nullable=False),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("output", sa.Text, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("matched", sa.JSON, nullable=False),  # the expected keywords found in the output
)
sa.Index("ix_prompt_results_run", prompt_results.c.run_id)

growth_samples = sa.Table(
    "growth_samples",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "run_id", sa.BigInteger, sa.ForeignKey("evaluation_runs.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("step", sa.BigInteger, nullable=False),
    sa.Column("prompt_id", sa.String(128), nullable=False),
    sa.Column("language", sa.String(16), nullable=False),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("output", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
sa.Index("ix_growth_samples_prompt", growth_samples.c.prompt_id, growth_samples.c.step)

evaluation_jobs = sa.Table(
    "evaluation_jobs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(1000), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # running, done, failed
    sa.Column("progress", sa.Float, nullable=False, server_default="0"),
    sa.Column("message", sa.Text, nullable=False, server_default=""),
    sa.Column("run_id", sa.BigInteger),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    sa.Column("pid", sa.Integer),
    sa.Column("pid_started", sa.Float),  # the process's start time: tells a reused pid from it
    sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
    sa.Column("updated_at", sa.Float),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("version", sa.Integer, nullable=False, unique=True),  # v<version>
    sa.Column("digest", sa.String(64), nullable=False, unique=True),  # sha256 of the weights
    sa.Column("origin", sa.String(16), nullable=False),  # checkpoint, import, update
    sa.Column("checkpoint", sa.String(255), nullable=False, server_default=""),
    sa.Column("step", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("tokenizer_hash", sa.String(64), nullable=False, server_default=""),
    sa.Column("dataset_version", sa.String(128), nullable=False, server_default=""),
    sa.Column("parameters", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("size_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("card", sa.JSON, nullable=False),  # model_card.json
    sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("deleted_at", sa.Float),  # its directory was removed by retention
)

model_registry = sa.Table(
    "model_registry",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),  # always 1
    sa.Column("production", sa.Integer),  # a model_versions.version
    sa.Column("previous", sa.Integer),  # the rollback target
    sa.Column("revision", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("updated_at", sa.Float),
)

model_promotions = sa.Table(
    "model_promotions",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("action", sa.String(16), nullable=False),  # promote, rollback, refused
    sa.Column("version", sa.Integer),
    sa.Column("previous", sa.Integer),
    sa.Column("forced", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("candidate_score", sa.Float),
    sa.Column("production_score", sa.Float),
    sa.Column("rule", sa.Text, nullable=False, server_default=""),
    sa.Column("node_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
)
