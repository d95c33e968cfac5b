"""How quickly the everyday commands answer, and how counters scale across the nodes of a cluster.

1. Wall time of `aifactory status` and `aifactory config` against `python -c "import sqlalchemy,
   pydantic_settings"`, the floor of any command that reads settings and the database (aim: <= 1.5x).
   The commands import neither the web stack nor the crawler nor the tokenizer: checked here too.
2. Store transactions per second of 4 node processes on PostgreSQL, each adding to the running counters
   in its transaction as the text pipeline's store does (documents in, counters up, staged pages out,
   commit): one counter row per node, as the factory keeps them, against one shared row per counter,
   as it used to. With shared rows a transaction waits for the row locks of the others until they
   commit. The nodes of a cluster reach the database over the network, and a lock is held for the
   round trips of the rest of its transaction: the nodes talk to PostgreSQL through a proxy that adds
   LAN_RTT_MS of round trip (printed too: the same run on the local socket, where the machine's CPUs,
   not the locks, are the limit).

    python benchmarks/cli_start.py [--rounds 15] [--seconds 4] [--database-url postgresql://...]

The PostgreSQL part uses AIFACTORY_TEST_DATABASE_URL (or --database-url) and a scratch schema it drops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

HEAVY = ("uvicorn", "aiohttp", "trafilatura", "sentencepiece", "torch", "fastapi")
NODES = 4
LAN_RTT_MS = 1.0


def wall(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def heavy_imports(command: list[str], cwd: Path, env: dict[str, str]) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *command[1:]], cwd=cwd, env=env, capture_output=True, text=True
    )
    modules = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in result.stderr.splitlines()}
    return sorted(modules & set(HEAVY))


def cli_start(rounds: int) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIFACTORY_", "DATABASE_URL"))}
    env["AUTO_TUNE"] = "0"
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        aifactory = [sys.executable, "-m", "aifactory"]
        subprocess.run([*aifactory, "db", "upgrade"], cwd=cwd, env=env, check=True, capture_output=True)
        commands = {
            "floor": [sys.executable, "-c", "import sqlalchemy, pydantic_settings"],
            "status": [*aifactory, "status"],
            "config": [*aifactory, "config"],
        }
        for name in ("status", "config"):
            loaded = heavy_imports(commands[name], cwd, env)
            print(
                f"aifactory {name} imports {', '.join(loaded) if loaded else 'none of ' + ', '.join(HEAVY)}"
            )
        times: dict[str, list[float]] = {name: [] for name in commands}
        for command in commands.values():  # warm the file cache once
            wall(command, cwd, env)
        for _ in range(rounds):  # interleaved, so a busy moment affects all three alike
            for name, command in commands.items():
                times[name].append(wall(command, cwd, env))
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, value in median.items():
        print(f"{name:>7}: median {value * 1000:6.0f} ms  ({value / median['floor']:.2f}x the floor)")
    return max(median["status"], median["config"]) / median["floor"]


# --- counters on PostgreSQL ---------------------------------------------------------------------------


def node_process(url: str, node: int, per_node: bool, start: object, seconds: float, out: object) -> None:
    import sqlalchemy as sa

    from aifactory.db import Database, counters

    db = Database(url, pool_size=1, max_overflow=0)
    docs = sa.table("bench_docs", sa.column("node", sa.Integer), sa.column("text", sa.Text))
    staged = sa.table("bench_staged", sa.column("id", sa.Integer), sa.column("node", sa.Integer))
    text = "a stored document of about a kilobyte " * 26
    outcome = {f"docs.{name}": 1 for name in ("stored.web", "read", "duplicate.near", "filtered.short")}
    start.wait()  # type: ignore[attr-defined]
    done, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        with db.begin() as conn:  # one store transaction, as text.engine.process_batch runs it
            conn.execute(docs.insert(), [{"node": node, "text": text} for _ in range(4)])
            counters.add(db, outcome, conn, node_id=f"node-{node}" if per_node else "")
            conn.execute(staged.delete().where(staged.c.node == node, staged.c.id < 0))
        done += 1
    out.put(done)  # type: ignore[attr-defined]
    db.dispose()


def run_nodes(url: str, per_node: bool, seconds: float) -> float:
    mp = multiprocessing.get_context("spawn")
    start, out = mp.Event(), mp.Queue()
    procs = [
        mp.Process(target=node_process, args=(url, i, per_node, start, seconds, out)) for i in range(NODES)
    ]
    for proc in procs:
        proc.start()
    time.sleep(2.0)  # let every process import and connect before the clock starts
    start.set()
    results = []
    deadline = time.monotonic() + seconds + 60
    while len(results) < len(procs):
        if any(proc.exitcode not in (None, 0) for proc in procs):
            raise RuntimeError("a node process failed (its traceback is above)")
        if time.monotonic() > deadline:
            raise RuntimeError("the node processes did not finish")
        with contextlib.suppress(queue.Empty):
            results.append(out.get(timeout=1.0))
    total = sum(results)
    for proc in procs:
        proc.join(30)
    return total / seconds


class LatencyProxy:
    """A TCP proxy that delivers every chunk `rtt / 2` late in each direction, keeping order: a database
    on another machine of the LAN, for processes on this one."""

    def __init__(self, target: tuple[str, int], rtt: float) -> None:
        self.target, self.delay = target, rtt / 2
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    writer.close()
                    return
                await asyncio.sleep(max(0.0, due - self.loop.time()))
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        while data := await reader.read(65536):
            queue.put_nowait((self.loop.time() + self.delay, data))
        queue.put_nowait((0.0, b""))
        await sender


def via_proxy(url: str, port: int) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rsplit("@", 1)
    netloc = (host[0] + "@" if len(host) == 2 else "") + f"127.0.0.1:{port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def round_trip_ms(url: str) -> float:
    """The measured round trip of a statement (the proxy's delay, plus its own and the machine's)."""
    import psycopg

    with psycopg.connect(url.split("?", 1)[0], autocommit=True) as conn:
        times = []
        for _ in range(30):
            started = time.perf_counter()
            conn.execute("SELECT 1")
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def compare(url: str, seconds: float, label: str) -> float:
    rates: dict[bool, list[float]] = {True: [], False: []}
    for per_node in (False, True, False, True):  # alternated against drift in the machine's load
        rates[per_node].append(run_nodes(url, per_node, seconds))
    shared, own = statistics.mean(rates[False]), statistics.mean(rates[True])
    print(f"{label}: {NODES} nodes, shared counter rows   {shared:7.0f} store transactions/s")
    print(
        f"{label}: {NODES} nodes, per-node counter rows {own:7.0f} store transactions/s ({own / shared:.2f}x)"
    )
    return own / shared


def counters_parallel(base_url: str, seconds: float) -> float:
    import psycopg

    from aifactory.db import Database, migrate

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in base_url else "?"
    url = f"{base_url}{separator}options={urllib.parse.quote(f'-csearch_path={schema}')}"
    try:
        db = Database(url)
        migrate.upgrade(db)
        with db.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE bench_docs (id bigserial PRIMARY KEY, node int, text text)")
            conn.exec_driver_sql("CREATE TABLE bench_staged (id integer, node integer)")
        db.dispose()
        compare(url, seconds, "local socket")
        parts = urllib.parse.urlsplit(base_url)
        proxy = LatencyProxy((parts.hostname or "127.0.0.1", parts.port or 5432), LAN_RTT_MS / 1000)
        lan = via_proxy(url, proxy.port)
        return compare(lan, seconds, f"LAN ({round_trip_ms(lan):.1f} ms round trip)")
    finally:
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("AIFACTORY_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    start_ratio = cli_start(args.rounds)
    parallel_ratio = counters_parallel(args.database_url, args.seconds)
    print(f"RESULT cli_start_ratio {start_ratio:.2f}")
    print(f"RESULT counters_parallel_ratio {parallel_ratio:.2f}")


if __name__ == "__main__":
    main()
