"""The on-disk format of one generation's dataset, and how it is appended to without ever being torn.

DATA_DIR/dataset/g<NNNN>/
    manifest.json        the commit point: what of the files below is valid (JSON, replaced atomically)
    shards/00000.tokens  token ids, raw little-endian uint16 (uint32 for vocabularies over 65,536),
                         every document followed by EOS; memory-mappable, append-only
    index.bin            one INDEX_DTYPE record per document: where its tokens are, split, source,
                         language, quality, domain, weight at build time; append-only
    domains.txt          one domain per line; the index's domain codes are line numbers

A build appends to the files, fsyncs them, then writes manifest.json.tmp, fsyncs it and renames it over
manifest.json. Readers only look as far as the manifest says, so a build that dies half-way (killed, out
of disk) leaves the previous version intact; the next build first cuts the files back to the manifest.
A document never spans two shards, so its tokens are one slice of one memory map.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from aifactory.dataset import DatasetError

FORMAT = 1
TRAIN, VAL = 0, 1
INDEX_DTYPE = np.dtype(
    [
        ("doc_id", "<i8"),  # documents.id
        ("start", "<i8"),  # offset of its first token in the concatenation of all shards
        ("length", "<u4"),  # tokens, the EOS included
        ("split", "u1"),  # TRAIN or VAL, decided once
        ("source", "u1"),  # code into Manifest.sources
        ("language", "u1"),  # code into Manifest.language_codes
        ("quality", "<f4"),
        ("domain", "<u4"),  # line of domains.txt
        ("weight", "<f4"),  # sampling weight when built (the source recomputes it with today's policies)
    ]
)


@dataclass
class Manifest:
    generation: int
    tokenizer_hash: str
    vocab_size: int
    dtype: str  # "uint16" or "uint32"
    languages: list[str]  # the generation's languages (TRAIN_LANG_ONLY when it began; [] = all)
    val_fraction: float  # the split rule, frozen for the generation so no document ever moves
    val_max_tokens: int
    version: int = 0  # builds that added documents
    watermark: int = 0  # every document with a smaller or equal id was looked at...
    gaps: list[list[float]] = field(default_factory=list)  # ...but these [lo, hi, first_seen] id ranges
    shards: list[int] = field(default_factory=list)  # committed tokens of each shard file
    documents: int = 0  # committed index records
    domains_bytes: int = 0  # committed length of domains.txt
    sources: list[str] = field(default_factory=list)
    language_codes: list[str] = field(default_factory=list)
    train_tokens: int = 0
    val_tokens: int = 0
    val_tokens_by_language: dict[str, int] = field(default_factory=dict)
    val_min_tokens: int = 0  # per language (DATASET_VAL_MIN_TOKENS_PER_LANGUAGE when the generation began)
    skipped: int = 0  # documents the tokenizer failed on
    other_language: int = 0  # documents outside `languages`, not tokenized
    updated_at: float = 0.0
    format: int = FORMAT

    @property
    def tag(self) -> str:
        return f"g{self.generation}-v{self.version}"

    @property
    def total_tokens(self) -> int:
        return sum(self.shards)

    @property
    def token_dtype(self) -> np.dtype:
        return np.dtype(self.dtype).newbyteorder("<")


def dataset_root(data_dir: Path) -> Path:
    return Path(data_dir) / "dataset"


def generation_dir(data_dir: Path, generation: int) -> Path:
    return dataset_root(data_dir) / f"g{generation:04d}"


def shard_path(directory: Path, number: int) -> Path:
    return directory / "shards" / f"{number:05d}.tokens"


def load_manifest(directory: Path) -> Manifest | None:
    path = directory / "manifest.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None
    if data.get("format") != FORMAT:
        raise DatasetError(f"{path} has format {data.get('format')}, this version reads {FORMAT}")
    return Manifest(**data)


def save_manifest(directory: Path, manifest: Manifest) -> None:
    """Replace manifest.json atomically: write a temporary file, fsync it, rename it, fsync the folder."""
    manifest.updated_at = time.time()
    temporary = directory / "manifest.json.tmp"
    with open(temporary, "wb") as file:
        file.write(json.dumps(asdict(manifest), indent=1).encode())
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, directory / "manifest.json")
    fsync_dir(directory)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_index(directory: Path, manifest: Manifest) -> np.ndarray:
    """The committed index records (a copy in memory: 36 bytes per document)."""
    if manifest.documents == 0:
        return np.zeros(0, INDEX_DTYPE)
    index = np.fromfile(directory / "index.bin", dtype=INDEX_DTYPE, count=manifest.documents)
    if index.size != manifest.documents:
        raise DatasetError(
            f"{directory}/index.bin has {index.size} records, the manifest {manifest.documents}"
        )
    return index


def read_domains(directory: Path, manifest: Manifest) -> list[str]:
    if manifest.domains_bytes == 0:
        return []
    with open(directory / "domains.txt", "rb") as file:
        data = file.read(manifest.domains_bytes)
    return data.decode("utf-8").split("\n")[:-1]


def open_shards(directory: Path, manifest: Manifest) -> list[np.ndarray]:
    """Read-only memory maps of the committed part of every shard."""
    maps = []
    for number, tokens in enumerate(manifest.shards):
        if tokens == 0:
            maps.append(np.zeros(0, manifest.token_dtype))
            continue
        maps.append(
            np.memmap(shard_path(directory, number), dtype=manifest.token_dtype, mode="r", shape=(tokens,))
        )
    return maps


def shard_starts(manifest: Manifest) -> np.ndarray:
    """Global offset of each shard's first token."""
    return np.concatenate([[0], np.cumsum(manifest.shards, dtype=np.int64)])[:-1]


class ShardWriter:
    """Appends documents to a generation's files; `commit()` makes what was appended visible."""

    def __init__(self, directory: Path, manifest: Manifest, shard_tokens: int) -> None:
        self.directory = directory
        self.manifest = manifest
        self.shard_tokens = shard_tokens
        (directory / "shards").mkdir(parents=True, exist_ok=True)
        if not manifest.shards:
            manifest.shards.append(0)
        self._cut_back_to_manifest()
        self.domain_codes = {name: code for code, name in enumerate(read_domains(directory, manifest))}
        # Kept open for the whole build (appends), closed by close(): no `with` block spans a build.
        self._shard = open(shard_path(directory, len(manifest.shards) - 1), "ab")  # noqa: SIM115
        self._index = open(directory / "index.bin", "ab")  # noqa: SIM115
        self._domains = open(directory / "domains.txt", "ab")  # noqa: SIM115
        self._itemsize = manifest.token_dtype.itemsize

    def _cut_back_to_manifest(self) -> None:
        # What a crashed build appended after its last commit is not part of any version: cut it off.
        manifest, directory = self.manifest, self.directory
        for number, tokens in enumerate(manifest.shards):
            _truncate(shard_path(directory, number), tokens * manifest.token_dtype.itemsize)
        for path in (directory / "shards").glob("*.tokens"):
            if path.stem.isdigit() and int(path.stem) >= len(manifest.shards):
                path.unlink()
        _truncate(directory / "index.bin", manifest.documents * INDEX_DTYPE.itemsize)
        _truncate(directory / "domains.txt", manifest.domains_bytes)

    def domain_code(self, domain: str) -> int:
        code = self.domain_codes.get(domain)
        if code is None:
            code = self.domain_codes[domain] = len(self.domain_codes)
            line = (domain.replace("\n", " ") + "\n").encode("utf-8", "surrogatepass")
            self._domains.write(line)
            self.manifest.domains_bytes += len(line)
        return code

    def append(self, tokens: np.ndarray, records: np.ndarray) -> None:
        """Append documents: `tokens` is their concatenation, `records[i]["length"]` says where each ends.

        The records' `start` is filled in here. A shard is closed once it holds `shard_tokens`."""
        manifest = self.manifest
        offset, position, first = 0, manifest.total_tokens, 0
        for i in range(len(records)):
            if manifest.shards[-1] >= self.shard_tokens:
                self._write(tokens, first, offset)
                first = offset
                self._next_shard()
            length = int(records[i]["length"])
            records[i]["start"] = position
            position += length
            offset += length
            manifest.shards[-1] += length
        self._write(tokens, first, offset)
        self._index.write(records.tobytes())
        manifest.documents += len(records)

    def _write(self, tokens: np.ndarray, start: int, end: int) -> None:
        if end > start:
            self._shard.write(
                np.ascontiguousarray(tokens[start:end], dtype=self.manifest.token_dtype).tobytes()
            )

    def _next_shard(self) -> None:
        self._shard.flush()
        os.fsync(self._shard.fileno())
        self._shard.close()
        self.manifest.shards.append(0)
        self._shard = open(shard_path(self.directory, len(self.manifest.shards) - 1), "ab")  # noqa: SIM115

    def commit(self) -> None:
        """fsync the appended data, then publish it by replacing the manifest."""
        for file in (self._shard, self._index, self._domains):
            file.flush()
            os.fsync(file.fileno())
        fsync_dir(self.directory / "shards")
        save_manifest(self.directory, self.manifest)

    def close(self) -> None:
        for file in (self._shard, self._index, self._domains):
            # A full disk may refuse the last flush: the manifest never saw those bytes anyway.
            with contextlib.suppress(OSError):
                file.close()


def _truncate(path: Path, size: int) -> None:
    if not path.exists():
        if size:
            raise DatasetError(f"{path} is missing but the manifest expects {size} bytes in it")
        return
    actual = path.stat().st_size
    if actual < size:
        raise DatasetError(
            f"{path} has {actual} bytes but the manifest expects {size}: the dataset is damaged"
        )
    if actual > size:
        os.truncate(path, size)
