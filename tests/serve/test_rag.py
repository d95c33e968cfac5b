"""RAG over the corpus: passages, a trigram index that reads Japanese and English, kept up to date."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa

from aifactory.db.database import Database
from aifactory.db.schema import documents, rag_passages
from aifactory.serve import rag

TOWER_JA = (
    "東京タワーは東京都港区芝公園にある総合電波塔である。高さは333メートルで、1958年に完成した。"
    "展望台からは富士山が見えることもある。"
)
CATS_JA = "猫は古くから人間と暮らしてきた動物で、日本では招き猫が商売繁盛の縁起物として知られている。"
BREAD_EN = (
    "A sourdough starter is a mixture of flour and water that collects wild yeast. Feed the starter "
    "once or twice a day with equal weights of flour and water, and keep it somewhere warm."
)
PARK_EN = (
    "The city council voted to turn the old railway yard into a public park with a community garden "
    "and a small library branch along the river."
)
FILLER_EN = "This paragraph talks about nothing in particular and fills the document with other words. "


def add(db: Database, url: str, text: str, *, title: str = "", allowed: bool = True) -> int:
    with db.begin() as conn:
        return int(
            conn.execute(
                documents.insert()
                .values(
                    url=url,
                    final_url=url,
                    domain="example.org",
                    title=title or url.rsplit("/", 1)[-1],
                    text=text,
                    char_count=len(text),
                    language="ja" if any(ord(c) > 0x3000 for c in text) else "en",
                    source_type="web",
                    content_hash=hashlib.sha256(url.encode() + text.encode()).digest()[:16],
                    allowed_for_training=allowed,
                    created_at=db.now(),
                )
                .returning(documents.c.id)
            ).scalar_one()
        )


def corpus(db: Database, settings) -> dict[str, int]:
    ids = {
        "tower": add(db, "https://example.org/tower", TOWER_JA, title="東京タワー"),
        "cats": add(db, "https://example.org/cats", CATS_JA, title="猫"),
        "bread": add(db, "https://example.org/bread", BREAD_EN, title="Sourdough"),
        "park": add(db, "https://example.org/park", PARK_EN, title="Railway park"),
    }
    while rag.index_pending(db, settings):
        pass
    return ids


def urls(hits: list[rag.Hit]) -> list[str]:
    return [hit.url.rsplit("/", 1)[-1] for hit in hits]


def test_passages_follow_paragraphs_and_sentences() -> None:
    text = "\n\n".join(["短い段落。"] * 3 + ["A long sentence that goes on. " * 40])
    passages = rag.split_passages(text, 200)
    assert passages[0].startswith("短い段落。\n短い段落。\n短い段落。\nA long sentence")
    assert all(len(p) <= 300 for p in passages) and len(passages) > 3
    assert "".join(p.replace("\n", "") for p in passages).replace(" ", "") == text.replace("\n", "").replace(
        " ", ""
    )


def test_japanese_and_english_questions_find_their_passages(db: Database, make_settings) -> None:
    corpus(db, make_settings(database_url=db.url))
    assert urls(rag.search(db, "東京タワーの高さを教えてください", 3))[0] == "tower"
    assert urls(rag.search(db, "How often should I feed my sourdough starter?", 3))[0] == "bread"
    assert urls(rag.search(db, "招き猫", 3))[0] == "cats"
    assert urls(rag.search(db, "railway park", 3))[0] == "park"
    [hit] = rag.search(db, "sourdough", 1)
    assert hit.title == "Sourdough" and "wild yeast" in hit.text and hit.url == "https://example.org/bread"


def test_two_character_and_one_character_japanese_queries_match(db: Database, make_settings) -> None:
    """Trigram indexes match nothing shorter than three characters; short queries still find text."""
    corpus(db, make_settings(database_url=db.url))
    assert urls(rag.search(db, "東京", 3)) == ["tower"]
    assert urls(rag.search(db, "富士", 3)) == ["tower"]
    assert urls(rag.search(db, "猫", 3)) == ["cats"]
    assert rag.search(db, "the a of", 3) == []  # only stop words: nothing to look for


def test_the_relevant_passage_of_a_long_document_is_returned(db: Database, make_settings) -> None:
    settings = make_settings(database_url=db.url, rag_passage_chars=200)
    text = "\n\n".join([FILLER_EN * 3] * 4 + [BREAD_EN] + [FILLER_EN * 3] * 4)
    add(db, "https://example.org/long", text, title="Long page")
    rag.index_pending(db, settings)
    [hit] = rag.search(db, "sourdough starter", 1)
    assert hit.text == BREAD_EN
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(rag_passages)).scalar() >= 5


def test_new_documents_are_searchable_without_a_rebuild_and_deleted_ones_vanish(
    db: Database, make_settings
) -> None:
    settings = make_settings(database_url=db.url)
    ids = corpus(db, settings)
    before = rag.indexed_passages(db)
    assert rag.search(db, "富士山の登山", 3) != [] and rag.search(db, "volcano", 3) == []
    new = add(db, "https://example.org/fuji", "Mount Fuji is an active volcano. 富士山は日本一高い山だ。")
    assert rag.index_pending(db, settings) == 1  # only the new document is read
    assert rag.index_pending(db, settings) == 0
    assert urls(rag.search(db, "volcano", 3)) == ["fuji"]
    assert rag.indexed_passages(db) == before + 1
    with db.begin() as conn:  # a refetched page replaces its document: the old row is deleted
        conn.execute(documents.delete().where(documents.c.id.in_([new, ids["tower"]])))
    assert rag.search(db, "volcano", 3) == [] and rag.search(db, "東京タワー", 3) == []
    assert rag.indexed_passages(db) == before - 1


def test_documents_not_allowed_for_training_are_not_retrieved(db: Database, make_settings) -> None:
    settings = make_settings(database_url=db.url)
    add(db, "https://example.org/optout", "Sourdough secrets from a site that opted out.", allowed=False)
    corpus(db, settings)
    assert "optout" not in urls(rag.search(db, "sourdough", 5))
    with db.begin() as conn:  # a policy change re-tags the document: it counts at once
        conn.execute(
            documents.update().where(documents.c.url.like("%optout")).values(allowed_for_training=True)
        )
    assert "optout" in urls(rag.search(db, "sourdough", 5))


def test_the_watermark_moves_past_indexed_settled_documents(db: Database, make_settings) -> None:
    settings = make_settings(database_url=db.url)
    corpus(db, settings)
    assert rag.watermark(db) == 0  # the documents are younger than SETTLE_SEC: looked at again
    with db.begin() as conn:
        conn.execute(documents.update().values(created_at=documents.c.created_at - 2 * rag.SETTLE_SEC))
    rag.index_pending(db, settings)
    with db.read() as conn:
        assert rag.watermark(db) == conn.execute(sa.select(sa.func.max(documents.c.id))).scalar()
