"""The `aifactory` command.

aifactory up            start the master: web dashboard/API on HOST:PORT and every engine
aifactory worker        start a collection-only node on a shared PostgreSQL
aifactory status        print nodes, engines and counters from the database
aifactory config        print the effective settings (secrets masked) and the auto-tune profile
aifactory db upgrade    apply database migrations
aifactory crawl URL...  crawl from these URLs now (one-off, with a progress line) and print a summary
aifactory ingest PATH   import local files through the text pipeline (--chat: conversations)
aifactory explain URL   why a page was kept or dropped: every quality rule's value, threshold and verdict
aifactory train         train the model in the foreground for a number of steps
aifactory model info    print the checkpoints' size, parameters and provenance
aifactory dataset build tokenize the documents that are new since the last build
aifactory dataset info  print the tokenizer generations, datasets and versions
aifactory tokenizer train [--new-generation]  train the tokenizer (a new one starts a new generation)
aifactory generate "prompt"   print one answer of the model, token by token (--json for the full result)
aifactory chat          an interactive chat with the model in the terminal (/reset, /quit)
aifactory export hf|gguf|ollama|lmstudio  export a trained model (docs/export.md)
aifactory finetune lora --base DIR --output OUT  LoRA on an existing open model, merged, as GGUF
aifactory service install [--user] | status | uninstall   the node as a systemd service
aifactory backup [DIR]  a consistent backup while the factory runs; aifactory restore DIR [--force]
aifactory update model --from URL [--promote] | update app --from URL   updates from a version.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from aifactory import __version__
from aifactory.db import DatabaseError, counters, migrate
from aifactory.db.connect import opened_database
from aifactory.launch import StartupError
from aifactory.logs import configure_logging
from aifactory.settings import (
    Settings,
    SettingsError,
    configuration_markdown,
    display_value,
    env_name,
    load_settings,
    mask_secrets,
)

# Each command imports what it needs when it runs (the web stack, the crawler, torch...): `aifactory
# status` and `aifactory config` load settings and the database layer only. benchmarks/cli_start.py
# measures it.


def configure_quiet_logging(settings: Settings) -> None:
    """Warnings only at the default level: commands with a progress line say the rest themselves."""
    configure_logging(settings, "warning" if settings.log_level == "info" else settings.log_level)


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from aifactory.launch import run_master

    configure_logging(settings)
    run_master(settings)
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from aifactory.launch import run_worker

    configure_logging(settings)
    run_worker(settings.model_copy(update={"system_role": "worker"}))
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from aifactory.cluster import engine_state, membership

    with opened_database(settings, schema="none") as db:
        if migrate.current_revision(db) is None:
            print(f"database {db.display_url} is empty: start the factory with `aifactory up` first")
            return 1
        migrate.check(db)
        rows = membership.list_nodes(db, offline_after=settings.node_offline_window_sec)
        states = engine_state.list_states(db)
        totals = counters.get_all(db)
    if args.json:
        print(json.dumps({"nodes": rows, "engines": states, "counters": totals}, indent=2, default=str))
        return 0
    print(f"database: {db.display_url}")
    if not rows:
        print("no nodes have registered yet")
    for row in rows:
        age = "never" if row["heartbeat_age"] is None else f"{row['heartbeat_age']:.0f}s ago"
        where = f"host={row['hostname']}"
        print(f"node {row['node_id']}  role={row['role']}  {row['state']}  heartbeat {age}  {where}")
        for engine in (s for s in states if s["node_id"] == row["node_id"]):
            line = f"    engine {engine['engine']:<12} wants {engine['desired']:<8} phase {engine['phase']}"
            if engine["detail"]:
                line += f"  ({engine['detail']})"
            print(line)
    if totals:
        print("counters:")
        for name, value in totals.items():
            print(f"    {name} = {value}")
    return 0


def cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    from aifactory.autotune import resolve_profile

    if args.markdown:
        print(configuration_markdown())
        return 0
    profile = resolve_profile(settings)
    values = {env_name(name): display_value(settings, name) for name in Settings.model_fields}
    if args.json:
        print(json.dumps({"settings": values, "auto_profile": profile.as_dict()}, indent=2))
        return 0
    explicit = settings.model_fields_set
    for name in Settings.model_fields:
        source = "set" if name in explicit else "default"
        print(f"{env_name(name)}={display_value(settings, name)}    # {source}")
    print(f"# database in use: {display_value(settings, 'database_url') or settings.resolved_database_url()}")
    print(
        f"# auto-tune profile ({'on' if profile.auto_tune else 'off'}; chosen: "
        f"{', '.join(profile.auto_chosen) or 'nothing'}):"
    )
    for key, value in profile.as_dict().items():
        if key not in ("auto_chosen", "auto_tune"):
            print(f"#   {key} = {value}")
    return 0


def cmd_db_upgrade(settings: Settings, args: argparse.Namespace) -> int:
    with opened_database(settings, schema="none") as db:
        started = time.monotonic()
        before = migrate.upgrade(db)
        after = migrate.current_revision(db)
    if before == after:
        print(f"database {db.display_url} is up to date (revision {after})")
    else:
        print(
            f"database {db.display_url} upgraded from {before or 'empty'} to {after} "
            f"in {time.monotonic() - started:.1f}s"
        )
    return 0


def cmd_crawl(settings: Settings, args: argparse.Namespace) -> int:
    from aifactory.collect.oneoff import crawl_command  # the crawler's imports only when crawling

    configure_quiet_logging(settings)
    with opened_database(settings) as db:
        return crawl_command(settings, db, args.urls, args.max_pages, args.refetch)


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    from aifactory.text.ingest import ingest  # text-processing imports only when ingesting

    configure_quiet_logging(settings)
    missing = [str(path) for path in args.paths if not path.exists()]
    if missing:
        print(f"aifactory: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 1
    if args.chat:
        return cmd_ingest_chat(settings, args)
    with opened_database(settings) as db:
        totals, skipped = ingest(settings, db, args.paths)
    filtered = {
        k.removeprefix("docs.filtered."): v for k, v in totals.items() if k.startswith("docs.filtered.")
    }
    duplicates = totals["docs.duplicate.exact"] + totals["docs.duplicate.near"]
    print(
        f"{totals['docs.read']} documents read: {totals['docs.stored']} stored, {duplicates} duplicates, "
        f"{sum(filtered.values())} filtered"
    )
    for reason, count in sorted(filtered.items(), key=lambda item: -item[1]):
        print(f"    filtered {reason}: {count}")
    for line in skipped:
        print(f"    skipped {line}")
    print(f"database: {db.display_url}")
    return 0


def cmd_ingest_chat(settings: Settings, args: argparse.Namespace) -> int:
    from aifactory.chat.ingest import ingest_files, render

    with opened_database(settings) as db:
        results, errors = ingest_files(settings, db, args.paths)
        for line in render(results, []):
            print(line)
        for error in errors:
            print(f"aifactory ingest --chat: {error}", file=sys.stderr)
        if not results and not errors:
            print("aifactory ingest --chat: no .jsonl or .json files found", file=sys.stderr)
        print(f"database: {db.display_url}")
    return 1 if errors or not results else 0


def cmd_explain(settings: Settings, args: argparse.Namespace) -> int:
    from aifactory.text.explain import as_dict, explain, render  # text-processing imports only here

    configure_quiet_logging(settings)
    with opened_database(settings) as db:
        found = explain(settings, db, args.url, fetch=not args.no_fetch)
    if args.json:
        print(json.dumps(as_dict(found), indent=2, ensure_ascii=False, default=str))
    else:
        print("\n".join(render(found)))
    return 0 if found.known else 1


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from aifactory.train.foreground import train_command  # imports torch: only when training

    return train_command(
        settings,
        steps=args.steps,
        text_file=args.text_file,
        out=args.checkpoint_dir,
        chat_only=args.chat_only,
    )


def cmd_model_info(settings: Settings, args: argparse.Namespace) -> int:
    from aifactory.train.foreground import model_info_command

    return model_info_command(settings, directory=args.checkpoint_dir, as_json=args.json)


def cmd_dataset_build(settings: Settings, args: argparse.Namespace) -> int:
    from aifactory.dataset.commands import dataset_build_command

    configure_logging(settings)
    with opened_database(settings) as db:
        return dataset_build_command(settings, db)


def cmd_dataset_info(settings: Settings, args: argparse.Namespace) -> int:
    from aifactory.dataset.commands import dataset_info_command

    with opened_database(settings) as db:
        return dataset_info_command(settings, db, args.json)


def cmd_tokenizer_train(settings: Settings, args: argparse.Namespace) -> int:
    from aifactory.dataset.commands import tokenizer_train_command

    configure_logging(settings)
    with opened_database(settings) as db:
        return tokenizer_train_command(settings, db, args.new_generation)


def cmd_generate(settings: Settings, args: argparse.Namespace) -> int:
    from aifactory.serve.cli import generate_command

    configure_quiet_logging(settings)
    return generate_command(settings, args)


def cmd_chat(settings: Settings, args: argparse.Namespace) -> int:
    from aifactory.serve.cli import chat_command

    configure_quiet_logging(settings)
    return chat_command(settings, args)


def add_generation_options(parser: argparse.ArgumentParser) -> None:
    """The sampling options of `generate` and `chat` (the native API's defaults)."""
    parser.add_argument(
        "--url", help="a running factory (http://HOST:PORT) instead of the local data directory"
    )
    parser.add_argument("--api-key", help="one of the server's API_KEYS (with --url)")
    parser.add_argument("--model", help="latest, best, production or vN (default: see docs/serving.md)")
    parser.add_argument(
        "--max-tokens", type=int, help="tokens to generate (default SERVE_DEFAULT_MAX_TOKENS)"
    )
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    parser.add_argument("--top-k", type=int, default=50, help="sample among the k most likely (default 50)")
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default 0.95)")
    parser.add_argument("--repetition-penalty", type=float, default=1.08, help="1 = off (default 1.08)")
    parser.add_argument("--seed", type=int, help="same seed and options = same text")
    parser.add_argument("--stop", action="append", help="stop before this string (repeatable)")
    rag = parser.add_mutually_exclusive_group()
    rag.add_argument(
        "--rag", dest="rag", action="store_true", default=None, help="cite passages of the corpus"
    )
    rag.add_argument("--no-rag", dest="rag", action="store_false", help="the bare model, no retrieval")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aifactory",
        description="AI Factory Engine: collect web text, train a language model on it continuously, "
        "and serve it. Settings come from environment variables and .env (see `aifactory config`).",
    )
    parser.add_argument("--version", action="version", version=f"aifactory {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    up = sub.add_parser(
        "up",
        help="start the master node: web dashboard/API and every engine",
        description="Start the master node: the web server on HOST:PORT (default "
        "127.0.0.1:8000) and the supervisor that runs the engines. Press Ignite in the "
        "dashboard or POST /api/control to start collecting and training. Ctrl-C stops.",
    )
    up.set_defaults(func=cmd_up)

    worker = sub.add_parser(
        "worker",
        help="start a collection-only node on a shared PostgreSQL",
        description="Start a worker: it joins the master's PostgreSQL (DATABASE_URL), "
        "sends heartbeats, obeys start/stop from the dashboard and runs only "
        "collection. No web server.",
    )
    worker.set_defaults(func=cmd_worker)

    status = sub.add_parser(
        "status",
        help="print nodes, engines and counters from the database",
        description="Print every node (online or not), its engines and the running "
        "counters, read from the database; works while the factory runs or not.",
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.set_defaults(func=cmd_status)

    config = sub.add_parser(
        "config",
        help="print the effective settings and the auto-tune profile",
        description="Print every setting with its effective value (secrets masked) "
        "and whether it was set or is the default, then the auto-tune profile.",
    )
    config.add_argument("--json", action="store_true", help="print JSON instead of env lines")
    config.add_argument(
        "--markdown", action="store_true", help="print docs/configuration.md (the settings reference)"
    )
    config.set_defaults(func=cmd_config)

    db = sub.add_parser("db", help="database maintenance", description="Database maintenance.")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    upgrade = db_sub.add_parser(
        "upgrade",
        help="apply pending migrations (also done by the master at start)",
        description="Apply pending schema migrations to DATABASE_URL. The master does this when it starts; "
        "workers never do, and refuse to run on a schema of another version.",
    )
    upgrade.set_defaults(func=cmd_db_upgrade)

    crawl = sub.add_parser(
        "crawl",
        help="crawl from the given URLs now and print a summary",
        description="Crawl the sites of the given URLs once, with the crawler settings "
        "(robots.txt, CRAWLER_DOMAIN_MIN_INTERVAL_SEC between requests to a host, network "
        "safety) and the configured database, showing progress on stderr. Pages land in the "
        "frontier and the pages table like the collector engine's. Local or private "
        "addresses need CRAWLER_PRIVATE_ALLOWLIST (e.g. 127.0.0.1).",
    )
    crawl.add_argument("urls", nargs="+", metavar="URL", help="start URLs (http:// or https://)")
    crawl.add_argument(
        "--max-pages", type=int, default=100, metavar="N", help="fetch at most N pages (default 100)"
    )
    crawl.add_argument(
        "--refetch", action="store_true", help="fetch the start URLs again even if crawled before"
    )
    crawl.set_defaults(func=cmd_crawl)

    ingest = sub.add_parser(
        "ingest",
        help="import local files (.txt, .md, .html, .jsonl, wiki dumps) as documents",
        description="Import local files and folders through the same pipeline as crawled pages "
        "(extraction, language, quality, PII masking, deduplication, policies): .txt, .md, .html, "
        ".jsonl with a `text` field, and Wikipedia pages-articles dumps (.xml, .xml.bz2).",
    )
    ingest.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders")
    ingest.add_argument(
        "--chat",
        action="store_true",
        help="the files are conversations (OpenAI messages, ShareGPT or Alpaca JSONL) for chat tuning",
    )
    ingest.set_defaults(func=cmd_ingest)

    explain = sub.add_parser(
        "explain",
        help="why a page was kept or dropped: every quality rule's value, threshold and verdict",
        description="Look a URL (or a local file) up in the database (stored documents, recorded "
        "rejections, pages waiting to be processed), get the page (the waiting copy, the file, or one "
        "polite fetch that obeys robots.txt and the crawler's network-safety rules) and run it through "
        "the text pipeline's extraction and quality rules, printing each rule's measured value, its "
        "threshold and its verdict. Exits with 1 when the URL is unknown and cannot be fetched.",
    )
    explain.add_argument("url", metavar="URL", help="http(s) URL, file:// URL or path of a local file")
    explain.add_argument("--no-fetch", action="store_true", help="do not fetch the page; use what is stored")
    explain.add_argument("--json", action="store_true", help="print JSON")
    explain.set_defaults(func=cmd_explain)

    train = sub.add_parser(
        "train",
        help="train the model in the foreground for a number of steps",
        description="Train for --steps more optimizer steps in the foreground, with a progress bar: the "
        "trainer engine's cycles (evaluations, best/latest checkpoints in DATA_DIR/checkpoints, early "
        "stopping, rollback and retry). Resumes from the latest checkpoint. Ctrl-C stops after the current "
        "step and saves. Run it under `torchrun --nproc_per_node N -m aifactory train ...` for "
        "DistributedDataParallel training.",
    )
    train.add_argument("--steps", type=int, required=True, help="optimizer steps to train")
    train.add_argument(
        "--text-file",
        type=Path,
        help="train on this text file, one token per UTF-8 byte, instead of the token dataset "
        "(`aifactory dataset build`)",
    )
    train.add_argument(
        "--chat-only",
        action="store_true",
        help="fine-tune the current model on the conversations only (loss on assistant tokens)",
    )
    train.add_argument(
        "--checkpoint-dir", type=Path, help="where checkpoints go (default: DATA_DIR/checkpoints)"
    )
    train.set_defaults(func=cmd_train)

    model = sub.add_parser(
        "model", help="inspect the trained model", description="Inspect the trained model."
    )
    model_sub = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    info = model_sub.add_parser(
        "info",
        help="print size, parameters and provenance of the checkpoints",
        description="Print the latest, best and backup checkpoints: shape, parameter count, size on disk, "
        "step, tokens seen, losses, tokenizer and dataset version they were trained on.",
    )
    info.add_argument("--checkpoint-dir", type=Path, help="default: DATA_DIR/checkpoints")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=cmd_model_info)

    dataset = sub.add_parser(
        "dataset",
        help="build and inspect the token dataset",
        description="Build and inspect the token dataset.",
    )
    dataset_sub = dataset.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    dataset_build = dataset_sub.add_parser(
        "build",
        help="tokenize the documents that are new since the last build",
        description="Append the token ids of every document not tokenized yet to the newest tokenizer "
        "generation's shards in DATA_DIR/dataset (in parallel processes), and record a dataset version. "
        "Does nothing when there is nothing new; a build that is interrupted leaves the previous "
        "version usable.",
    )
    dataset_build.set_defaults(func=cmd_dataset_build)
    dataset_info = dataset_sub.add_parser(
        "info",
        help="print the tokenizer generations, datasets and recent versions",
        description="Print each tokenizer generation (hash, vocabulary, file), its dataset (documents, "
        "training and validation tokens, shards) and the most recent dataset versions.",
    )
    dataset_info.add_argument("--json", action="store_true", help="print JSON")
    dataset_info.set_defaults(func=cmd_dataset_info)

    tokenizer = sub.add_parser(
        "tokenizer", help="train the tokenizer", description="Train the SentencePiece tokenizer."
    )
    tokenizer_sub = tokenizer.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    tokenizer_train = tokenizer_sub.add_parser(
        "train",
        help="train the tokenizer on a sample of the allowed corpus",
        description="Train the SentencePiece tokenizer (TRAIN_VOCAB_SIZE, TOKENIZER_MODEL_TYPE) on a sample "
        "of TOKENIZER_SAMPLE_CHARS characters of the allowed corpus, into DATA_DIR/tokenizer/g<N>. The "
        "dataset engine does this once by itself; retraining starts a new model generation (new token "
        "data, a new model) and needs --new-generation.",
    )
    tokenizer_train.add_argument(
        "--new-generation", action="store_true", help="train a new generation although one exists"
    )
    tokenizer_train.set_defaults(func=cmd_tokenizer_train)

    generate = sub.add_parser(
        "generate",
        help="print the model's answer to one prompt, token by token",
        description="Continue PROMPT with the model and print the text as it is generated, then the sources "
        "when RAG found some. Uses the running factory's inference engine on this data directory, or loads "
        "the model itself when none runs; --url asks a factory elsewhere.",
    )
    generate.add_argument("prompt", help="the text to continue")
    generate.add_argument("--json", action="store_true", help="print the full result (text, sources, usage)")
    add_generation_options(generate)
    generate.set_defaults(func=cmd_generate)

    chat = sub.add_parser(
        "chat",
        help="chat with the model in the terminal",
        description="An interactive chat through the chat template (docs/serving.md): answers stream as "
        "they are generated and the conversation is kept. /reset starts over, /quit (or Ctrl-D) leaves, "
        "Ctrl-C stops the answer being written.",
    )
    chat.add_argument("--system", help="a system message that opens the conversation")
    add_generation_options(chat)
    chat.set_defaults(func=cmd_chat)

    from aifactory.export.commands import add_parsers as add_export_parsers

    add_export_parsers(sub)
    from aifactory.evaluate.commands import add_parsers as add_eval_parsers
    from aifactory.registry.commands import add_parsers as add_registry_parsers

    add_eval_parsers(sub)
    add_registry_parsers(sub)

    from aifactory.ops.commands import add_parsers as add_ops_parsers

    add_ops_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[Settings, argparse.Namespace], int] = args.func
    settings: Settings | None = None
    try:
        settings = load_settings()
        return func(settings, args)
    except SettingsError as exc:
        print(f"aifactory: {exc}", file=sys.stderr)
        return 2
    except (DatabaseError, StartupError) as exc:
        message = mask_secrets(str(exc), settings.secrets() if settings else [])
        print(f"aifactory: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `aifactory config | head`: the reader left, nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
