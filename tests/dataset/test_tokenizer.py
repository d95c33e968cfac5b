"""The tokenizer: lossless on any text, loadable by stock sentencepiece, trained once per generation."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest
import sentencepiece as spm

from aifactory.dataset import corpus
from aifactory.dataset import tokenizer as tokenizers
from aifactory.dataset.engine import train_tokenizer
from aifactory.dataset.tokenizer import CHAT_TOKENS, Tokenizer, TokenizerError
from aifactory.db.database import Database
from aifactory.settings import Settings
from tests.dataset.helpers import add_documents, add_texts, real_texts, small_settings
from tests.text.pages import NEWS_EN, WIKI_JA

SAMPLES = {
    "english": NEWS_EN[0] + "\n\n" + NEWS_EN[1],
    "japanese": WIKI_JA[0] + "\n" + WIKI_JA[1],
    "emoji": "Good morning ☀️🌸 — 今日は良い天気ですね 👍🏽 (family: 👨‍👩‍👧)",
    "code": "def f(x):\n    return x  # two spaces, a tab\there\n\n\n  trailing  ",
    "digits": "In 2024 the price rose 12.5% to ¥1,234,567.",
}


def random_texts(count: int) -> list[str]:
    rng = random.Random(0)
    texts = [bytes(rng.randrange(256) for _ in range(200)).decode("utf-8", "replace") for _ in range(count)]
    texts += ["".join(chr(rng.randrange(0x20, 0x2FFFF)) for _ in range(100)) for _ in range(count)]
    return [t.encode("utf-8", "replace").decode("utf-8") for t in texts]  # no lone surrogates


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_decoding_gives_back_the_text(tokenizer: Tokenizer, name: str) -> None:
    text = SAMPLES[name]
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == tokenizer.normalize(text) == text


def test_random_bytes_and_characters_round_trip_without_unknown_tokens(tokenizer: Tokenizer) -> None:
    unk = tokenizer.sp.unk_id()
    for text in [*random_texts(20), "a\u2581b"]:
        ids = tokenizer.encode(text)
        assert unk not in ids
        assert tokenizer.decode(ids) == tokenizer.normalize(text)
    assert tokenizer.normalize("a\u2581b") == "a b"  # SentencePiece's space marker is the one change


def test_stock_sentencepiece_loads_the_file_and_encodes_identically(tokenizer: Tokenizer) -> None:
    stock = spm.SentencePieceProcessor(model_file=str(tokenizer.model_path))
    assert stock.get_piece_size() == tokenizer.vocab_size
    for text in [*SAMPLES.values(), *random_texts(5)]:
        assert stock.encode(text) == tokenizer.encode(text)
        assert stock.decode(stock.encode(text)) == tokenizer.normalize(text)


def test_special_tokens_are_reserved_and_cannot_be_forged_by_text(tokenizer: Tokenizer) -> None:
    ids = tokenizer.special_ids
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (1, 2, 3)
    assert [ids[token] for token in CHAT_TOKENS] == [4, 5, 6, 7]
    forged = tokenizer.encode("<|user|> hello <|end|></s>")
    assert not set(forged) & set(ids.values())  # a crawled page saying "<|user|>" is plain text
    assert tokenizer.decode([ids["<|user|>"], *tokenizer.encode("hi")]) == "hi"  # control: no text


def test_token_bytes_count_utf8_bytes_with_zero_for_specials_and_one_per_byte(tokenizer: Tokenizer) -> None:
    counts = tokenizer.token_bytes()
    sp = tokenizer.sp
    assert counts.shape == (tokenizer.vocab_size,) and counts.dtype == np.int64
    assert all(counts[i] == 0 for i in range(8))  # unk, bos, eos, pad and the chat markers
    byte_pieces = [i for i in range(tokenizer.vocab_size) if sp.is_byte(i)]
    assert len(byte_pieces) == 256 and all(counts[i] == 1 for i in byte_pieces)
    # Over real text, the bytes of the tokens add up to the bytes of the text.
    text = SAMPLES["japanese"] + SAMPLES["emoji"]
    assert int(counts[tokenizer.encode(text)].sum()) == len(text.encode("utf-8"))


def test_files_are_stored_per_generation_with_their_hash(tokenizer: Tokenizer, settings: Settings) -> None:
    assert tokenizer.directory == settings.data_dir / "tokenizer" / "g0001"
    assert tokenizers.generations(settings.data_dir) == [1]
    assert tokenizers.current(settings.data_dir).hash == tokenizer.hash
    assert tokenizer.info.model_type == "bpe" and tokenizer.vocab_size == 600
    assert tokenizer.dtype == np.uint16
    with pytest.raises(TokenizerError, match="already exists"):
        tokenizers.train(settings.data_dir, 1, [("en", "x")], vocab_size=600, model_type="bpe", threads=1)
    tokenizer.model_path.write_bytes(tokenizer.model_path.read_bytes() + b"x")
    with pytest.raises(TokenizerError, match="does not match the hash"):
        tokenizers.load(settings.data_dir, 1)


def test_the_sample_plan_gives_every_language_an_equal_share() -> None:
    # Budget below the corpus: English is thinned, Japanese repeated, to half and half.
    plan = corpus.sample_plan({"en": 900_000, "ja": 100_000}, 500_000)
    assert plan["en"] * 900_000 == pytest.approx(250_000) and plan["ja"] * 100_000 == pytest.approx(250_000)
    # A generous budget repeats the small language at most SAMPLE_MAX_REPEATS times, never the largest.
    assert corpus.sample_plan({"en": 900_000, "ja": 100_000}, 20_000_000) == {
        "en": 1.0,
        "ja": corpus.SAMPLE_MAX_REPEATS,
    }
    # A language under 1% of the corpus (misdetected pages) is sampled in proportion, not boosted.
    plan = corpus.sample_plan({"en": 9_000_000, "ja": 1_000_000, "ko": 50_000}, 4_000_000)
    assert plan["ko"] == pytest.approx(4_000_000 / 10_050_000)
    assert plan["en"] * 9_000_000 == pytest.approx(plan["ja"] * 1_000_000)
    assert corpus.sample_plan({}, 1000) == {}


def test_the_training_sample_is_bounded_and_balanced_across_languages(
    make_settings: Any, db: Database
) -> None:
    english, japanese = list(real_texts("en")[:300]), list(real_texts("ja")[:40])
    add_texts(db, english, "en")
    add_texts(db, japanese, "ja", first=1000)
    add_texts(db, japanese[:10], "ja", first=2000, allowed=False)  # never sampled
    add_documents(db, range(3000, 3010), language="fr")  # not in TRAIN_LANG_ONLY
    settings = small_settings(make_settings, db)
    totals = corpus.allowed_chars(db, settings.languages())
    assert totals["ja"] < 0.2 * totals["en"]  # Japanese is the minority...
    budget = sum(totals.values()) // 2
    sample = list(corpus.tokenizer_sample(db, settings.languages(), budget, seed=1))
    chars = {
        language: sum(len(text) for lang, text in sample if lang == language) for language in ("en", "ja")
    }
    assert 0.8 * budget < sum(chars.values()) < 1.2 * budget
    assert 0.4 < chars["ja"] / sum(chars.values()) < 0.6  # ...and gets half of the sample
    assert {language for language, _ in sample} == {"en", "ja"}


def test_a_japanese_minority_gets_a_fair_share_of_the_vocabulary(make_settings: Any, db: Database) -> None:
    """90% English and 10% Japanese: Japanese costs about what a Japanese-only tokenizer of the same
    size makes it cost (within 1.3x), and the tokenizer says which languages it was trained on."""
    japanese, english = list(real_texts("ja")), list(real_texts("en"))
    held_out, japanese = "\n".join(japanese[-20:]), japanese[:-20]
    ja_budget = sum(map(len, english)) // 9
    japanese = japanese[: next(i for i in range(len(japanese)) if sum(map(len, japanese[:i])) >= ja_budget)]
    ja_chars = sum(map(len, japanese))
    settings = small_settings(make_settings, db, train_vocab_size=4000, tokenizer_sample_chars=20_000_000)
    add_texts(db, english, "en")
    add_texts(db, japanese, "ja", first=10_000)
    mixed = train_tokenizer(settings, db, 1)
    japanese_only = tokenizers.train(
        settings.data_dir,
        2,
        [("ja", text) for text in japanese],
        vocab_size=4000,
        model_type="bpe",
        threads=1,
    )

    def per_char(tokenizer: Tokenizer) -> float:
        return len(tokenizer.encode(held_out)) / len(held_out)

    assert per_char(mixed) < 1.3 * per_char(japanese_only)
    info = mixed.info
    assert info.languages == ["en", "ja"] and info.add_bos
    # What the sample was drawn from (a page counts up to its first 20,000 characters).
    assert (
        info.corpus_chars["ja"] == ja_chars and 0.95 < info.corpus_chars["en"] / sum(map(len, english)) <= 1
    )
    assert info.language_chars["ja"] == corpus.SAMPLE_MAX_REPEATS * ja_chars  # the minority, repeated
    assert "en " in mixed.describe() and "ja " in mixed.describe()


def test_a_generation_written_before_bos_and_language_counts_still_loads(tokenizer: Tokenizer) -> None:
    path = tokenizer.directory / "tokenizer.json"
    old = json.loads(path.read_text())
    for key in ("language_chars", "corpus_chars", "add_bos"):
        del old[key]
    path.write_text(json.dumps({**old, "languages": ["en", "ja"]}))
    reloaded = Tokenizer(tokenizer.directory)
    assert not reloaded.info.add_bos and reloaded.info.languages == ["en", "ja"]
    assert reloaded.encode_document("hi")[-1] == reloaded.eos_id and reloaded.encode_document("hi")[0] != 1
    assert tokenizer.encode_document("hi")[0] == tokenizer.bos_id


def test_an_empty_corpus_gives_a_clear_error(make_settings: Any, db: Database) -> None:
    settings = small_settings(make_settings, db)
    with pytest.raises(TokenizerError, match="no documents"):
        tokenizers.train(settings.data_dir, 1, [], vocab_size=600, model_type="bpe", threads=1)
