"""A Hugging Face model directory that `AutoModelForCausalLM` and `AutoTokenizer` load with no custom code.

    config.json              LlamaForCausalLM (model/hf.py: v4 keys plus v5's rope_parameters)
    generation_config.json   BOS, both end ids (<|end|> and </s>), pad, the default sampling
    model.safetensors        our weights under HF's names (model/hf.py; no rotary permutation: both
                             use the half-split layout)
    tokenizer.model          the SentencePiece model itself (llama.cpp's converter and old transformers)
    tokenizer.json           the same tokenizer for the `tokenizers` library, built here (below)
    tokenizer_config.json    special tokens, add_bos_token as in training, add_eos_token false
    special_tokens_map.json  bos, eos, unk, pad and the chat markers
    chat_template.jinja      the chat template (export/template.py)
    aifactory.json           provenance: checkpoint, step, losses, tokenizer, dataset version

tokenizer.json reproduces our SentencePiece encoding exactly (a test compares ids on real ja and en
text): the BPE vocabulary and merges of the SentencePiece model (a merge (a, b) ranks by the score of
the piece a+b, as SentencePiece picks the best-scoring pair), byte fallback, spaces written as U+2581
and no dummy prefix (identity normalisation), the newline as a plain added token, the control tokens
as special tokens, and a post-processor that prepends BOS when training did.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aifactory.dataset.tokenizer import Tokenizer
from aifactory.export import ExportError, sentencepiece_vocab, template
from aifactory.export.source import ExportSource, load_weights
from aifactory.export.staging import check_free, staged_directory

Progress = Callable[[float, str], None]


def _no_progress(fraction: float, message: str) -> None:
    pass


def sentencepiece_merges(model: sentencepiece_vocab.SentencePieceModel) -> list[tuple[str, str]]:
    """Every (a, b) whose concatenation is a normal piece, best-scoring result first."""
    normal = {
        piece: i for i, (piece, kind) in enumerate(zip(model.pieces, model.types, strict=True)) if kind == 1
    }
    ranked = []
    for piece, i in normal.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in normal and right in normal:
                ranked.append((-model.scores[i], i, normal[left], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def tokenizer_json(model_path: Path, add_bos: bool) -> str:
    """tokenizer.json for the SentencePiece BPE model at `model_path`."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE

    model = sentencepiece_vocab.read(model_path)
    if model.model_type != "bpe":
        raise ExportError(
            f"{model_path} is a SentencePiece {model.model_type} model; export needs BPE "
            "(TOKENIZER_MODEL_TYPE=bpe, the default)"
        )
    if model.normalizer != "identity" or model.add_dummy_prefix or model.remove_extra_whitespaces:
        raise ExportError(
            f"{model_path} normalises text ({model.normalizer}, dummy prefix {model.add_dummy_prefix}); "
            "only identity normalisation without a dummy prefix is exported"
        )
    vocab = {piece: i for i, piece in enumerate(model.pieces)}
    unk = model.pieces[model.ids_of_type(sentencepiece_vocab.UNKNOWN)[0]]
    tok = Tokenizer(
        BPE(vocab=vocab, merges=sentencepiece_merges(model), unk_token=unk, byte_fallback=True, fuse_unk=True)
    )
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    specials = [
        model.pieces[i]
        for i in model.ids_of_type(sentencepiece_vocab.CONTROL)
        + model.ids_of_type(sentencepiece_vocab.UNKNOWN)
    ]
    tok.add_special_tokens(
        [AddedToken(piece, special=True, normalized=False) for piece in sorted(specials, key=vocab.get)]
    )
    user = [model.pieces[i] for i in model.ids_of_type(sentencepiece_vocab.USER_DEFINED)]
    tok.add_tokens([AddedToken(piece, special=False, normalized=False) for piece in user])
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{template.BOS} $A",
            pair=f"{template.BOS} $A {template.BOS} $B",
            special_tokens=[(template.BOS, vocab[template.BOS])],
        )
    return tok.to_str(pretty=True)


def tokenizer_files(tokenizer: Tokenizer, max_length: int) -> dict[str, str]:
    """tokenizer.json, tokenizer_config.json, special_tokens_map.json and chat_template.jinja."""
    add_bos = tokenizer.info.add_bos
    markers = [template.SYSTEM, template.USER, template.ASSISTANT, template.END]
    special = {
        "bos_token": template.BOS,
        "eos_token": template.EOS,
        "unk_token": "<unk>",
        "pad_token": "<pad>",
    }
    config = {
        # The generic fast tokenizer loads tokenizer.json exactly as written; transformers' LlamaTokenizer
        # would rebuild the pre-tokenizer with Llama's dummy prefix, which this tokenizer never had.
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "additional_special_tokens": markers,
        "add_bos_token": add_bos,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_length,
        "padding_side": "left",
        "chat_template": template.export_chat_template(add_bos),
    }
    return {
        "tokenizer.json": tokenizer_json(tokenizer.model_path, add_bos),
        "tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False),
        "special_tokens_map.json": json.dumps(
            {**special, "additional_special_tokens": markers}, indent=2, ensure_ascii=False
        ),
        "chat_template.jinja": template.export_chat_template(add_bos),
    }


def generation_config(tokenizer: Tokenizer, max_length: int) -> dict[str, Any]:
    return {
        "bos_token_id": tokenizer.bos_id,
        # Generation stops at the end of a turn or of a document, as serving does.
        "eos_token_id": [tokenizer.special_ids[template.END], tokenizer.eos_id],
        "pad_token_id": tokenizer.pad_id,
        "do_sample": True,
        "temperature": template.SAMPLING["temperature"],
        "top_p": template.SAMPLING["top_p"],
        "top_k": template.SAMPLING["top_k"],
        "repetition_penalty": template.SAMPLING["repeat_penalty"],
    }


def write_hf(source: ExportSource, out: Path, progress: Progress = _no_progress) -> Path:
    """Write the Hugging Face directory `out` (which must not exist); returns it."""
    check_free(Path(out))  # before torch and the weights are loaded
    import safetensors.torch

    from aifactory.model.hf import hf_config, to_hf_state_dict

    tokenizer = source.tokenizer()
    context = source.config.max_seq_len
    with staged_directory(out) as staging:
        progress(0.05, "reading the weights")
        weights = to_hf_state_dict(load_weights(source), source.config)
        config = hf_config(source.config, bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id)
        config["pad_token_id"] = tokenizer.pad_id
        progress(0.3, "writing model.safetensors")
        safetensors.torch.save_file(weights, staging / "model.safetensors", metadata={"format": "pt"})
        progress(0.8, "writing the tokenizer")
        files = {
            "config.json": json.dumps(config, indent=2),
            "generation_config.json": json.dumps(generation_config(tokenizer, context), indent=2),
            **tokenizer_files(tokenizer, context),
            "aifactory.json": json.dumps(source.provenance(), indent=2),
        }
        for name, text in files.items():
            (staging / name).write_text(text, encoding="utf-8")
        shutil.copyfile(tokenizer.model_path, staging / "tokenizer.model")
        progress(0.95, "syncing")
    progress(1.0, f"wrote {out}")
    return out
