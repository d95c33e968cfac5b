"""Text pipeline throughput against trafilatura extraction alone, and our MinHash against datasketch.

(a) trafilatura extraction alone and (b) the whole pipeline (extract → language → quality → PII →
MinHash → dedup → store into SQLite) over the same 600 generated HTML pages (English and Japanese,
with boilerplate, some near-copies), both on the same process pool; the ratio (b)/(a) in pages/s
says how much the steps after extraction cost. Then MinHash signatures (112 permutations, word
5-grams) of the same documents with our numpy implementation and with datasketch.

    python benchmarks/text_pipeline.py
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from aifactory.autotune import cpu_cores
from aifactory.db import Database, migrate
from aifactory.db import policies as policy_db
from aifactory.text.extract import extract_html
from aifactory.text.minhash import MinHasher, simplify
from aifactory.text.pipeline import PipelineConfig, RawDocument, analyze, store

PAGES = 600
ROUNDS = 5
STORE_BATCH = 32  # documents per store transaction, as the text engine's batches
EN_WORDS = (
    "the of and to in that with for river bird garden council city people water morning evening village "
    "school road bridge market teacher doctor farmer winter summer autumn spring forest mountain valley "
    "lake harbour train station library museum window kitchen story letter music painting season harvest "
    "weather storm sunlight shadow journey friend family neighbour child walked found built carried opened "
    "wrote remembered noticed painted visited crossed gathered quiet bright narrow ancient careful gentle "
    "heavy early late distant small large green old new because after before while under over between"
).split()
JA_NOUNS = (
    "川 鳥 公園 学校 先生 市場 図書館 駅 電車 森 山 湖 季節 天気 家族 友達 子ども 手紙 音楽 絵 台所 窓 道 橋 "
    "町 村 医者 農家 冬 夏 秋 春 朝 夕方 昔 物語 旅 影 光 雨 雪 風 花 木 海 空 畑 祭り 市役所 議会"
).split()
JA_VERBS = (
    "歩いた 見つけた 建てた 運んだ 開いた 書いた 思い出した 気づいた 描いた 訪れた 渡った 集めた "
    "話した 聞いた 読んだ 考えた 待っていた 眺めていた 育てた 守った"
).split()
JA_PARTICLES = "は が を に で と の から まで へ".split()


def english_paragraph(rng: random.Random) -> str:
    sentences = []
    for _ in range(rng.randint(3, 6)):
        words = [rng.choice(EN_WORDS) for _ in range(rng.randint(8, 16))]
        sentences.append(" ".join(words).capitalize() + ".")
    return " ".join(sentences)


def japanese_paragraph(rng: random.Random) -> str:
    sentences = []
    for _ in range(rng.randint(3, 6)):
        parts = []
        for _ in range(rng.randint(2, 4)):
            parts.append(rng.choice(JA_NOUNS) + rng.choice(JA_PARTICLES))
        sentences.append("".join(parts) + rng.choice(JA_VERBS) + "。")
    return "".join(sentences)


def html_page(rng: random.Random, paragraphs: list[str], lang: str, site: str) -> str:
    body = "\n".join(f"<p>{p}</p>" for p in paragraphs)
    nav = "".join(f'<li><a href="/section/{i}">Section {i}</a></li>' for i in range(12))
    return (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8"><title>{site} page</title></head>'
        f"<body><header><div>{site}</div><nav><ul>{nav}</ul></nav></header>"
        f'<div class="cookie">We use cookies. <a href="/privacy">Privacy</a></div>'
        f"<main><article><h1>Article {rng.randint(1, 10**6)}</h1>{body}</article>"
        f'<aside><h3>Related</h3><a href="/a">One</a><a href="/b">Two</a></aside></main>'
        f"<footer>Copyright {site}. All rights reserved.</footer></body></html>"
    )


def make_pages(count: int, seed: int = 1) -> list[RawDocument]:
    rng = random.Random(seed)
    raws: list[RawDocument] = []
    for i in range(count):
        if i % 10 == 9 and raws:  # every tenth page syndicates an earlier one under another site
            original = rng.choice(raws)
            raws.append(RawDocument(url=f"https://mirror{i}.example/copy", body=original.body))
            continue
        lang = "ja" if i % 3 == 0 else "en"
        make = japanese_paragraph if lang == "ja" else english_paragraph
        paragraphs = [make(rng) for _ in range(rng.randint(4, 12))]
        site = f"site{i % 40}.example"
        raws.append(
            RawDocument(url=f"https://{site}/article/{i}", body=html_page(rng, paragraphs, lang, site))
        )
    return raws


def extract_only(raw: RawDocument) -> int:
    extracted = extract_html(raw.body, raw.url)
    return len(extracted.text) if extracted else 0


def run_extraction(pool: ProcessPoolExecutor, raws: list[RawDocument]) -> float:
    started = time.perf_counter()
    list(pool.map(extract_only, raws, chunksize=8))
    return len(raws) / (time.perf_counter() - started)


def run_pipeline(pool: ProcessPoolExecutor, raws: list[RawDocument], db: Database) -> tuple[float, dict]:
    """Analysis in the pool; storing (dedup + insert, one transaction per batch as the text engine
    does) in this process while the pool works on the next pages."""
    config = PipelineConfig()
    policies = policy_db.load(db)
    totals: dict[str, int] = {}
    batch: list = []
    started = time.perf_counter()
    for analyzed in pool.map(analyze, raws, [config] * len(raws), chunksize=8):
        batch.extend(analyzed)
        if len(batch) >= STORE_BATCH:
            for key, value in store(db, batch, policies).items():
                totals[key] = totals.get(key, 0) + value
            batch = []
    for key, value in store(db, batch, policies).items():
        totals[key] = totals.get(key, 0) + value
    return len(raws) / (time.perf_counter() - started), totals


def run_analysis(pool: ProcessPoolExecutor, raws: list[RawDocument]) -> float:
    started = time.perf_counter()
    list(pool.map(analyze, raws, [PipelineConfig()] * len(raws), chunksize=8))
    return len(raws) / (time.perf_counter() - started)


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
    raws = make_pages(PAGES)
    workers = cpu_cores()
    print(f"{len(raws)} pages, {workers} worker processes")
    extract_rates, analysis_rates, pipeline_rates = [], [], []
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(workers) as pool:
        # Warm the workers as a long-running text engine's pool is warm: imports, caches, and the
        # language model, which each process loads on its first page.
        list(pool.map(analyze, raws[: workers * 4], [PipelineConfig()] * workers * 4))
        for round_ in range(ROUNDS):  # alternating, so both see the same machine load
            db = Database(f"sqlite:///{Path(tmp) / f'bench{round_}.db'}")
            migrate.upgrade(db)
            extract_rates.append(run_extraction(pool, raws))
            analysis_rates.append(run_analysis(pool, raws))
            pipeline_rate, totals = run_pipeline(pool, raws, db)
            pipeline_rates.append(pipeline_rate)
            db.dispose()
    extract_rate, analysis_rate = statistics.median(extract_rates), statistics.median(analysis_rates)
    pipeline_rate = statistics.median(pipeline_rates)
    ratio = statistics.median(b / a for a, b in zip(extract_rates, pipeline_rates, strict=True))
    english = [extract_html(r.body).text for r in raws[1:200:3] if extract_html(r.body) is not None]
    ours, theirs = minhash_rates(english)
    print(
        f"outcomes: stored {totals.get('docs.stored', 0)}, "
        f"near-duplicates {totals.get('docs.duplicate.near', 0)}, "
        f"exact duplicates {totals.get('docs.duplicate.exact', 0)}, "
        f"filtered {sum(v for k, v in totals.items() if k.startswith('docs.filtered.'))}"
    )
    print(f"{'':28}{'pages/s':>10}  (median of {ROUNDS} rounds)")
    print(f"{'(a) trafilatura extraction':28}{extract_rate:10.1f}")
    print(f"{'    analysis steps only':28}{analysis_rate:10.1f}")
    print(f"{'(b) whole pipeline':28}{pipeline_rate:10.1f}")
    print(f"{'':28}{'docs/s':>10}")
    print(f"{'MinHash, ours (numpy)':28}{ours:10.1f}")
    print(f"{'MinHash, datasketch':28}{theirs:10.1f}")
    print(f"RESULT pipeline_vs_extract_ratio {ratio:.3f}")
    print(f"RESULT minhash_vs_datasketch_ratio {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
