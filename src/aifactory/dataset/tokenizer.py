"""The tokenizer: a SentencePiece model, trained once per *generation* and stored with its hash.

Why these options:
- BPE by default (TOKENIZER_MODEL_TYPE). Measured on 7.4 MB of English and Japanese text at 8,000
  pieces, BPE and unigram compress the same to within 2% (ja 5.09 vs 5.18, en 3.77 vs 3.73 bytes per
  token); unigram encodes about twice as fast, but a SentencePiece BPE model is reproduced exactly by
  llama.cpp's "llama" tokenizer (greedy merges by score), where a unigram model needs the less common
  UGM path: the model is meant to be exported to GGUF, and encoding is incremental anyway.
- byte_fallback: a character outside the vocabulary becomes its UTF-8 bytes, never <unk>.
- identity normalisation, no whitespace collapsing, no dummy prefix: documents are already normalised
  by the text pipeline, and the model must be able to write code and indentation back exactly. The
  one change left is SentencePiece's whitespace marker: a literal U+2581 decodes as a space
  (`Tokenizer.normalize`).
- split_digits: numbers are spelled digit by digit, which models learn arithmetic from far better.
- Specials are *control* symbols: a crawled page that contains the text "<|user|>" encodes it as plain
  text, so no document can forge a chat turn; the chat format inserts them by id.
- A newline is a user-defined piece: training sees one line per sentence, and without it every
  newline would cost a byte-fallback token.
- Generation 2 on: documents are encoded `<s> text </s>` (`add_bos`), as Hugging Face and llama.cpp add
  BOS at inference; the training sample is balanced across languages (`corpus.tokenizer_sample`), and
  `languages` names only the languages really in the sample, with their characters in
  `language_chars`. Generation files written before that load with `add_bos` false and no counts.

A generation lives in DATA_DIR/tokenizer/g<NNNN>/: tokenizer.model (loadable by the stock
`sentencepiece` library) and tokenizer.json (its hash and how it was trained). The directory is written
under a temporary name and renamed, so a half-written tokenizer is never picked up.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import sentencepiece as spm

from aifactory.dataset import DatasetError

UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"
CHAT_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
MAX_SENTENCE_CHARS = 4000  # training lines are cut to this (SentencePiece skips longer ones silently)
WHITESPACE_MARKER = "\u2581"
# A language is "in" the tokenizer when it is at least this share of its training sample: a handful of
# misdetected pages does not make a tokenizer Korean.
LANGUAGE_MIN_SHARE = 0.01
# Share of the sample's characters that get a piece of their own; the first that fits the vocabulary
# is used (0.9995 leaves the rarest 0.05%, mostly the CJK tail, to byte fallback).
CHARACTER_COVERAGES = (0.9995, 0.999, 0.995, 0.99, 0.98, 0.95, 0.9)


class TokenizerError(DatasetError):
    """The tokenizer cannot be trained or loaded."""


@dataclass(frozen=True)
class TokenizerInfo:
    generation: int
    tokenizer_hash: str  # sha-256 of tokenizer.model
    model_type: str
    vocab_size: int
    languages: list[str]  # the languages of the sample (at least LANGUAGE_MIN_SHARE of it), largest first
    sample_documents: int
    sample_chars: int
    train_seconds: float
    created_at: float
    language_chars: dict[str, int] = field(default_factory=dict)  # characters per language in the sample
    corpus_chars: dict[str, int] = field(default_factory=dict)  # ...and in the corpus it was drawn from
    add_bos: bool = False  # documents are `<s> text </s>` (generation files from before have `text </s>`)
    note: str = ""  # why it was trained when it was, if not by the rule (e.g. the crawl ran out)
    character_coverage: float = 0.9995

    @classmethod
    def from_dict(cls, data: dict) -> TokenizerInfo:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def tokenizer_root(data_dir: Path) -> Path:
    return Path(data_dir) / "tokenizer"


def generation_dir(data_dir: Path, generation: int) -> Path:
    return tokenizer_root(data_dir) / f"g{generation:04d}"


class Tokenizer:
    """A loaded generation: encode/decode, the special ids and the bytes each token stands for."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.model_path = self.directory / "tokenizer.model"
        try:
            self.info = TokenizerInfo.from_dict(json.loads((self.directory / "tokenizer.json").read_text()))
            model = self.model_path.read_bytes()
        except (OSError, ValueError, TypeError) as exc:
            raise TokenizerError(f"cannot read the tokenizer in {self.directory}: {exc}") from None
        if hashlib.sha256(model).hexdigest() != self.info.tokenizer_hash:
            raise TokenizerError(
                f"{self.model_path} does not match the hash in tokenizer.json: it was changed"
            )
        self.sp = spm.SentencePieceProcessor(model_proto=model)
        self.vocab_size = int(self.sp.get_piece_size())
        self.bos_id, self.eos_id, self.pad_id = self.sp.bos_id(), self.sp.eos_id(), self.sp.pad_id()
        self.special_ids = {piece: self.sp.piece_to_id(piece) for piece in (BOS, EOS, PAD, *CHAT_TOKENS)}

    @property
    def generation(self) -> int:
        return self.info.generation

    @property
    def hash(self) -> str:
        return self.info.tokenizer_hash

    @property
    def dtype(self) -> np.dtype:
        """How token ids are stored: two bytes while the vocabulary fits, else four."""
        return np.dtype(np.uint16) if self.vocab_size <= 1 << 16 else np.dtype(np.uint32)

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def encode_document(self, text: str) -> list[int]:
        """A document as the dataset stores it: `<s> text </s>` (generation 1: `text </s>`)."""
        ids = self.sp.encode(text)
        return ([self.bos_id] if self.info.add_bos else []) + ids + [self.eos_id]

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([int(i) for i in ids])

    @staticmethod
    def normalize(text: str) -> str:
        """What decode(encode(text)) gives back: the text itself, but for SentencePiece's space marker."""
        return text.replace(WHITESPACE_MARKER, " ")

    def token_bytes(self) -> np.ndarray:
        """[vocab_size] int64: UTF-8 bytes each token stands for; 0 for control/unknown, 1 for a byte."""
        out = np.zeros(self.vocab_size, dtype=np.int64)
        for token in range(self.vocab_size):
            if self.sp.is_control(token) or self.sp.is_unknown(token):
                continue
            if self.sp.is_byte(token):
                out[token] = 1
            else:
                out[token] = len(self.sp.id_to_piece(token).replace(WHITESPACE_MARKER, " ").encode("utf-8"))
        return out

    def describe(self) -> str:
        info = self.info
        if info.language_chars:
            languages = ", ".join(
                f"{code} {info.language_chars.get(code, 0):,} chars" for code in info.languages
            )
        else:
            languages = ",".join(info.languages) or "all languages"
        return (
            f"tokenizer g{info.generation} ({info.model_type}, {self.vocab_size:,} pieces, "
            f"{languages}, hash {info.tokenizer_hash[:12]})"
        )


def generations(data_dir: Path) -> list[int]:
    """The generations stored under DATA_DIR, oldest first."""
    root = tokenizer_root(data_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if path.name.startswith("g") and path.name[1:].isdigit() and (path / "tokenizer.json").is_file():
            found.append(int(path.name[1:]))
    return sorted(found)


def load(data_dir: Path, generation: int) -> Tokenizer:
    return Tokenizer(generation_dir(data_dir, generation))


def current(data_dir: Path) -> Tokenizer | None:
    """The newest generation, or None when no tokenizer was trained yet."""
    known = generations(data_dir)
    return load(data_dir, known[-1]) if known else None


def sample_languages(language_chars: dict[str, int]) -> list[str]:
    """The languages that make up a sample: at least LANGUAGE_MIN_SHARE of it, largest first."""
    total = sum(language_chars.values())
    present = [
        code for code, chars in language_chars.items() if total and chars >= LANGUAGE_MIN_SHARE * total
    ]
    return sorted(present, key=lambda code: -language_chars[code])


def training_lines(texts: Iterable[str]) -> Iterator[str]:
    """One SentencePiece 'sentence' per line, long lines cut so that none is silently dropped."""
    for text in texts:
        for line in text.split("\n"):
            for start in range(0, len(line), MAX_SENTENCE_CHARS):
                piece = line[start : start + MAX_SENTENCE_CHARS]
                if piece.strip():
                    yield piece


def train(
    data_dir: Path,
    generation: int,
    texts: Iterable[tuple[str, str]],
    *,
    vocab_size: int,
    model_type: str,
    threads: int,
    corpus_chars: dict[str, int] | None = None,
    note: str = "",
) -> Tokenizer:
    """Train generation `generation` on `texts`, (language, text) pairs already drawn as a bounded
    sample, and store it with the characters each language contributed."""
    target = generation_dir(data_dir, generation)
    if target.exists():
        raise TokenizerError(f"tokenizer generation {generation} already exists in {target}")
    documents = chars = 0
    language_chars: dict[str, int] = {}

    def counted() -> Iterator[str]:
        nonlocal documents, chars
        for language, text in texts:
            documents += 1
            chars += len(text)
            language_chars[language] = language_chars.get(language, 0) + len(text)
            yield text

    started = time.monotonic()
    lines = list(training_lines(counted()))  # the sample is bounded (TOKENIZER_SAMPLE_CHARS)
    if documents == 0:
        raise TokenizerError("no documents to train the tokenizer on")
    model = io.BytesIO()
    for coverage in CHARACTER_COVERAGES:
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines),
                model_writer=model,
                model_type=model_type,
                vocab_size=vocab_size,
                hard_vocab_limit=False,  # a small corpus gives a smaller vocabulary instead of an error
                byte_fallback=True,
                character_coverage=coverage,  # the rarest characters (CJK tail) go to bytes
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                add_dummy_prefix=False,
                split_digits=True,
                allow_whitespace_only_pieces=True,
                max_sentence_length=MAX_SENTENCE_CHARS * 4,  # bytes: a cut line always fits
                unk_id=0,
                bos_id=1,
                eos_id=2,
                pad_id=3,
                unk_piece=UNK,
                bos_piece=BOS,
                eos_piece=EOS,
                pad_piece=PAD,
                control_symbols=list(CHAT_TOKENS),
                user_defined_symbols=["\n"],
                num_threads=max(1, threads),
                minloglevel=2,
            )
            break
        except RuntimeError as exc:
            # A small vocabulary cannot hold every character Japanese text uses at full coverage:
            # leave more of the rare ones to byte fallback rather than fail.
            if "required_chars" in str(exc) and coverage != CHARACTER_COVERAGES[-1]:
                model = io.BytesIO()
                continue
            raise TokenizerError(
                f"SentencePiece could not train on {documents:,} documents ({chars:,} characters): {exc}"
            ) from None
    data = model.getvalue()
    info = TokenizerInfo(
        generation=generation,
        tokenizer_hash=hashlib.sha256(data).hexdigest(),
        model_type=model_type,
        vocab_size=int(spm.SentencePieceProcessor(model_proto=data).get_piece_size()),
        languages=sample_languages(language_chars),
        sample_documents=documents,
        sample_chars=chars,
        train_seconds=round(time.monotonic() - started, 3),
        created_at=time.time(),
        language_chars=dict(sorted(language_chars.items(), key=lambda item: -item[1])),
        corpus_chars=dict(corpus_chars or {}),
        add_bos=True,
        note=note,
        character_coverage=coverage,
    )
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    _write_synced(staging / "tokenizer.model", data)
    _write_synced(staging / "tokenizer.json", json.dumps(asdict(info), indent=2).encode())
    os.replace(staging, target)
    _fsync_dir(target.parent)
    return Tokenizer(target)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
