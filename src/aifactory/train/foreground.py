"""`aifactory train` (train in the foreground with a progress bar) and `aifactory model info`.

`aifactory train` runs the same cycles as the trainer engine (checkpoints, evaluations, early stopping,
rollback and retry, metrics in the database), for a given number of steps. Under
`torchrun --nproc_per_node N -m aifactory train ...` it trains with DistributedDataParallel and rank 0
writes checkpoints, metrics and the progress bar. Ctrl-C stops after the current step and saves.

Until the dataset builder exists, its data is `--text-file PATH`: the file's UTF-8 bytes are the
tokens (vocabulary 256), a real if crude encoding that the command names when it starts.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from aifactory.db import Database
from aifactory.db.connect import open_database
from aifactory.settings import Settings
from aifactory.train import metrics
from aifactory.train.batches import SourceUnavailable, TokenArraySource
from aifactory.train.checkpoint import CheckpointError, CheckpointStore, read_checkpoint
from aifactory.train.cycle import Evaluation, Hooks, finish, keep_best_of_store, run_cycle_with_recovery, save
from aifactory.train.engine import agree_on_version, checkpoint_dir, metric_row
from aifactory.train.runtime import setup_runtime, shutdown_runtime
from aifactory.train.trainer import StepStats, Trainer

BAR_WIDTH = 24


def format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """A one-line progress bar on a terminal; a line per evaluation (and every 10 s) otherwise."""

    def __init__(self, total: int, stream: TextIO = sys.stdout) -> None:
        self.total, self.stream = total, stream
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self.printed = 0.0
        self.done = 0

    def update(self, trainer: Trainer, stats: StepStats, evaluation: Evaluation | None) -> None:
        self.done += 1
        filled = BAR_WIDTH * self.done // max(1, self.total)
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done * (self.total - self.done)
        line = (
            f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.done}/{self.total}  step {stats.step}  "
            f"loss {stats.loss:.4f}  lr {stats.lr:.2e}  {stats.tokens_per_sec:,.0f} tok/s  "
            f"MFU {stats.mfu:.1%}  ETA {format_eta(eta)}"
        )
        if evaluation is not None:
            line += f"  | val {evaluation.val_loss:.4f} ({evaluation.val_bpb:.3f} bpb, {evaluation.verdict})"
        if self.tty:
            self.stream.write("\r\x1b[2K" + line + ("\n" if evaluation is not None else ""))
            self.stream.flush()
        elif evaluation is not None or self.done == self.total or time.monotonic() - self.printed >= 10:
            self.printed = time.monotonic()
            print(line, file=self.stream, flush=True)

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")


@contextlib.contextmanager
def graceful_interrupt() -> Any:
    """The first Ctrl-C asks training to stop after the current step (and save); a second one aborts."""
    requested = [False]

    def handler(signum: int, frame: Any) -> None:
        if requested[0]:
            raise KeyboardInterrupt
        requested[0] = True
        print("\nstopping after this step (Ctrl-C again to abort without saving)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: requested[0]
    finally:
        signal.signal(signal.SIGINT, previous)


def report(message: str, level: str = "info") -> None:
    print(f"{level}: {message}", file=sys.stderr, flush=True)


def train_command(
    settings: Settings, *, steps: int, text_file: Path | None, out: Path | None, chat_only: bool = False
) -> int:
    try:
        if text_file is None:
            from aifactory.chat.mix import with_chat_mix
            from aifactory.dataset.source import open_source  # the token dataset the factory builds

            # --chat-only: every window a conversation (fine-tuning the current model to chat);
            # otherwise conversations at CHAT_MIX_RATIO, as the trainer engine mixes them.
            source = with_chat_mix(
                settings, open_source(settings), ratio=1.0 if chat_only else None, require=chat_only
            )
        elif chat_only:
            raise SourceUnavailable(
                "--chat-only trains on the factory's conversations: leave out --text-file"
            )
        else:
            source = TokenArraySource.from_text_file(text_file)
    except (OSError, SourceUnavailable) as exc:
        hint = "; or pass --text-file PATH to train on a local text file" if text_file is None else ""
        print(f"aifactory train: {exc}{hint}", file=sys.stderr)
        return 2
    runtime = setup_runtime(settings)
    store = CheckpointStore(out or checkpoint_dir(settings), settings.train_keep_snapshots)
    db: Database | None = open_database(settings) if runtime.is_main else None
    say = print if runtime.is_main else (lambda *args, **kwargs: None)
    try:
        with store.lock() if runtime.is_main else contextlib.nullcontext(), graceful_interrupt() as stop:
            checkpoint = None
            if runtime.is_main:
                checkpoint, problem = store.load_for_resume(map_location=runtime.device)
                if problem:
                    report(problem, "error")
            # The other ranks load exactly the checkpoint rank 0 settled on (not whatever a pointer says
            # by the time they look: rank 0 may already be saving).
            chosen = runtime.broadcast_object(str(checkpoint.directory) if checkpoint else None)
            if not runtime.is_main and chosen is not None:
                checkpoint = read_checkpoint(Path(chosen), map_location=runtime.device)
            trainer = Trainer.create(settings, source, runtime, checkpoint)
            keep_best_of_store(trainer, store)
            if checkpoint is None:
                save(trainer, store, ("latest",))
            if trainer.state.paused:  # the engine would wait for more data; asked to train, we train
                say("the checkpoint was paused by early stopping; training anyway, as asked")
                trainer.state.paused, trainer.state.stale_evals = False, 0
            origin = f"resuming at step {trainer.state.step:,}" if checkpoint else "a new model"
            say(f"data: {source.describe()}")
            if text_file is not None:
                say("      a stand-in until the dataset's tokenizer and shards exist: each byte is one token")
            say(
                f"model: {trainer.config.short()}, {trainer.model.parameter_count():,} parameters "
                f"({origin}); {runtime.describe()}; batch {trainer.batch_size} x {trainer.seq_len} tokens x "
                f"{trainer.grad_accum} accumulation x {runtime.world_size} processes"
            )
            say(f"checkpoints: {store.root}")
            progress = Progress(steps) if runtime.is_main else None
            writer = metrics.MetricsWriter(db, f"cli-{socket.gethostname()[:100]}", 0) if db else None

            def on_step(stats: StepStats, evaluation: Evaluation | None) -> None:
                if writer is not None:
                    writer.write(metric_row(trainer, stats, evaluation), force=evaluation is not None)
                if progress is not None:
                    progress.update(trainer, stats, evaluation)

            def stop_everywhere() -> bool:  # under DDP all ranks must stop at the same micro-batch
                return runtime.any_rank(stop())

            hooks = Hooks(
                stop=stop_everywhere,
                wait=lambda seconds: _sleep(seconds, stop),
                report=report,
                on_step=on_step,
            )
            remaining, paused = steps, False
            while remaining > 0 and not stop_everywhere():
                agree_on_version(runtime, source, hooks.wait)
                result = run_cycle_with_recovery(
                    trainer, store, hooks, min(remaining, settings.train_steps_per_cycle)
                )
                remaining -= result.steps
                if result.stopped or result.paused:
                    paused = result.paused
                    break
            finish(trainer, store, hooks)
            if progress is not None:
                progress.finish()
            if db is not None:
                metrics.prune(db)
            state = trainer.state
            best = ""
            if state.best_val_loss is not None:
                best = f"; best validation loss {state.best_val_loss:.4f} at step {state.best_val_step}"
            say(f"saved step {state.step:,} ({state.tokens_seen:,} tokens seen){best}")
            if paused:
                say("early stopping paused training: more data is needed for it to improve")
    except CheckpointError as exc:
        print(f"aifactory train: {exc}", file=sys.stderr)
        return 1
    finally:
        if db is not None:
            db.dispose()
        shutdown_runtime(runtime)
    return 0


def _sleep(seconds: float, stop: Any) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stop():
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    return bool(stop())


# --- aifactory model info ----------------------------------------------------------------------------------


def describe_checkpoint(directory: Path, meta: dict[str, Any]) -> dict[str, Any]:
    from aifactory.model.config import ModelConfig

    config = ModelConfig.from_dict(meta["model"])
    state = meta.get("state", {})
    return {
        "directory": str(directory),
        "step": meta["step"],
        "saved_at": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(meta.get("saved_at", 0))),
        "model": config.short(),
        "parameters": meta.get("parameters", config.parameter_count()),
        "size_bytes": sum(info["bytes"] for info in meta["files"].values()),
        "tokens_seen": state.get("tokens_seen"),
        "epoch": meta.get("epoch"),
        "train_loss": state.get("train_loss"),
        "val_loss": state.get("val_loss"),
        "val_bpb": state.get("val_bpb"),
        "best_val_loss": state.get("best_val_loss"),
        "tokenizer_hash": meta.get("tokenizer_hash"),
        "dataset_version": meta.get("dataset_version"),
        "learning_rate": meta.get("schedule", {}).get("lr"),
        "training": meta.get("training", {}),
        "data_mix": meta.get("data_mix", {}),  # conversation share (chat tuning); {} = documents only
        "versions": {"aifactory": meta.get("aifactory_version"), "torch": meta.get("torch_version")},
        "config": config.to_dict(),
    }


def model_info_command(settings: Settings, *, directory: Path | None, as_json: bool) -> int:
    store = CheckpointStore(directory or checkpoint_dir(settings))
    found: dict[str, Any] = {}
    for name in ("latest", "best", "backup"):
        try:
            entry = store.read_meta(name)
        except (CheckpointError, OSError) as exc:
            found[name] = {"error": str(exc)}
            continue
        if entry is not None:
            found[name] = describe_checkpoint(*entry)
    if not found:
        print(f"no checkpoint in {store.root} yet: train one with `aifactory train` or start the factory")
        return 1
    if as_json:
        print(json.dumps(found, indent=2))
        return 0
    for name, info in found.items():
        if "error" in info:
            print(f"{name}: cannot be read: {info['error']}")
            continue
        training = info["training"]
        print(f"{name}: {info['directory']}")
        size = f"{info['size_bytes'] / 1e6:.1f} MB"
        print(f"    model        {info['model']}, {info['parameters']:,} parameters, {size}")
        tokens = f"{info['tokens_seen']:,} tokens, epoch {info['epoch']:.2f}"
        print(f"    progress     step {info['step']:,}, {tokens}")
        losses = [
            f"{key} {info[key]:.4f}" for key in ("train_loss", "val_loss", "best_val_loss") if info[key]
        ]
        if info["val_bpb"]:
            losses.append(f"val_bpb {info['val_bpb']:.4f}")
        print(f"    losses       {', '.join(losses) or 'none yet'}")
        print(
            f"    data         tokenizer {info['tokenizer_hash']}, dataset version {info['dataset_version']}"
        )
        print(
            f"    trained      {info['saved_at']}, batch {training.get('batch_size')} x "
            f"{training.get('seq_len')}, "
            f"{training.get('device')} {training.get('precision')}, lr {info['learning_rate']:.3g}, "
            f"aifactory {info['versions']['aifactory']}, torch {info['versions']['torch']}"
        )
    return 0
