"""How the dashboard's overview loads on a young factory and on a big one.

Two SQLite factory databases (the `make run` default), one with 1,000 documents and one with 1,000,000
(written by one INSERT ... SELECT over a recursive sequence, so the big one takes seconds to build, not
an hour), each served by `aifactory up`. Debian's Chromium (Playwright) opens the page ROUNDS times per
database, each time in a fresh browser context (nothing cached), and the time from navigation to the
overview's first full render (the page's `overview-ready` mark: state, training history, dataset and
model read) and the bytes transferred (the page, its files and the API answers, from Resource Timing)
are taken; medians are compared side by side.

Aim: the 1M figure at most 1.5x the 1k one (no overview read may walk the documents), and the page's
total transfer under 1 MB.

    python benchmarks/dashboard_load.py [--rounds 7] [--big 1000000]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
SMALL = 1_000
BUILD_LIMIT_SEC = 600  # the big database must build within this (it takes well under a minute)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build(path: Path, count: int) -> float:
    """A migrated factory database with `count` documents and the counters that go with them."""
    from aifactory.db import Database, kv, migrate
    from aifactory.serve.rag import WATERMARK_KEY as RAG_WATERMARK

    started = time.perf_counter()
    db = Database(f"sqlite:///{path}")
    migrate.upgrade(db)
    text = "The river council met to discuss the new ferry timetable for the island. " * 4
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < :count) "
                "INSERT INTO documents (url, final_url, domain, title, text, char_count, language, "
                "language_confidence, source_type, quality_score, content_hash, license_tag, "
                "allowed_for_training, block_reason, optout_reason, published, node_id, created_at) "
                "SELECT 'https://site' || (x % 5000) || '.example/page/' || x, '', "
                "'site' || (x % 5000) || '.example', 'Page ' || x, :text || x, :chars, "
                "CASE WHEN x % 3 = 0 THEN 'ja' ELSE 'en' END, 0.99, 'web', 0.5, randomblob(16), "
                "'unknown', 1, '', '', '', 'bench', :now - x FROM n"
            ),
            {"count": count, "text": text, "chars": len(text) + 7, "now": time.time()},
        )
        conn.execute(
            sa.text(
                "INSERT INTO counters (name, node_id, value, updated_at) VALUES (:name, 'bench', :v, :now)"
            ),
            [
                {"name": "docs.stored", "v": count, "now": time.time()},
                {"name": "docs.stored.web", "v": count, "now": time.time()},
                {"name": "docs.chars", "v": count * (len(text) + 7), "now": time.time()},
            ],
        )
    # As a corpus the inference engine has already indexed for RAG: otherwise its indexer would spend
    # the measurement indexing a million documents, and the benchmark would time that, not the page.
    kv.set_value(db, RAG_WATERMARK, str(count))
    db.dispose()
    return time.perf_counter() - started


def serve(database: Path, data_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIFACTORY_")}
    env.update(
        DATABASE_URL=f"sqlite:///{database}", DATA_DIR=str(data_dir), HOST="127.0.0.1", PORT=str(port),
        AUTO_TUNE="0", PYTHONPATH=str(ROOT / "src"),
    )  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "aifactory", "up"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the factory on {database} did not start")


def measure(browser: object, url: str, rounds: int) -> tuple[float, int]:
    """Median milliseconds to the overview's first full render, and bytes of the last round."""
    times, size = [], 0
    for _ in range(rounds + 1):  # the first round warms the server (imports, caches); not counted
        context = browser.new_context()  # type: ignore[attr-defined]
        page = context.new_page()
        page.goto(url + "/")
        page.wait_for_selector("html[data-overview=ready]", timeout=60_000)
        ready = page.evaluate("performance.getEntriesByName('overview-ready')[0].startTime")
        size = page.evaluate(
            "performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
            ".reduce((sum, e) => sum + (e.transferSize || e.encodedBodySize || 0), 0)"
        )
        times.append(ready)
        context.close()
    return statistics.median(times[1:]), int(size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--big", type=int, default=1_000_000)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for count in (SMALL, args.big):
            database = Path(tmp) / f"factory-{count}.db"
            seconds = build(database, count)
            megabytes = database.stat().st_size / 1e6
            print(f"built a database of {count:,} documents in {seconds:.1f}s ({megabytes:.0f} MB)")
            if seconds > BUILD_LIMIT_SEC:
                raise SystemExit("the database took too long to build")
            proc, url = serve(database, Path(tmp) / f"data-{count}")
            try:
                with sync_playwright() as playwright:
                    browser = playwright.chromium.launch(
                        executable_path=CHROMIUM,
                        args=[
                            "--headless",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-background-networking",
                        ],
                    )
                    results[count] = measure(browser, url, args.rounds)
                    browser.close()
            finally:
                proc.terminate()
                proc.wait(30)
    (small_ms, small_bytes), (big_ms, big_bytes) = results[SMALL], results[args.big]
    print(f"{'documents':>12} {'first render (ms)':>18} {'bytes':>10}")
    print(f"{SMALL:>12,} {small_ms:>18.0f} {small_bytes:>10,}")
    print(f"{args.big:>12,} {big_ms:>18.0f} {big_bytes:>10,}")
    print(f"1M / 1k: {big_ms / small_ms:.2f}x (aim <= 1.5x); transfer {big_bytes / 1e6:.3f} MB (aim < 1 MB)")
    print(f"RESULT dashboard_scale_ratio {big_ms / small_ms:.3f}")
    print(f"RESULT dashboard_bytes {big_bytes}")


if __name__ == "__main__":
    main()
