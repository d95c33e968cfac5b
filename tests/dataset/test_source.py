"""The shard-backed BatchSource: the trainer's contract, weighted windows, disallowed documents vanish."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from aifactory.dataset import rules
from aifactory.dataset.builder import build
from aifactory.dataset.shards import TRAIN
from aifactory.dataset.source import ShardSource, open_source
from aifactory.dataset.tokenizer import Tokenizer
from aifactory.db import policies as policy_db
from aifactory.db.database import Database
from aifactory.db.policies import Policy
from aifactory.settings import Settings
from aifactory.train.batches import BatchSource, SourceUnavailable
from tests.dataset.helpers import (
    add_documents,
    document_ids,
    set_allowed,
    small_settings,
    snapshot,
    trained_tokenizer,
)
from tests.text import pages


def source(settings: Settings, db: Database) -> ShardSource:
    return ShardSource(settings, db, 1, allowed_check_sec=0)


def share_of(tokenizer: Tokenizer, batches: list[torch.Tensor], letters: str, others: str) -> float:
    """Of the tokens spelling `letters` or `others`, the share spelling `letters`."""
    ours = theirs = 0
    for batch in batches:
        for token in batch.flatten().tolist():
            piece = tokenizer.decode([token])
            ours += any(c in piece for c in letters)
            theirs += any(c in piece for c in others)
    return ours / (ours + theirs)


def numbers_in_split(validation: bool, count: int, domain: str, start: int = 0) -> list[int]:
    """Document numbers whose URL lands in the wanted split (DATASET_VAL_FRACTION 0.2)."""
    found, number = [], start
    while len(found) < count:
        if (rules.split_draw(f"https://{domain}/doc/{number}") < 0.2) == validation:
            found.append(number)
        number += 1
    return found


@pytest.fixture
def built(settings: Settings, corpus_db: Database, tokenizer: Tokenizer) -> ShardSource:
    build(settings, corpus_db)
    return source(settings, corpus_db)


def test_it_is_a_batch_source_with_the_tokenizers_vocabulary(
    built: ShardSource, tokenizer: Tokenizer
) -> None:
    assert isinstance(built, BatchSource)
    assert built.vocab_size == tokenizer.vocab_size and built.tokenizer_hash == tokenizer.hash
    assert built.token_bytes.shape == (tokenizer.vocab_size,) and built.token_bytes.dtype == torch.int64
    assert built.train_tokens > 0 and built.version.startswith("g1-v1-") and len(built.val_version) == 16
    assert "g1-v1" in built.describe() and "training tokens" in built.describe()


def test_equal_generator_states_draw_equal_windows(built: ShardSource) -> None:
    a = built.train_batch(4, 32, torch.Generator().manual_seed(3))
    b = built.train_batch(4, 32, torch.Generator().manual_seed(3))
    c = built.train_batch(4, 32, torch.Generator().manual_seed(4))
    assert a.shape == (4, 33) and a.dtype == torch.int64
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert int(a.max()) < built.vocab_size


def test_whole_batch_sampling_reads_the_same_windows_as_reading_row_by_row(built: ShardSource) -> None:
    # The loader's vectorised gather (issue 14) keeps the sampler's order: the same batches for a seed.
    generator = torch.Generator().manual_seed(11)
    state = generator.get_state()
    batch = built.train_batch(12, 1500, generator)  # long windows: across documents and the stream's end
    generator.set_state(state)
    draws = torch.rand(12, generator=generator, dtype=torch.float64).numpy() * built._train_cum[-1]
    docs = np.minimum(np.searchsorted(built._train_cum, draws, side="right"), built._train_docs.size - 1)
    before = np.where(docs > 0, built._train_cum[docs - 1], 0.0)
    offsets = np.clip(
        np.floor((draws - before) / built._train_weights[docs]), 0, built._train_lengths[docs] - 1
    )
    starts = built._train_starts[docs] + offsets.astype(np.int64)
    rows = np.stack([built._stream(int(start), 1501) for start in starts])
    assert torch.equal(batch, torch.from_numpy(rows))
    share = built.train_batch(12, 1500, torch.Generator().manual_seed(11), rows=slice(4, 8))
    assert torch.equal(share, batch[4:8])  # a DDP rank reads only its rows of the same global batch


def test_a_window_is_a_documents_tail_then_whole_documents_from_their_start(
    built: ShardSource, settings: Settings, tokenizer: Tokenizer
) -> None:
    docs = {tokens for tokens, split in snapshot(settings).values() if split == TRAIN}
    eos = tokenizer.eos_id
    batch = built.train_batch(16, 1200, torch.Generator().manual_seed(0))  # longer than the documents
    for row in batch.tolist():
        cuts = [i + 1 for i, token in enumerate(row) if token == eos]
        assert cuts, "every window this long crosses a document boundary"
        parts = [tuple(row[a:b]) for a, b in zip([0, *cuts], [*cuts, len(row)], strict=True)]
        head, *whole, tail = parts
        assert any(doc[-len(head) :] == head for doc in docs)  # the end of a document
        assert all(part in docs for part in whole)  # whole documents
        assert not tail or any(doc[: len(tail)] == tail for doc in docs)  # the start of one


def test_training_windows_never_touch_validation_documents(
    make_settings: Any, db: Database, tmp_path: Path
) -> None:
    add_documents(db, range(120))
    settings = small_settings(make_settings, db)
    trained_tokenizer(settings, db)
    add_documents(db, numbers_in_split(True, 15, "val.org"), domain="val.org", text="zz " * 150)
    add_documents(db, numbers_in_split(False, 15, "val.org", 1000), domain="val.org", text="qq " * 150)
    build(settings, db)
    data = source(settings, db)
    generator = torch.Generator().manual_seed(0)
    tokenizer = data.tokenizer
    train = [data.train_batch(8, 64, generator) for _ in range(60)]
    assert share_of(tokenizer, train, "q", "z") == 1.0
    val = data.val_batches(4, 64, 3)
    assert share_of(tokenizer, val, "z", "q") > 0.0  # the z documents are validation, and in use


def test_windows_follow_the_sampling_weights(
    settings: Settings, corpus_db: Database, tokenizer: Tokenizer
) -> None:
    set_allowed(corpus_db, document_ids(corpus_db), False)  # only the two groups below are sampled
    add_documents(corpus_db, range(1000, 1040), domain="a.com", text="ab " * 200)
    add_documents(corpus_db, range(2000, 2040), domain="b.com", text="cd " * 200)
    policy_db.upsert(corpus_db, Policy("b.com", base_weight=3.0))
    build(settings, corpus_db)
    data = source(settings, corpus_db)
    index = data._index[data._train_docs]
    tokens_b = sum(int(r["length"]) for r in index if data._domains[int(r["domain"])] == "b.com")
    tokens_a = data.train_tokens - tokens_b

    def measured() -> float:
        generator = torch.Generator().manual_seed(1)
        return share_of(tokenizer, [data.train_batch(8, 64, generator) for _ in range(250)], "cd", "ab")

    assert measured() == pytest.approx(3 * tokens_b / (3 * tokens_b + tokens_a), abs=0.04)
    version = data.version
    policy_db.upsert(corpus_db, Policy("b.com", base_weight=1.0))  # a policy change, no rebuild
    assert data.refresh() is True and data.version != version
    assert measured() == pytest.approx(tokens_b / (tokens_b + tokens_a), abs=0.04)


def test_the_weight_is_source_times_quality_times_policy(make_settings: Any, db: Database) -> None:
    settings = small_settings(make_settings, db, quality_weight_floor=0.5, quality_weight_boost=1.0)
    policies = [Policy("b.com", base_weight=2.0), Policy("blocked.com", base_weight=0.0)]
    weights = rules.document_weights(
        settings,
        policies,
        ["web", "wikipedia"],
        ["a.com", "x.b.com", "blocked.com"],
        torch.tensor([0, 1, 0]).numpy(),
        torch.tensor([0, 1, 2]).numpy(),
        torch.tensor([0.5, 1.0, 1.0]).numpy(),
    )
    assert weights.tolist() == pytest.approx([1.0 * 1.0 * 1.0, 1.4 * 1.5 * 2.0, 0.0])


def test_disallowed_documents_vanish_from_sampling_at_the_next_refresh(
    settings: Settings, corpus_db: Database, tokenizer: Tokenizer
) -> None:
    build(settings, corpus_db)
    set_allowed(corpus_db, document_ids(corpus_db), False)  # only the two groups below are sampled
    add_documents(corpus_db, range(1000, 1030), domain="a.com", text="ab " * 100)
    b_com = add_documents(corpus_db, range(2000, 2030), domain="b.com", text="cd " * 100)
    build(settings, corpus_db)
    data = source(settings, corpus_db)
    generator = torch.Generator().manual_seed(0)
    assert share_of(tokenizer, [data.train_batch(8, 64, generator) for _ in range(40)], "cd", "ab") > 0.3
    tokens, version = data.train_tokens, data.version
    set_allowed(corpus_db, b_com, False)  # b.com opts out (or a policy now forbids it)
    assert data.refresh() is True and data.version != version and data.train_tokens < tokens
    assert share_of(tokenizer, [data.train_batch(8, 64, generator) for _ in range(80)], "cd", "ab") == 0.0
    assert data.refresh() is False  # nothing changed since


def test_a_replaced_page_is_sampled_in_its_new_version_only(make_settings: Any, db: Database) -> None:
    """A refetched page whose text changed replaces its document: the dataset follows."""
    from aifactory.text.pipeline import PipelineConfig, RawDocument, analyze_many, store

    add_documents(db, range(120))
    settings = small_settings(make_settings, db)
    tokenizer = trained_tokenizer(settings, db)
    set_allowed(db, document_ids(db), False)  # only the page below is sampled
    old_text, new_text = "\n\n".join(pages.NEWS_EN), "\n\n".join(pages.WIKI_EN)
    url = next(
        f"https://changing.example/p{n}"
        for n in range(100)
        if rules.split_draw(f"https://changing.example/p{n}") >= 0.2
    )

    def publish(text: str) -> None:
        raw = RawDocument(url=url, body=text, content_type="text/plain")
        outcome = store(db, analyze_many([raw], PipelineConfig(), None), policy_db.load(db))
        assert outcome["docs.stored"] + outcome["docs.replaced"] == 1, outcome

    old_only = set(tokenizer.encode(old_text)) - set(tokenizer.encode(new_text))
    publish(old_text)
    build(settings, db)
    data = source(settings, db)
    generator = torch.Generator().manual_seed(0)
    drawn = {token for _ in range(20) for token in data.train_batch(8, 64, generator).flatten().tolist()}
    assert drawn & old_only
    publish(new_text)
    build(settings, db)
    assert data.refresh() is True
    drawn = {token for _ in range(40) for token in data.train_batch(8, 64, generator).flatten().tolist()}
    assert not drawn & old_only  # the old version is never drawn again
    assert drawn <= set(tokenizer.encode(new_text)) | {tokenizer.bos_id, tokenizer.eos_id}


def test_only_train_lang_only_languages_are_sampled(
    make_settings: Any, settings: Settings, corpus_db: Database, tokenizer: Tokenizer
) -> None:
    build(settings, corpus_db)
    english_only = ShardSource(small_settings(make_settings, corpus_db, train_lang_only="en"), corpus_db, 1)
    generator = torch.Generator().manual_seed(0)
    text = "".join(
        tokenizer.decode(english_only.train_batch(8, 64, generator)[0].tolist()) for _ in range(30)
    )
    assert not any("\u3040" <= ch <= "\u9fff" for ch in text)
    assert english_only.train_tokens < source(settings, corpus_db).train_tokens


def test_validation_windows_are_fixed_until_the_validation_set_doubles(
    settings: Settings, corpus_db: Database, tokenizer: Tokenizer
) -> None:
    build(settings, corpus_db)
    data = source(settings, corpus_db)
    first, val_version = data.val_batches(2, 32, 3), data.val_version
    assert len(first) == 3 and all(w.shape == (2, 33) for w in first)
    assert all(torch.equal(a, b) for a, b in zip(first, data.val_batches(2, 32, 3), strict=True))
    exposed = data.exposed_val_tokens()
    assert exposed <= data.val_tokens < 2 * exposed + 1000
    add_documents(corpus_db, range(120, 126))  # a few more: the validation set grows, less than doubles
    build(settings, corpus_db)
    grown = data.val_tokens
    assert data.refresh() is True and data.val_tokens > grown  # new validation documents arrived...
    assert data.val_tokens.bit_length() == grown.bit_length()  # ...not enough to double it
    assert data.val_version == val_version and data.exposed_val_tokens() == exposed
    assert all(torch.equal(a, b) for a, b in zip(first, data.val_batches(2, 32, 3), strict=True))
    add_documents(corpus_db, range(200, 600))  # many more: it doubles, the windows are renewed once
    build(settings, corpus_db)
    data.refresh()
    assert data.val_version != val_version and data.exposed_val_tokens() >= 2 * exposed


def test_new_shards_arrive_at_the_next_refresh(
    settings: Settings, corpus_db: Database, tokenizer: Tokenizer
) -> None:
    build(settings, corpus_db)
    data = source(settings, corpus_db)
    version, tokens = data.version, data.train_tokens
    add_documents(corpus_db, range(120, 200))
    build(settings, corpus_db)
    assert data.train_tokens == tokens and data.version == version  # nothing moves during a cycle
    assert data.refresh() is True
    assert data.train_tokens > tokens and data.version.startswith("g1-v2")
    assert data.refresh() is False


def test_open_source_says_what_is_missing(make_settings: Any, corpus_db: Database) -> None:
    settings = small_settings(make_settings, corpus_db)
    with pytest.raises(SourceUnavailable, match="no tokenizer yet"):
        open_source(settings, corpus_db)
    trained_tokenizer(settings, corpus_db)
    with pytest.raises(SourceUnavailable, match="no documents have been tokenized yet"):
        open_source(settings, corpus_db)
    build(settings, corpus_db)
    too_long = small_settings(make_settings, corpus_db, train_seq_len=100_000)
    with pytest.raises(SourceUnavailable, match="one window of TRAIN_SEQ_LEN needs 100,001"):
        open_source(too_long, corpus_db)
    data = open_source(settings)  # the trainer's call: it opens its own database connection
    assert data.train_tokens > 0 and math.isfinite(float(data.token_bytes.float().mean()))
    data.close()


class PositionStream(ShardSource):
    """The sampler over documents whose tokens are their positions in the stream, for a simulation."""

    def __init__(self, lengths: list[int], weights: list[float]) -> None:  # no shards, no database
        self.set_train_stream(np.arange(len(lengths)), np.array(lengths), np.array(weights, dtype=np.float64))

    def document_tokens(self, position: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        length = int(self._train_lengths[position])
        stop = length if stop is None else min(stop, length)
        return int(self._train_starts[position]) + np.arange(start, stop)

    def stream_tokens(self, docs: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        return self._train_starts[docs] + offsets


def test_the_start_and_the_body_of_long_documents_are_sampled_alike() -> None:
    """2,000 short documents and 20 long ones: every part of a long document is as likely to be in a
    window as any other (a sampler that reads continuation documents from their start draws the first
    tokens of long documents many times as often as their bodies)."""
    lengths = [60] * 2000 + [6000] * 20
    order = np.random.default_rng(0).permutation(len(lengths))
    stream = PositionStream([lengths[i] for i in order], [1.0] * len(lengths))
    coverage = np.zeros(stream.train_tokens, dtype=np.int64)
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        windows = stream.train_batch(64, 255, generator)
        np.add.at(coverage, windows.flatten().numpy(), 1)
    long_docs = [k for k, i in enumerate(order) if lengths[i] == 6000]
    starts = [int(stream._train_starts[k]) for k in long_docs]
    head = np.mean([coverage[s : s + 256].mean() for s in starts])
    body = np.mean([coverage[s + 2000 : s + 4000].mean() for s in starts])
    assert 1 / 1.5 < head / body < 1.5, (head, body)
    assert coverage.min() >= 0 and coverage[: stream.train_tokens].mean() > 0


def test_windows_follow_the_weights_over_the_whole_stream() -> None:
    stream = PositionStream([1000, 1000], [3.0, 1.0])
    windows = stream.train_batch(4000, 15, torch.Generator().manual_seed(1))
    first = (windows[:, 0] < 1000).float().mean().item()
    assert 0.7 < first < 0.8  # 3:1
