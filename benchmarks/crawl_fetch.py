"""Crawl throughput against a local site, next to the raw HTTP throughput of the same server.

    python benchmarks/crawl_fetch.py

A fixture site of 2,016 pages on 16 hosts (127.0.0.2 to 127.0.0.17: ports of one address would be one
host for politeness; pre-rendered HTML, an aiohttp server in its own process) is crawled by 1, 2 and 4
`aifactory worker` processes sharing one PostgreSQL (AIFACTORY_BENCH_DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432/test; each run in its own schema, dropped afterwards), with
politeness intervals at 0 but robots.txt, safety checks, link extraction, the page sink (pages staged
for the text engine) and the frontier all on. Only the collector engine runs (CRAWL_BENCH_TEXT=1 runs
the text engine beside it; CRAWL_BENCH_WORKERS=1,2 chooses the worker counts). "Raw HTTP" is a bare
aiohttp client fetching the same 2,016 URLs with the same concurrency as one worker, measured in the
same run, so the ratio says what the crawler's bookkeeping costs per page. The last line is
`RESULT crawl_vs_raw_http_ratio <1-worker crawl pages/s / raw pages/s>`.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

import aiohttp
import psycopg
from aiohttp import web

HOSTS, PAGES_PER_HOST = 16, 125  # + one home page per host = 2,016 pages
CONCURRENCY = 16  # fetches at once per worker process (MAX_CRAWLER_WORKERS), and for the raw client
DOMAIN_CONCURRENCY = 4
# The text engine (extraction, in a process pool) is a separate engine that competes for the same two
# cores; the benchmark measures the crawler, so it is stopped unless CRAWL_BENCH_TEXT=1.
WITH_TEXT_ENGINE = os.environ.get("CRAWL_BENCH_TEXT") == "1"
WORKER_COUNTS = tuple(int(n) for n in os.environ.get("CRAWL_BENCH_WORKERS", "1,2,4").split(","))
DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/test"
PARAGRAPH = "<p>" + "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 30 + "</p>"


# --- the fixture server (its own process) ---------------------------------------------------------------
def site_pages() -> dict[str, bytes]:
    pages = {"/": "".join(f'<a href="/p/{i}">page {i}</a> ' for i in range(PAGES_PER_HOST))}
    for i in range(PAGES_PER_HOST):
        nav = "".join(f'<a href="/p/{(i + k) % PAGES_PER_HOST}">next {k}</a> ' for k in (1, 2, 3, 5, 8))
        pages[f"/p/{i}"] = f'<a href="/">home</a> {nav} {PARAGRAPH}'
    return {
        path: f"<!doctype html><html><head><title>{path}</title></head><body>{body}</body></html>".encode()
        for path, body in pages.items()
    }


def serve(hosts: list[tuple[str, int]], ready: multiprocessing.synchronize.Event, stats_port: int) -> None:
    pages = site_pages()
    hits = {"pages": 0, "first": 0.0, "last": 0.0}

    async def handle(request: web.Request) -> web.StreamResponse:
        body = pages.get(request.path)
        if body is None:
            return web.Response(status=404, text="not found")
        hits["pages"] += 1
        hits["last"] = time.time()
        hits["first"] = hits["first"] or hits["last"]
        return web.Response(body=body, content_type="text/html")

    async def stats(request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            hits.update(pages=0, first=0.0, last=0.0)
        return web.json_response(hits)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for host, port in hosts:
            await web.TCPSite(runner, host, port, backlog=1024).start()
        admin = web.Application()
        admin.router.add_route("*", "/stats", stats)
        admin_runner = web.AppRunner(admin, access_log=None)
        await admin_runner.setup()
        await web.TCPSite(admin_runner, "127.0.0.1", stats_port).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def free_port(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# --- measurements ---------------------------------------------------------------------------------------
async def raw_http(urls: list[str]) -> float:
    """Pages/s of a bare aiohttp client fetching every URL once with CONCURRENCY requests at a time."""
    limit = asyncio.Semaphore(CONCURRENCY)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY, limit_per_host=DOMAIN_CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def fetch(url: str) -> None:
            async with limit, session.get(url) as response:
                await response.read()

        started = time.perf_counter()
        await asyncio.gather(*(fetch(url) for url in urls))
        return len(urls) / (time.perf_counter() - started)


def server_stats(stats_port: int, reset: bool = False) -> dict:
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{stats_port}/stats", method="POST" if reset else "GET"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def schema_url(base: str, schema: str) -> str:
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}options={urllib.parse.quote(f'-csearch_path={schema}')}"


def crawl(base_url: str, seeds: list[str], total: int, workers: int, stats_port: int) -> tuple[float, int]:
    """(pages/s, pages fetched twice) for `workers` worker processes crawling the site once."""
    from aifactory.cluster import commands, membership
    from aifactory.cluster import engine_state as engine_db
    from aifactory.db import Database, migrate

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = schema_url(base_url, schema)
    db = Database(url)
    migrate.upgrade(db)
    workdir = Path(tempfile.mkdtemp(prefix="crawl-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIFACTORY_", "CRAWLER_"))}
    env.update(
        DATABASE_URL=url,
        LOG_LEVEL="warning",
        AUTO_TUNE="0",
        MAX_CRAWLER_WORKERS=str(CONCURRENCY),
        CRAWLER_DOMAIN_CONCURRENCY=str(DOMAIN_CONCURRENCY),
        CRAWLER_DOMAIN_MIN_INTERVAL_SEC="0",
        CRAWLER_BATCH_SLEEP_SEC="0",
        MAX_CRAWL_PAGES_PER_CYCLE="1000000",
        CRAWLER_PRIVATE_ALLOWLIST="127.0.0.0/8",
        CRAWLER_CONTACT_URL="https://example.invalid/benchmark",
        NODE_HEARTBEAT_INTERVAL_SEC="0.5",
        WEB_SEED_URLS=",".join(seeds),
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "aifactory", "worker"],
            cwd=workdir,
            env={**env, "NODE_ID": f"bench-{i}", "DATA_DIR": str(workdir / f"w{i}")},
            stdout=subprocess.DEVNULL,
            stderr=(workdir / f"w{i}.log").open("w"),
        )
        for i in range(workers)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(membership.active_node_ids(db, window=10, roles=("worker",))) < workers:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit(f"workers did not start; see {workdir}")
            time.sleep(0.1)
        server_stats(stats_port, reset=True)
        deadline = time.monotonic() + 60
        commands.send_command(db, "start")
        if not WITH_TEXT_ENGINE:  # only the collector runs: the text engine is measured on its own
            with psycopg.connect(url, autocommit=True) as conn:
                waiting = "SELECT count(*) FROM nodes WHERE applied_seq < command_seq"
                while conn.execute(waiting).fetchone()[0]:  # type: ignore[index]
                    if time.monotonic() > deadline:
                        raise SystemExit(f"workers did not take the start command; see {workdir}")
                    time.sleep(0.02)
            for i in range(workers):
                for engine in ("text", "sources"):
                    engine_db.set_desired(db, f"bench-{i}", "stopped", engine=engine)
        deadline = time.monotonic() + 600
        print(f"  crawling with {workers} worker(s)...", flush=True)
        done_query = f"SELECT count(*) FROM \"{schema}\".frontier WHERE state = 'done'"
        with psycopg.connect(base_url, autocommit=True) as conn:
            while conn.execute(done_query).fetchone()[0] < total:  # type: ignore[index]
                if time.monotonic() > deadline:
                    raise SystemExit("the crawl did not finish in 10 minutes")
                time.sleep(0.05)
        finished = time.time()
        stats = server_stats(stats_port)
        # From the first page request to the moment every page is handed off and recorded.
        rate = total / (finished - stats["first"])
        return rate, stats["pages"] - total
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        db.dispose()
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main() -> None:
    base_url = os.environ.get("AIFACTORY_BENCH_DATABASE_URL", DEFAULT_DB)
    stats_port = free_port("127.0.0.1")
    hosts = [(f"127.0.0.{2 + i}", 0) for i in range(HOSTS)]
    hosts = [(host, free_port(host)) for host, _ in hosts]
    ready = multiprocessing.get_context("spawn").Event()
    server = multiprocessing.get_context("spawn").Process(
        target=serve, args=(hosts, ready, stats_port), daemon=True
    )
    server.start()
    if not ready.wait(30):
        raise SystemExit("the fixture server did not start")
    try:
        paths = list(site_pages())
        seeds = [f"http://{host}:{port}/" for host, port in hosts]
        urls = [f"http://{host}:{port}{path}" for host, port in hosts for path in paths]
        total = len(urls)
        print(f"fixture: {total} pages on {HOSTS} hosts (127.0.0.2-{1 + HOSTS}), server in its own process")
        print(f"cores: {os.cpu_count()}; database: PostgreSQL ({base_url.split('@')[-1]})")
        asyncio.run(raw_http(urls[:200]))  # warm up
        raw = statistics.median(asyncio.run(raw_http(urls)) for _ in range(5))  # a short run: take 5
        print(f"raw HTTP    1 client process, {CONCURRENCY} concurrent : {raw:8.1f} pages/s (median of 5)")
        ratio = 0.0
        for workers in WORKER_COUNTS:
            rate, twice = crawl(base_url, seeds, total, workers, stats_port)
            label = f"{workers} worker process{'es' if workers > 1 else ''}"
            print(
                f"crawl       {label:<19}, {CONCURRENCY} concurrent each: {rate:8.1f} pages/s  "
                f"ratio to raw {rate / raw:5.3f}  (pages fetched twice: {twice})"
            )
            if workers == 1:
                ratio = rate / raw
        print(f"RESULT crawl_vs_raw_http_ratio {ratio:.3f}")
    finally:
        server.terminate()
        server.join(10)


if __name__ == "__main__":
    main()
