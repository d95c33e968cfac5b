"""GGUF vocabularies: what llama.cpp needs to tokenize exactly as the model was trained.

Two kinds, as llama.cpp knows them:
- "llama": a SentencePiece BPE model (ours, Llama 2 and its relatives). Pieces with their scores and
  piece types (normal, control for the specials and chat markers, byte for `<0xNN>`, user-defined for
  our newline piece), and `tokenizer.ggml.add_space_prefix` from the model's dummy-prefix option:
  llama.cpp prepends a space unless told not to, which ours never did. llama.cpp applies no
  normalisation, so only identity-normalised models can be exported faithfully.
- "gpt2": a byte-level BPE from a Hugging Face tokenizer.json (Qwen2, Llama 3): the token strings,
  the merges, and `tokenizer.ggml.pre`, the name of the pre-tokenizer regex llama.cpp must use. It is
  recognised from the regex in tokenizer.json itself; an unknown one is an error, because llama.cpp
  would otherwise split text differently from the tokenizer the model learned with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aifactory.export import ExportError, sentencepiece_vocab, template

NORMAL, CONTROL, USER_DEFINED = 1, 3, 4

# Pre-tokenizer regexes of the byte-level BPE families llama.cpp knows (src/llama-vocab.cpp), by name.
_LETTERS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
_REST = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
PRE_TOKENIZERS = {
    _LETTERS + r"\p{N}" + _REST: "qwen2",
    _LETTERS + r"\p{N}{1,3}" + _REST: "llama-bpe",
}
GPT2_PATTERN = "gpt-2"  # ByteLevel's own regex (no Split before it)
END_OF_TURN = (template.END, "<|im_end|>", "<|eot_id|>", "<end_of_turn>")


@dataclass
class GGUFVocab:
    model: str  # "llama" (SentencePiece) or "gpt2" (byte-level BPE)
    tokens: list[bytes]
    types: list[int]
    scores: list[float] | None = None
    merges: list[str] | None = None
    pre: str = "default"
    bos_id: int | None = None
    eos_id: int | None = None
    eot_id: int | None = None
    unk_id: int | None = None
    pad_id: int | None = None
    add_bos: bool = False
    add_space_prefix: bool | None = None
    chat_template: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def write(self, writer: Any) -> None:
        """The tokenizer keys, on a gguf.GGUFWriter."""
        writer.add_tokenizer_model(self.model)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.types)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        if self.merges is not None:
            writer.add_token_merges(self.merges)
        for value, add in (
            (self.bos_id, writer.add_bos_token_id),
            (self.eos_id, writer.add_eos_token_id),
            (self.eot_id, writer.add_eot_token_id),
            (self.unk_id, writer.add_unk_token_id),
            (self.pad_id, writer.add_pad_token_id),
        ):
            if value is not None:
                add(value)
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(False)
        if self.add_space_prefix is not None:
            writer.add_add_space_prefix(self.add_space_prefix)
            writer.add_remove_extra_whitespaces(False)
        if self.chat_template:
            writer.add_chat_template(self.chat_template)


def from_sentencepiece(
    model_path: Path,
    *,
    add_bos: bool,
    chat_template: str | None,
    specials: dict[str, str] | None = None,
) -> GGUFVocab:
    """The "llama" vocabulary of a SentencePiece BPE model. `specials` names the bos/eos/unk/pad pieces
    when they are not SentencePiece's own (an HF tokenizer_config can say so)."""
    model = sentencepiece_vocab.read(model_path)
    if model.model_type != "bpe":
        raise ExportError(
            f"{model_path} is a SentencePiece {model.model_type} model; llama.cpp's SentencePiece "
            "tokenizer reproduces BPE models only (TOKENIZER_MODEL_TYPE=bpe, the default)"
        )
    if model.normalizer != "identity":
        raise ExportError(
            f"{model_path} normalises text with {model.normalizer!r}, which llama.cpp cannot reproduce"
        )
    ids = {piece: i for i, piece in enumerate(model.pieces)}
    named = {"bos": template.BOS, "eos": template.EOS, "unk": "<unk>", "pad": "<pad>", **(specials or {})}
    eot = next((ids[piece] for piece in END_OF_TURN if piece in ids), None)
    return GGUFVocab(
        model="llama",
        tokens=[piece.encode("utf-8") for piece in model.pieces],
        types=list(model.types),
        scores=list(model.scores),
        bos_id=ids.get(named["bos"]),
        eos_id=ids.get(named["eos"]),
        eot_id=eot,
        unk_id=ids.get(named["unk"]),
        pad_id=ids.get(named["pad"]),
        add_bos=add_bos,
        add_space_prefix=model.add_dummy_prefix,
        chat_template=chat_template,
    )


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path} cannot be read: {exc}") from None


def hf_chat_template(directory: Path, config: dict[str, Any]) -> str | None:
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    value = config.get("chat_template")
    return value if isinstance(value, str) else None


def _pre_tokenizer_name(pre_tokenizer: dict[str, Any] | None, where: Path) -> str:
    """llama.cpp's name for a tokenizer.json pre-tokenizer, from its split regex."""
    steps = (pre_tokenizer or {}).get("pretokenizers") or [pre_tokenizer or {}]
    patterns = [step.get("pattern", {}).get("Regex") for step in steps if step.get("type") == "Split"]
    byte_level = [step for step in steps if step.get("type") == "ByteLevel"]
    if not byte_level:
        raise ExportError(f"{where}: not a byte-level BPE tokenizer (no ByteLevel pre-tokenizer)")
    if not patterns and byte_level[0].get("use_regex", True):
        return GPT2_PATTERN
    if len(patterns) == 1 and patterns[0] in PRE_TOKENIZERS:
        return PRE_TOKENIZERS[patterns[0]]
    raise ExportError(
        f"{where}: its pre-tokenizer regex is not one llama.cpp is known to share; supported are the "
        f"GPT-2, Qwen2 and Llama 3 byte-level tokenizers and SentencePiece BPE (tokenizer.model)"
    )


def from_hf_directory(directory: Path, vocab_size: int) -> GGUFVocab:
    """The vocabulary of a Hugging Face model directory: its tokenizer.model when there is one (a
    SentencePiece model), else its tokenizer.json (byte-level BPE)."""
    config = _read_json(directory / "tokenizer_config.json")
    generation = _read_json(directory / "generation_config.json")
    chat_template = hf_chat_template(directory, config)
    names = {key: _token_text(config.get(f"{key}_token")) for key in ("bos", "eos", "unk", "pad")}
    if (directory / "tokenizer.model").is_file():
        vocab = from_sentencepiece(
            directory / "tokenizer.model",
            add_bos=bool(config.get("add_bos_token", True)),
            chat_template=chat_template,
            specials={key: value for key, value in names.items() if value},
        )
    else:
        vocab = _from_tokenizer_json(directory, config, names, chat_template)
    if len(vocab.tokens) < vocab_size:  # the embedding matrix is padded past the tokenizer (Qwen2)
        start = len(vocab.tokens)
        vocab.tokens += [f"[PAD{i}]".encode() for i in range(start, vocab_size)]
        vocab.types += [5] * (vocab_size - start)  # UNUSED
        if vocab.scores is not None:
            vocab.scores += [-1e4] * (vocab_size - start)
    elif len(vocab.tokens) > vocab_size:
        raise ExportError(
            f"{directory}: the tokenizer has {len(vocab.tokens)} tokens, more than the model's {vocab_size}"
        )
    ends = generation.get("eos_token_id")
    ends = ends if isinstance(ends, list) else [ends] if isinstance(ends, int) else []
    if vocab.eot_id is None:
        vocab.eot_id = next((i for i in ends if i != vocab.eos_id), None)
    if vocab.eos_id is None and ends:
        vocab.eos_id = ends[0]
    return vocab


def _from_tokenizer_json(
    directory: Path, config: dict[str, Any], names: dict[str, str | None], chat_template: str | None
) -> GGUFVocab:
    path = directory / "tokenizer.json"
    data = _read_json(path)
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise ExportError(
            f"{directory} has neither tokenizer.model (SentencePiece) nor a BPE tokenizer.json; "
            "supported are SentencePiece BPE and the GPT-2, Qwen2 and Llama 3 byte-level tokenizers"
        )
    pre = _pre_tokenizer_name(data.get("pre_tokenizer"), path)
    ids: dict[str, int] = dict(model["vocab"])
    added = {token["content"]: token for token in data.get("added_tokens", [])}
    for content, token in added.items():
        ids[content] = token["id"]
    size = max(ids.values()) + 1
    tokens = [f"[PAD{i}]".encode() for i in range(size)]
    types = [5] * size  # UNUSED until named
    for content, i in ids.items():
        tokens[i] = content.encode("utf-8")
        token = added.get(content)
        types[i] = NORMAL if token is None else CONTROL if token.get("special") else USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    if not merges:
        raise ExportError(f"{path} has no merges: llama.cpp cannot tokenize a BPE vocabulary without them")
    eot = next((ids[piece] for piece in END_OF_TURN if piece in ids), None)
    return GGUFVocab(
        model="gpt2",
        tokens=tokens,
        types=types,
        merges=merges,
        pre=pre,
        bos_id=ids.get(names["bos"] or ""),
        eos_id=ids.get(names["eos"] or ""),
        eot_id=eot,
        unk_id=ids.get(names["unk"] or ""),
        pad_id=ids.get(names["pad"] or ""),
        add_bos=bool(config.get("add_bos_token", False)),
        chat_template=chat_template,
    )
