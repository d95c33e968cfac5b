"""The whole text pipeline on real documentation pages, against trafilatura's plain extract().

Pages: the real pages of the labelled evaluation set (tests/text/fixtures/docs.tar.xz: Debian's
manuals in Japanese and English and the Python documentation, tens of KB of HTML each), as files.

    (a) trafilatura.extract(html) with its defaults, in a pool of P worker processes;
    (b) `aifactory ingest` on the folder of those files with P workers (the factory's extraction
        options, language, quality, PII masking, MinHash, exact and near dedup, and the SQLite store,
        the storing overlapped with the next batch's analysis as ingest does it);
    (c) the crawler's path: the same pages staged as the collector stages them, then the text
        engine's batches (claim, analysis in the pool, store and unstage) until none is left.

P = the machine's cores, for all three; the pools are started and warmed once, as a running
factory's are. Also shown, to say where time goes: the factory's extraction call alone and the
analysis steps alone, on the same pool. Then the labelled set's keep and reject rates (the figures
the tests assert) and MinHash against datasketch.

    python benchmarks/text_pipeline.py [--rounds N]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path

import trafilatura

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the labelled set lives under tests/

from tests.text import labelled

from aifactory.autotune import cpu_cores
from aifactory.db import Database, migrate
from aifactory.db import policies as policy_db
from aifactory.settings import Settings
from aifactory.text import staging
from aifactory.text.engine import make_pool, process_batch
from aifactory.text.extract import extract_html
from aifactory.text.ingest import ingest
from aifactory.text.minhash import MinHasher, simplify
from aifactory.text.pipeline import PipelineConfig, RawDocument, analyze

CHUNK = 4  # pages per task, for every pool run here (ingest uses the same)


def plain_extract(html: str) -> int:
    return len(trafilatura.extract(html) or "")


def factory_extract(html: str) -> int:
    extracted = extract_html(html)
    return len(extracted.text) if extracted else 0


def analyze_page(html: str) -> int:
    return len(analyze(RawDocument(url="https://bench.example/", body=html), PipelineConfig()))


def pool_rate(pool: Executor, fn: Callable[[str], int], htmls: list[str]) -> float:
    started = time.perf_counter()
    list(pool.map(fn, htmls, chunksize=CHUNK))
    return len(htmls) / (time.perf_counter() - started)


def ingest_rate(pool: Executor, folder: Path, settings: Settings, db_path: Path) -> tuple[float, dict]:
    db = Database(f"sqlite:///{db_path}")
    migrate.upgrade(db)
    started = time.perf_counter()
    totals, _skipped = ingest(settings, db, [folder], show_progress=False, pool=pool)
    seconds = time.perf_counter() - started
    db.dispose()
    return totals["docs.read"] / seconds, dict(totals)


def engine_rate(pool: Executor, raws: list[RawDocument], settings: Settings, db_path: Path) -> float:
    db = Database(f"sqlite:///{db_path}")
    migrate.upgrade(db)
    with db.begin() as conn:
        staging.stage(db, conn, raws, "bench")
    policies = policy_db.load(db)
    started = time.perf_counter()
    done = 0
    while taken := process_batch(db, settings, "bench", policies, pool)[0]:
        done += taken
    seconds = time.perf_counter() - started
    db.dispose()
    return done / seconds


def minhash_rates(texts: list[str]) -> tuple[float, float]:
    from datasketch import MinHash

    hasher = MinHasher()
    started = time.perf_counter()
    for text in texts:
        hasher.signature(text, "en")
    ours = len(texts) / (time.perf_counter() - started)
    started = time.perf_counter()
    for text in texts:
        words = simplify(text, "en").split()
        shingles = {" ".join(words[i : i + 5]).encode() for i in range(max(1, len(words) - 4))}
        signature = MinHash(num_perm=112)
        signature.update_batch(list(shingles))
    theirs = len(texts) / (time.perf_counter() - started)
    return ours, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    pages = labelled.real_pages()
    htmls = [page.html for page in pages]
    workers = cpu_cores()
    size = sum(map(len, htmls)) / len(htmls) / 1024
    languages = {lang: sum(page.language == lang for page in pages) for lang in ("en", "ja")}
    print(f"{len(pages)} real documentation pages ({languages}), {size:.0f} KB of HTML on average")
    print(f"{workers} worker processes for every run, median of {args.rounds} rounds")
    rates: dict[str, list[float]] = {k: [] for k in ("plain", "extract", "analyze", "ingest", "engine")}
    totals: dict = {}
    with tempfile.TemporaryDirectory() as tmp, make_pool(workers) as pool:
        folder = Path(tmp) / "pages"
        for page in pages:
            path = folder / page.name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(page.html, encoding="utf-8")
        raws = [RawDocument(url=page.url, body=page.html, source="docs") for page in pages]
        settings = Settings(_env_file=None, data_dir=Path(tmp) / "data")
        # Warm the workers as a long-running factory's are: imports, caches, the language model.
        list(pool.map(analyze_page, htmls[: workers * 4], chunksize=1))
        list(pool.map(plain_extract, htmls[: workers * 4], chunksize=1))
        for round_ in range(args.rounds):  # alternating, so every run sees the same machine load
            rates["plain"].append(pool_rate(pool, plain_extract, htmls))
            rate, totals = ingest_rate(pool, folder, settings, Path(tmp) / f"ingest{round_}.db")
            rates["ingest"].append(rate)
            rates["engine"].append(engine_rate(pool, raws, settings, Path(tmp) / f"engine{round_}.db"))
            rates["extract"].append(pool_rate(pool, factory_extract, htmls))
            rates["analyze"].append(pool_rate(pool, analyze_page, htmls))
        scores = labelled.evaluate(labelled.real_pages() + labelled.junk(), pool=pool)
    median = {name: statistics.median(values) for name, values in rates.items()}
    ratio = statistics.median(b / a for a, b in zip(rates["plain"], rates["ingest"], strict=True))
    engine_ratio = statistics.median(b / a for a, b in zip(rates["plain"], rates["engine"], strict=True))
    print(
        f"ingest outcomes: {totals.get('docs.stored', 0)} stored, "
        f"{sum(v for k, v in totals.items() if k.startswith('docs.filtered.'))} filtered, "
        f"{totals.get('docs.duplicate.exact', 0) + totals.get('docs.duplicate.near', 0)} duplicates"
    )
    print(f"{'':44}{'pages/s':>9}{'vs (a)':>9}")
    rows = [
        ("(a) trafilatura extract(), defaults", "plain"),
        ("    the factory's extraction call alone", "extract"),
        ("    + language, quality, PII, MinHash", "analyze"),
        ("(b) aifactory ingest (+ dedup and store)", "ingest"),
        ("(c) text engine on staged pages", "engine"),
    ]
    for label, key in rows:
        print(f"{label:44}{median[key]:9.1f}{median[key] / median['plain']:9.2f}")
    texts = [page.html for page in pages if page.language == "en"][:60]
    english = [text for text in (factory_extract_text(html) for html in texts) if text]
    ours, theirs = minhash_rates(english)
    print(f"MinHash signatures: ours {ours:.0f} docs/s, datasketch {theirs:.0f} docs/s")
    junk_pages = sum(scores.junk_total.values())
    print(
        f"labelled set: kept {scores.keep_rate('en'):.3f} (en) / {scores.keep_rate('ja'):.3f} (ja) of the "
        f"documentation's characters, rejected {scores.reject_rate():.3f} of {junk_pages} junk pages; "
        f"{scores.other_dropped}/{scores.other_total} navigation, front matter and screenshot pages dropped"
    )
    for mistake in itertools.islice(scores.mistakes, 20):
        print(f"    {mistake}")
    print(f"RESULT minhash_vs_datasketch_ratio {ours / theirs:.2f}")
    print(f"RESULT engine_vs_extract_ratio {engine_ratio:.3f}")
    print(f"RESULT pipeline_vs_extract_ratio {ratio:.3f}")
    print(f"RESULT keep_rate_docs_en {scores.keep_rate('en'):.4f}")
    print(f"RESULT keep_rate_docs_ja {scores.keep_rate('ja'):.4f}")
    print(f"RESULT reject_rate_junk {scores.reject_rate():.4f}")


def factory_extract_text(html: str) -> str:
    extracted = extract_html(html)
    return extracted.text if extracted else ""


if __name__ == "__main__":
    main()
