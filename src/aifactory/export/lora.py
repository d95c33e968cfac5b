"""LoRA on an existing open model: fine-tune a Llama- or Qwen2-family base on the factory's corpus.

`aifactory finetune lora --base DIR --output OUT` (or POST /api/exports with target "lora"):
1. The training text is the allowed corpus: documents allowed for training (policies and each page's
   own opt-out already decided that), not replaced by a newer version of their page, in the languages
   of TRAIN_LANG_ONLY, up to LORA_MAX_CORPUS_CHARS. Documents in the dataset's validation split (the
   same URL draw, DATASET_VAL_FRACTION) are the held-out set the loss is measured on before and after.
   `--text-file` trains on a local file instead.
2. Each document is encoded as the base's tokenizer does (BOS if it adds one, then EOS after it) and
   the stream is cut into sequences.
3. Settings come from the machine, as the original's run_train_auto.sh did, but from the memory
   actually free: device (CUDA, MPS or CPU), precision (bf16 where the GPU has it, fp16 with a loss
   scaler otherwise, fp32 on CPU), sequence length, micro-batch and accumulation (`choose_plan`).
   LORA_SEQ_LEN and LORA_BATCH_SIZE override.
4. A peft LoRA adapter (rank LORA_RANK, alpha LORA_ALPHA) on all seven projections of every block
   trains for LORA_STEPS steps (AdamW, warmup then cosine decay, gradient clipping).
5. The adapter is saved, merged into the base (`merge_and_unload`, in eval mode: LoRA dropout is off),
   the merged model saved as a Hugging Face directory, and written as GGUF with the `gguf` package
   (export/gguf_file.py: the Llama rotary permutation, Qwen2's biases, the base's own vocabulary).

OUT/ holds adapter/, merged/, merged-<type>.gguf and training.json (the plan, the loss curve, the held-out
loss before and after); it is written under a temporary name and renamed when everything is there.
The hub cannot be reached from here: the base is a local directory (`huggingface-cli download` one).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aifactory.export import ExportError, ExportNotFound
from aifactory.export.gguf_file import SUPPORTED_FAMILIES, rope_theta
from aifactory.settings import Settings

if TYPE_CHECKING:
    import torch

Progress = Callable[[float, str], None]
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GIB = 1024**3
CORPUS_PAGE = 500


# --- what to train -----------------------------------------------------------------------------------------
def check_base(base: Path) -> dict[str, Any]:
    """The base model's config.json, once the directory is known to hold a supported model (no torch)."""
    base = Path(base).expanduser()
    if not base.is_dir():
        raise ExportNotFound(
            f"base model {str(base)!r} is not a local directory: the model hub cannot be reached from "
            "here, so download the model first (e.g. `huggingface-cli download Qwen/Qwen2.5-0.5B "
            "--local-dir DIR`) and pass DIR"
        )
    try:
        config = json.loads((base / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{base} is not a Hugging Face model directory: config.json: {exc}") from None
    family = config.get("model_type")
    if family not in SUPPORTED_FAMILIES:
        raise ExportError(
            f"{base} is a {family or 'unknown'!r} model; supported families: {', '.join(SUPPORTED_FAMILIES)} "
            "(e.g. Llama 2/3, TinyLlama, Qwen2, Qwen2.5)"
        )
    rope_theta(config)  # refused now, not after hours of training, if its GGUF could not be written
    if not any(base.glob("*.safetensors")) and not any(base.glob("pytorch_model*.bin")):
        raise ExportError(f"{base} has no weights (*.safetensors)")
    if not (base / "tokenizer.json").is_file() and not (base / "tokenizer.model").is_file():
        raise ExportError(f"{base} has no tokenizer (tokenizer.json or tokenizer.model)")
    from aifactory.export.vocab import from_hf_directory

    from_hf_directory(base, int(config.get("vocab_size", 0)))  # a tokenizer llama.cpp cannot reproduce
    return config


@dataclass(frozen=True)
class LoraOptions:
    base: Path
    steps: int
    rank: int
    alpha: float
    dropout: float
    learning_rate: float
    seq_len: int  # 0 = choose
    batch_size: int  # 0 = choose
    max_corpus_chars: int
    gguf_type: str
    text_file: Path | None = None
    seed: int = 42

    @classmethod
    def from_settings(cls, settings: Settings, base: Path, **overrides: Any) -> LoraOptions:
        values: dict[str, Any] = dict(
            base=Path(base).expanduser(),
            steps=settings.lora_steps,
            rank=settings.lora_rank,
            alpha=settings.lora_alpha,
            dropout=settings.lora_dropout,
            learning_rate=settings.lora_learning_rate,
            seq_len=settings.lora_seq_len,
            batch_size=settings.lora_batch_size,
            max_corpus_chars=settings.lora_max_corpus_chars,
            gguf_type=settings.export_gguf_type,
            seed=settings.train_seed,
        )
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)

    @classmethod
    def from_request(cls, settings: Settings, request: dict[str, Any]) -> LoraOptions:
        return cls.from_settings(
            settings, Path(request["base"]), steps=request.get("steps"), gguf_type=request.get("type")
        )


@dataclass(frozen=True)
class Plan:
    """How to train on this machine, and why."""

    device: str
    precision: str  # bf16, fp16 or fp32
    seq_len: int
    batch_size: int
    grad_accum: int
    gradient_checkpointing: bool
    threads: int
    reason: str


def choose_plan(
    *,
    device: str,
    bf16: bool,
    free_bytes: float,
    parameters: int,
    layers: int,
    hidden: int,
    vocab: int,
    context: int,
    cores: int,
    seq_len: int = 0,
    batch_size: int = 0,
) -> Plan:
    """Settings for a LoRA run from the device and the memory free on it.

    The base's weights stay frozen in the training precision (2 bytes each on a GPU, 4 on a CPU); what
    is left, less a quarter kept in reserve, holds the activations. Per token those are about 34
    values of width `hidden` per layer (8 with gradient checkpointing) plus three of width `vocab` for
    the logits, their softmax and its gradient (fp32). A CPU gets short sequences and few of them, as
    compute, not memory, is its limit; below 4 GiB free it gets the original's low-memory settings
    (batch 1, at most 256 tokens, accumulation of at least 2)."""
    gpu = device in ("cuda", "mps")
    precision = ("bf16" if bf16 else "fp16") if device == "cuda" else "fp32"
    weight_bytes = parameters * (2 if precision != "fp32" else 4)
    budget = max(0.0, (free_bytes - weight_bytes) * 0.75)
    value_bytes = 2 if precision != "fp32" else 4

    def per_token(checkpointing: bool) -> float:
        return layers * hidden * (8 if checkpointing else 34) * value_bytes + 3 * vocab * 4

    longest = min(context, 1024 if gpu else 512)
    low_memory = not gpu and free_bytes < 4 * GIB
    if low_memory:
        longest = min(longest, 256)
    chosen_len = seq_len or longest
    checkpointing = gpu and budget < per_token(False) * chosen_len * 4
    fits = int(budget // max(1.0, per_token(checkpointing) * chosen_len))
    if not seq_len and fits < 1:  # not even one sequence: shorten it
        chosen_len = max(16, min(longest, int(budget // max(1.0, per_token(checkpointing)))))
        fits = 1
    most = 32 if gpu else 4
    chosen_batch = batch_size or max(1, min(most, fits))
    if low_memory and not batch_size:
        chosen_batch = 1
    target_tokens = 16384 if gpu else 2048  # tokens per optimizer step
    accum = max(1, min(16, math.ceil(target_tokens / (chosen_batch * chosen_len))))
    if low_memory:
        accum = max(accum, 2)
    reason = (
        f"{device}{' ' + precision if gpu else ''}, {free_bytes / GIB:.1f} GiB free, base weights "
        f"{weight_bytes / GIB:.2f} GiB: {chosen_batch} x {chosen_len} tokens x {accum} accumulation"
        + (", gradient checkpointing" if checkpointing else "")
        + (" (low-memory settings)" if low_memory else "")
    )
    return Plan(device, precision, chosen_len, chosen_batch, accum, checkpointing, max(1, cores), reason)


def machine_plan(settings: Settings, options: LoraOptions, config: dict[str, Any], parameters: int) -> Plan:
    import psutil
    import torch

    from aifactory.autotune import resolve_profile

    profile = resolve_profile(settings)
    if torch.cuda.is_available():
        device, free = "cuda", float(torch.cuda.mem_get_info()[0])
        bf16 = torch.cuda.is_bf16_supported()
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device, free, bf16 = "mps", float(psutil.virtual_memory().available), False
    else:
        device, free, bf16 = "cpu", float(psutil.virtual_memory().available), False
    heads = int(config["num_attention_heads"])
    return choose_plan(
        device=device,
        bf16=bf16,
        free_bytes=free,
        parameters=parameters,
        layers=int(config["num_hidden_layers"]),
        hidden=int(config.get("head_dim") or config["hidden_size"] // heads) * heads,
        vocab=int(config["vocab_size"]),
        context=int(config.get("max_position_embeddings", 2048)),
        cores=profile.pytorch_cpu_threads,
        seq_len=options.seq_len,
        batch_size=options.batch_size,
    )


# --- the training text -------------------------------------------------------------------------------------
def corpus_documents(settings: Settings, max_chars: int) -> Iterator[tuple[str, str]]:
    """(url, text) of the documents the factory may train on, in id order, up to `max_chars`."""
    import sqlalchemy as sa

    from aifactory.db.connect import open_database
    from aifactory.db.schema import document_removals, documents

    db = open_database(settings)
    languages = settings.languages()
    removed = sa.select(document_removals.c.doc_id)
    after, total = 0, 0
    try:
        while total < max_chars:
            query = (
                sa.select(documents.c.id, documents.c.url, documents.c.text)
                .where(
                    documents.c.id > after,
                    documents.c.allowed_for_training.is_(True),
                    documents.c.id.not_in(removed),
                    documents.c.language.in_(languages) if languages else sa.true(),
                )
                .order_by(documents.c.id)
                .limit(CORPUS_PAGE)
            )
            with db.read() as conn:
                rows = conn.execute(query).all()
            if not rows:
                return
            for doc_id, url, text in rows:
                after = int(doc_id)
                if len(text) < settings.min_train_chars:
                    continue
                text = text[: max_chars - total]
                total += len(text)
                yield url, text
                if total >= max_chars:
                    return
    finally:
        db.dispose()


def split_texts(settings: Settings, options: LoraOptions) -> tuple[list[str], list[str], str]:
    """(training texts, held-out texts, where they came from)."""
    if options.text_file is not None:
        try:
            text = options.text_file.read_text(encoding="utf-8")[: options.max_corpus_chars]
        except (OSError, UnicodeDecodeError) as exc:
            raise ExportError(f"cannot read {options.text_file}: {exc}") from None
        parts = [part for part in text.split("\n\n") if part.strip()]
        cut = max(1, len(parts) // 20)
        return parts[:-cut] or parts, parts[-cut:], f"{options.text_file.name} ({len(text):,} characters)"
    from aifactory.dataset.rules import split_draw

    train, held_out, chars = [], [], 0
    for url, text in corpus_documents(settings, options.max_corpus_chars):
        (held_out if split_draw(url) < settings.dataset_val_fraction else train).append(text)
        chars += len(text)
    if not train and not held_out:
        raise ExportError(
            "the corpus has no documents allowed for training yet: collect some first (Ignite, "
            "`aifactory crawl` or `aifactory ingest`), or pass --text-file"
        )
    if not held_out or not train:  # a tiny corpus: hold out its last twentieth instead
        texts = train + held_out
        cut = max(1, len(texts) // 20)
        train, held_out = texts[:-cut] or texts, texts[-cut:]
    return (
        train,
        held_out,
        f"the allowed corpus ({len(train) + len(held_out):,} documents, {chars:,} characters)",
    )


def token_stream(tokenizer: Any, texts: list[str]) -> list[int]:
    """Documents as the base saw text: its BOS (if it adds one) + the text + its EOS, one after another."""
    bos = (
        [tokenizer.bos_token_id]
        if getattr(tokenizer, "add_bos_token", False) and tokenizer.bos_token_id is not None
        else []
    )
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids: list[int] = []
    for text in texts:
        ids += bos + tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] + eos
    return ids


def sequences(ids: list[int], seq_len: int) -> torch.Tensor:
    """[n, seq_len] windows, the stream cut end to end (the model learns each next token in them)."""
    import torch

    count = len(ids) // seq_len
    if count == 0:
        raise ExportError(f"the text is {len(ids)} tokens, shorter than one sequence of {seq_len}")
    return torch.tensor(ids[: count * seq_len], dtype=torch.long).view(count, seq_len)


# --- training --------------------------------------------------------------------------------------------
@dataclass
class History:
    losses: list[float] = field(default_factory=list)
    held_out_before: float = 0.0
    held_out_after: float = 0.0
    seconds: float = 0.0


def _held_out_loss(model: Any, data: torch.Tensor, plan: Plan, limit: int = 32) -> float:
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), _autocast(plan):
        for start in range(0, min(len(data), limit), plan.batch_size):
            batch = data[start : start + plan.batch_size].to(plan.device)
            out = model(input_ids=batch, labels=batch)
            total += float(out.loss) * len(batch)
            count += len(batch)
    return total / max(1, count)


def _autocast(plan: Plan) -> Any:
    import contextlib

    import torch

    if plan.device == "cuda" and plan.precision != "fp32":
        return torch.autocast("cuda", dtype=torch.bfloat16 if plan.precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


def train_adapter(
    model: Any,
    train: torch.Tensor,
    held_out: torch.Tensor,
    plan: Plan,
    options: LoraOptions,
    progress: Progress,
) -> History:
    """The LoRA weights of `model` (a peft model) trained for options.steps optimizer steps."""
    import torch

    history = History(held_out_before=_held_out_loss(model, held_out, plan))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=options.learning_rate, weight_decay=0.0)
    warmup = max(1, options.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, options.steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    scaler = torch.amp.GradScaler("cuda") if plan.device == "cuda" and plan.precision == "fp16" else None
    generator = torch.Generator().manual_seed(options.seed)
    started = time.monotonic()
    model.train()
    for step in range(options.steps):
        optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for _ in range(plan.grad_accum):
            rows = torch.randint(0, len(train), (plan.batch_size,), generator=generator)
            batch = train[rows].to(plan.device)
            with _autocast(plan):
                # HF shifts the labels itself: the loss is on predicting token t+1 from tokens <= t.
                loss = model(input_ids=batch, labels=batch).loss / plan.grad_accum
            (scaler.scale(loss) if scaler is not None else loss).backward()
            loss_sum += float(loss.detach())
        if scaler is not None:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        history.losses.append(loss_sum)
        elapsed = time.monotonic() - started
        eta = elapsed / (step + 1) * (options.steps - step - 1)
        progress(
            0.1 + 0.7 * (step + 1) / options.steps,
            f"step {step + 1}/{options.steps} loss {loss_sum:.4f} lr {scheduler.get_last_lr()[0]:.2e} "
            f"ETA {eta:.0f}s",
        )
    history.seconds = time.monotonic() - started
    history.held_out_after = _held_out_loss(model, held_out, plan)
    return history


def finetune(
    settings: Settings, options: LoraOptions, out: Path, progress: Progress | None = None
) -> dict[str, Any]:
    """Train, merge and export; returns the summary (written to OUT/training.json too)."""
    from aifactory.export.staging import check_free
    from aifactory.export.tasks import check_type

    config = check_base(options.base)  # the checks first: a mistake costs no model loading
    check_type(options.gguf_type)
    check_free(Path(out))
    try:
        import shutil

        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ExportError(
            f"LoRA needs transformers and peft ({exc}): pip install 'aifactory[finetune]'"
        ) from None

    from aifactory.export.gguf_file import write_gguf
    from aifactory.export.staging import staged_directory
    from aifactory.export.vocab import from_hf_directory

    say = progress or (lambda fraction, message: None)
    torch.manual_seed(options.seed)
    say(0.0, "reading the training text")
    train_texts, held_out_texts, origin = split_texts(settings, options)
    say(0.02, f"loading {options.base}")
    tokenizer = AutoTokenizer.from_pretrained(options.base)
    probe = AutoModelForCausalLM.from_pretrained(options.base, dtype=torch.float32, device_map=None)
    plan = machine_plan(settings, options, config, sum(p.numel() for p in probe.parameters()))
    torch.set_num_threads(plan.threads)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[plan.precision]
    model = probe if dtype == torch.float32 else probe.to(dtype)
    model = model.to(plan.device)
    if plan.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    say(0.05, f"plan: {plan.reason}; data: {origin}")
    train = sequences(token_stream(tokenizer, train_texts), plan.seq_len)
    held_out = sequences(token_stream(tokenizer, held_out_texts), plan.seq_len)
    lora = LoraConfig(
        r=options.rank,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=TARGET_MODULES,
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    say(0.08, f"training {trainable:,} LoRA parameters on {len(train):,} sequences of {plan.seq_len}")
    history = train_adapter(peft_model, train, held_out, plan, options, say)
    with staged_directory(Path(out)) as staging:
        say(0.82, "saving the adapter")
        peft_model.save_pretrained(staging / "adapter")
        say(0.85, "merging the adapter into the base")
        merged = peft_model.eval().merge_and_unload()
        merged = merged.to("cpu", torch.float32)
        merged.save_pretrained(staging / "merged", safe_serialization=True)
        tokenizer.save_pretrained(staging / "merged")
        for name in ("tokenizer.model", "chat_template.jinja", "generation_config.json"):
            if (options.base / name).is_file() and not (staging / "merged" / name).is_file():
                shutil.copyfile(options.base / name, staging / "merged" / name)
        say(0.9, f"writing the merged model as GGUF ({options.gguf_type})")
        merged_config = json.loads((staging / "merged" / "config.json").read_text())
        weights = {name: tensor for name, tensor in merged.state_dict().items()}
        gguf_name = f"merged-{options.gguf_type}.gguf"
        summary = write_gguf(
            staging / gguf_name,
            config=merged_config,
            weights=weights,
            vocab=from_hf_directory(options.base, int(weights["model.embed_tokens.weight"].shape[0])),
            kind=options.gguf_type,
            name=f"{options.base.name}-lora",
            metadata={"general.description": f"{options.base.name} fine-tuned with LoRA on {origin}"},
            progress=lambda f, m: say(0.9 + 0.09 * f, m),
        )
        result = {
            "target": "lora",
            "base": str(options.base),
            "family": config["model_type"],
            "data": origin,
            "plan": asdict(plan),
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
            "trainable_parameters": trainable,
            "train_sequences": len(train),
            "held_out_sequences": len(held_out),
            "losses": history.losses,
            "held_out_loss_before": history.held_out_before,
            "held_out_loss_after": history.held_out_after,
            "train_seconds": round(history.seconds, 2),
            "gguf_bytes": summary["bytes"],
        }
        (staging / "training.json").write_text(json.dumps(result, indent=2))
    out = Path(out)
    say(1.0, f"wrote {out}")
    return {
        **result,
        "file": str(out / gguf_name),
        "directory": str(out),
        "adapter": str(out / "adapter"),
        "merged": str(out / "merged"),
    }
