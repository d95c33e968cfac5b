"""A SentencePiece model's pieces, scores, piece types and normalisation options, read from its protobuf.

The `sentencepiece` processor tells control, unknown, byte and unused pieces apart but not user-defined
ones (our newline piece), and nothing about the model type or the dummy prefix; `sentencepiece`'s own
`sentencepiece_model_pb2` would need the protobuf package for that. The fields needed are few and the
wire format is simple, so they are read here directly (field numbers from sentencepiece_model.proto):

    ModelProto      1 pieces (repeated SentencePiece), 2 trainer_spec, 3 normalizer_spec
    SentencePiece   1 piece (string), 2 score (float), 3 type (enum, NORMAL when absent)
    TrainerSpec     3 model_type (UNIGRAM=1, BPE=2, WORD=3, CHAR=4), 35 byte_fallback
    NormalizerSpec  1 name, 3 add_dummy_prefix, 4 remove_extra_whitespaces, 5 escape_whitespaces

Piece types are numbered as GGUF's token types are: NORMAL=1, UNKNOWN=2, CONTROL=3, USER_DEFINED=4,
UNUSED=5, BYTE=6.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from aifactory.export import ExportError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
MODEL_TYPES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}


@dataclass
class SentencePieceModel:
    pieces: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    types: list[int] = field(default_factory=list)
    model_type: str = "unigram"  # proto default
    byte_fallback: bool = False
    normalizer: str = "nmt_nfkc"
    add_dummy_prefix: bool = True  # proto defaults: what a model that does not say otherwise does
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True

    def ids_of_type(self, kind: int) -> list[int]:
        return [i for i, t in enumerate(self.types) if t == kind]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes):
    """(field number, wire type, value) of each field of one message; value is bytes for wire type 2."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def parse(data: bytes) -> SentencePieceModel:
    model = SentencePieceModel()
    for number, _, value in _fields(data):
        if number == 1:
            piece, score, kind = "", 0.0, NORMAL
            for sub, _, item in _fields(value):
                if sub == 1:
                    piece = item.decode("utf-8")
                elif sub == 2:
                    score = struct.unpack("<f", item)[0]
                elif sub == 3:
                    kind = int(item)
            model.pieces.append(piece)
            model.scores.append(score)
            model.types.append(kind)
        elif number == 2:
            for sub, _, item in _fields(value):
                if sub == 3:
                    model.model_type = MODEL_TYPES.get(int(item), str(item))
                elif sub == 35:
                    model.byte_fallback = bool(item)
        elif number == 3:
            for sub, _, item in _fields(value):
                if sub == 1:
                    model.normalizer = item.decode("utf-8")
                elif sub == 3:
                    model.add_dummy_prefix = bool(item)
                elif sub == 4:
                    model.remove_extra_whitespaces = bool(item)
                elif sub == 5:
                    model.escape_whitespaces = bool(item)
    return model


def read(path: Path) -> SentencePieceModel:
    try:
        return parse(Path(path).read_bytes())
    except (OSError, ValueError, IndexError, UnicodeDecodeError, struct.error) as exc:
        raise ExportError(f"{path} is not a readable SentencePiece model: {exc}") from None
