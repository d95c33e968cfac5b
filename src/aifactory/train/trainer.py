"""The trainer's core: the model, its optimizer and sampler, one optimizer step, one evaluation.

Everything a resumed run needs to continue *exactly* is in TrainState plus the weights, the optimizer
state and the sampler's generator state, and all of it goes into the checkpoint: N steps, save, resume,
N more steps gives the same losses as 2N steps in one go (tests/train/test_resume.py).

Data arrives through a BatchSource (train/batches.py). Under DDP every rank draws the global batch with
the same generator and keeps its own rows, so N processes train on exactly what one process would.
"""

from __future__ import annotations

import base64
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from aifactory import __version__
from aifactory.autotune import cpu_cores, resolve_profile
from aifactory.model import config as model_config
from aifactory.model.config import ModelConfig
from aifactory.model.llama import Transformer
from aifactory.settings import Settings
from aifactory.train.batches import BatchSource
from aifactory.train.checkpoint import Checkpoint, CheckpointError
from aifactory.train.loader import BatchLoader
from aifactory.train.mfu import peak_flops
from aifactory.train.runtime import Runtime
from aifactory.train.schedule import Schedule
from aifactory.train.sharing import LoadController
from aifactory.train.writer import CheckpointWriter

BETAS = (0.9, 0.95)  # beta2 0.95 rather than 0.999: steadier with small batches (GPT-3, Llama)
CHECKPOINT_FORMAT = 1


class NonFiniteLoss(RuntimeError):
    """The loss or the gradient became NaN/inf; the optimizer step was not taken."""


@dataclass
class TrainState:
    step: int = 0  # optimizer steps taken
    tokens_seen: int = 0  # training tokens consumed (all ranks)
    train_loss: float | None = None  # of the last step
    val_loss: float | None = None  # of the last evaluation
    val_bpb: float | None = None
    best_val_loss: float | None = None
    best_val_step: int | None = None
    val_key: str = ""  # which validation windows best_val_loss was measured on
    stale_evals: int = 0  # evaluations since the last improvement
    paused: bool = False  # early stopping: waiting for the dataset to grow
    paused_at_tokens: int = 0  # the dataset's training tokens when it paused
    lr_scale: float = 1.0  # lowered after a NaN/inf loss
    stable_steps: int = 0  # steps since the rate was lowered; after TRAIN_LR_RECOVER_STEPS it doubles back
    val_languages: dict[str, dict[str, float]] = field(default_factory=dict)  # language -> loss, bpb

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass
class StepStats:
    step: int
    loss: float
    lr: float
    grad_norm: float
    tokens: int
    seconds: float
    tokens_per_sec: float
    mfu: float


def build_optimizer(model: nn.Module, settings: Settings) -> torch.optim.AdamW:
    """AdamW with weight decay on the matmul weights only: decaying norm gains and embeddings pulls
    them towards zero for no benefit (the original decayed everything)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (decay if param.dim() >= 2 and not name.startswith("embed.") else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": settings.train_weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    try:  # one fused kernel for every parameter (CUDA, CPU, MPS in recent torch)
        return torch.optim.AdamW(groups, lr=settings.train_lr, betas=BETAS, eps=1e-8, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=settings.train_lr, betas=BETAS, eps=1e-8, foreach=True)


CUDA_TOKENS_PER_STEP = 262_144  # TRAIN_TOKENS_PER_STEP auto on a GPU: a GPT-style quarter-million


def accumulation_steps(settings: Settings, tokens_per_micro_step: int, device: str = "cpu") -> int:
    """Micro-batches per optimizer step: TRAIN_GRAD_ACCUM_STEPS, or as many as TRAIN_TOKENS_PER_STEP
    needs (a GPU with a small micro-batch still takes steps of the size the learning rate is tuned for;
    0 = auto: CUDA_TOKENS_PER_STEP on CUDA, one micro-batch elsewhere)."""
    target = settings.train_tokens_per_step or (CUDA_TOKENS_PER_STEP if device == "cuda" else 0)
    wanted = math.ceil(target / tokens_per_micro_step) if target else 1
    return max(settings.train_grad_accum_steps, wanted)


def validation_windows(settings: Settings, seq_len: int, world_size: int) -> int:
    """How many seq_len windows an evaluation reads: VAL_EVAL_TOKENS (or VAL_EVAL_BATCHES x 2,048
    tokens, the original's 4 x 512), a multiple of the ranks so each evaluates an equal share."""
    budget = settings.val_eval_tokens or settings.val_eval_batches * 2048
    windows = max(1, budget // seq_len)
    return max(world_size, windows // world_size * world_size)


class Trainer:
    def __init__(
        self, settings: Settings, source: BatchSource, runtime: Runtime, config: ModelConfig
    ) -> None:
        profile = resolve_profile(settings)
        self.settings, self.source, self.runtime, self.config = settings, source, runtime, config
        self.batch_size = profile.train_batch_size  # sequences per micro-batch on each rank
        self.seq_len = profile.train_seq_len
        self.grad_accum = accumulation_steps(
            settings, self.batch_size * self.seq_len * runtime.world_size, runtime.device.type
        )
        # The validation windows depend on the token budget and the sequence length only, never on the
        # batch size (which auto-tune and out-of-memory retries change): best_val_loss stays comparable.
        self.val_windows = validation_windows(settings, self.seq_len, runtime.world_size)
        self.schedule = Schedule.from_settings(settings)
        torch.manual_seed(settings.train_seed)
        self.model = Transformer(config).to(runtime.device)
        self.optimizer = build_optimizer(self.model, settings)
        self.scaler = torch.amp.GradScaler(runtime.device.type) if runtime.use_scaler else None
        self.generator = torch.Generator().manual_seed(settings.train_seed)  # the sampler's randomness
        self.state = TrainState()
        self._val: tuple[str, list[torch.Tensor], list[str]] | None = None
        self.train_model: nn.Module = self.model  # what the training forward runs: maybe DDP, compiled
        # Draws micro-batches ahead on a thread, in the sampler's order (train/loader.py).
        self.loader = BatchLoader(
            source,
            rank=runtime.rank,
            world_size=runtime.world_size,
            pin=runtime.device.type == "cuda",
            prefetch=settings.train_prefetch_batches,
        )
        self.writer: CheckpointWriter | None = None  # saves in the background when set (train/writer.py)
        self.saved_at = self.evaluated_at = time.monotonic()  # the clocks of saves and evaluations
        self.saved_step = -1  # the step `latest` was last saved at (by this process)
        # Yields threads and priority while chat requests are served on this machine (train/sharing.py).
        # With PYTORCH_CPU_THREADS on auto, its threads follow the cores the machine has free.
        auto = cpu_cores() // runtime.world_size if runtime.device.type == "cpu" else 0
        auto = auto if settings.pytorch_cpu_threads is None else 0
        self.sharing = LoadController(settings, runtime.threads if runtime.device.type == "cpu" else 1, auto)
        if auto:
            torch.set_num_threads(auto)  # all cores until others are seen working
            runtime.threads = auto
        if runtime.distributed:
            device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=device_ids)
        if settings.enable_torch_compile:
            self.train_model = torch.compile(self.train_model)  # checkpoints save self.model: no prefixes

    @classmethod
    def create(
        cls, settings: Settings, source: BatchSource, runtime: Runtime, checkpoint: Checkpoint | None
    ) -> Trainer:
        """A trainer for `source`, continuing `checkpoint` if given (its shape wins over auto settings)."""
        profile = resolve_profile(settings)
        wanted = model_config.from_settings(
            settings, profile.model_size, source.vocab_size, profile.train_seq_len
        )
        saved = None
        if checkpoint is not None:
            if checkpoint.meta.get("tokenizer_hash") != source.tokenizer_hash:
                raise CheckpointError(
                    f"{checkpoint.directory} was trained with tokenizer "
                    f"{checkpoint.meta.get('tokenizer_hash')} but the data uses {source.tokenizer_hash}: "
                    "a new tokenizer needs a new model "
                    f"(move {checkpoint.directory.parent} away to start one)"
                )
            saved = ModelConfig.from_dict(checkpoint.meta["model"])
        try:
            config = model_config.reconcile(wanted, saved, model_config.explicit_shape_settings(settings))
        except model_config.ModelConfigError as exc:
            where = checkpoint.directory if checkpoint is not None else "the settings"
            raise CheckpointError(f"{where}: {exc}") from None
        trainer = cls(settings, source, runtime, config)
        if checkpoint is not None:
            trainer.restore(checkpoint)
        return trainer

    # --- checkpoint state ------------------------------------------------------------------------------
    def restore(self, checkpoint: Checkpoint) -> None:
        """Load weights, optimizer, sampler and progress from `checkpoint` (also used for rollback)."""
        try:
            self.model.load_state_dict(checkpoint.weights, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{checkpoint.directory}: weights do not fit the model: {exc}") from None
        if self.scaler is not None and checkpoint.meta.get("scaler"):
            self.scaler.load_state_dict(checkpoint.meta["scaler"])  # fp16: resume with the same scale
        if checkpoint.optimizer is not None:
            self.optimizer.load_state_dict(checkpoint.optimizer)
            for group, decay in zip(
                self.optimizer.param_groups, (self.settings.train_weight_decay, 0.0), strict=True
            ):
                group["weight_decay"] = decay  # the settings win over what was saved
        else:
            self.optimizer.state.clear()
        self.optimizer.zero_grad(set_to_none=True)
        self.loader.reset()
        sampler = base64.b64decode(checkpoint.meta["sampler_state"])
        self.generator.set_state(torch.frombuffer(bytearray(sampler), dtype=torch.uint8))
        self.state = TrainState.from_dict(checkpoint.meta["state"])
        self.saved_step = self.state.step

    def checkpoint_payload(self) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
        """(weights, meta, optimizer state) for CheckpointStore.save."""
        meta = {
            "format": CHECKPOINT_FORMAT,
            "step": self.state.step,
            "model": self.config.to_dict(),
            "parameters": self.model.parameter_count(),
            "tokenizer_hash": self.source.tokenizer_hash,
            "dataset_version": self.source.version,
            "dataset_train_tokens": self.source.train_tokens,
            # What the batches were made of (chat tuning's conversation share); {} = documents only.
            "data_mix": dict(getattr(self.source, "mix", {})),
            "epoch": self.epoch(),
            "state": self.state.to_dict(),
            "sampler_state": base64.b64encode(self.generator.get_state().numpy().tobytes()).decode(),
            "schedule": {**asdict(self.schedule), "lr_scale": self.state.lr_scale, "lr": self.current_lr()},
            "training": {
                "batch_size": self.batch_size,
                "seq_len": self.seq_len,
                "grad_accum_steps": self.grad_accum,
                "world_size": self.runtime.world_size,
                "device": self.runtime.device.type,
                "precision": self.runtime.precision,
                "seed": self.settings.train_seed,
            },
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "saved_at": time.time(),
            "aifactory_version": __version__,
            "torch_version": torch.__version__,
        }
        return self.model.state_dict(), meta, self.optimizer.state_dict()

    # --- progress --------------------------------------------------------------------------------------
    def epoch(self) -> float:
        """Passes over the current training tokens (the dataset grows, so this is not a step count)."""
        return self.state.tokens_seen / max(1, self.source.train_tokens)

    def current_lr(self) -> float:
        return self.schedule.lr(self.state.step, self.state.lr_scale)

    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len * self.grad_accum * self.runtime.world_size

    def shrink_batch(self) -> bool:
        """Halve the micro-batch and double accumulation (same tokens per step); False at batch 1."""
        if self.batch_size <= 1:
            return False
        self.batch_size //= 2
        self.grad_accum *= 2
        return True

    def peak_flops(self) -> float:
        dtype = self.runtime.autocast_dtype or torch.float32
        return peak_flops(str(self.runtime.device), dtype, torch.get_num_threads())

    # --- one optimizer step -------------------------------------------------------------------------------
    def train_step(self, stop: Callable[[], bool] | None = None) -> StepStats | None:
        """One optimizer step over `grad_accum` micro-batches. Returns None, with nothing changed, when
        `stop()` turns true between micro-batches (the sampler is rewound, so a resume redraws them)."""
        runtime, B, T = self.runtime, self.batch_size, self.seq_len
        lr = self.current_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        started = time.perf_counter()
        rewind = self.generator.get_state()
        loss_sum = torch.zeros((), device=runtime.device)
        self.model.train()
        for micro in range(self.grad_accum):
            self.sharing.poll()
            # Under DDP a stop check is a collective (all ranks must stop alike): once per step, not
            # a host sync per micro-batch.
            if stop is not None and (micro == 0 or not runtime.distributed) and stop():
                self.optimizer.zero_grad(set_to_none=True)
                self.generator.set_state(rewind)
                self.loader.reset()  # what it drew ahead follows the rewound state no longer
                return None
            batch = self.loader.next(self.generator, B, T).to(runtime.device)
            last = micro == self.grad_accum - 1
            sync = contextlib.nullcontext() if last or not runtime.distributed else self.train_model.no_sync()
            with sync:
                with runtime.autocast():
                    loss = self.train_model(batch.inputs, batch.targets)
                scaled = loss / self.grad_accum
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            loss_sum += loss.detach().float()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        clip = self.settings.train_grad_clip or math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        mean_loss = runtime.all_reduce_sum(loss_sum / self.grad_accum) / runtime.world_size
        loss_value = float(mean_loss)
        # With fp16 an inf gradient is routine (the scaler skips the step and lowers its scale).
        if not math.isfinite(loss_value) or (self.scaler is None and not math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLoss(f"step {self.state.step + 1}: loss {loss_value}, gradient norm {grad_norm}")
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        tokens = self.tokens_per_step()
        self.state.step += 1
        self.state.tokens_seen += tokens
        self.state.train_loss = loss_value
        seconds = time.perf_counter() - started
        tokens_per_sec = tokens / seconds
        flops = tokens_per_sec * self.config.flops_per_token(T)
        mfu = flops / (self.peak_flops() * runtime.world_size)
        return StepStats(self.state.step, loss_value, lr, grad_norm, tokens, seconds, tokens_per_sec, mfu)

    # --- evaluation ----------------------------------------------------------------------------------------
    def val_key(self) -> str:
        """Which validation set a loss was measured on: the data's validation version and the windows
        laid over it (how many, how long), not how they are batched."""
        return f"{self.source.val_version}/{self.val_windows}x{self.seq_len}"

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Mean validation loss (nats/token) and bits per byte over the fixed validation windows, and
        the same per language in `state.val_languages` when the data has languages.

        Bits per byte = the loss summed over tokens that stand for text, in bits, over the UTF-8 bytes
        those tokens stand for: unlike the loss it does not depend on the tokenizer's vocabulary."""
        runtime = self.runtime
        key = self.val_key()
        if self._val is None or self._val[0] != key:
            windows = self.source.val_batches(self.val_windows, self.seq_len, 1)
            labels = self.source.val_row_languages(self.val_windows, self.seq_len, 1)
            self._val = (key, windows, labels)
        _, windows, labels = self._val
        languages = sorted(set(labels))
        row_language = torch.tensor([languages.index(name) for name in labels], dtype=torch.long)
        token_bytes = self.source.token_bytes.to(runtime.device)
        # Per language: nats over all tokens, tokens, nats over tokens that are text, their bytes
        sums = torch.zeros(max(1, len(languages)), 4, dtype=torch.float64, device=runtime.device)
        self.model.eval()
        share = self.val_windows // runtime.world_size  # each rank evaluates its share of the windows
        for number, window in enumerate(windows):
            first = number * self.val_windows + runtime.rank * share
            mine = window[runtime.rank * share : (runtime.rank + 1) * share]
            for offset in range(0, mine.size(0), self.batch_size):
                batch = mine[offset : offset + self.batch_size].to(runtime.device, non_blocking=True)
                targets = batch[:, 1:]
                with runtime.autocast():
                    losses = self.model(batch[:, :-1], targets, reduction="none").float()
                nbytes = token_bytes[targets]
                rows = torch.stack(
                    [
                        losses.sum(1),
                        losses.new_full((losses.size(0),), losses.size(1)),
                        (losses * (nbytes > 0)).sum(1),
                        nbytes.sum(1).to(losses),
                    ],
                    dim=1,
                ).to(sums)
                if languages:
                    at = row_language[first + offset : first + offset + batch.size(0)].to(runtime.device)
                    sums.index_add_(0, at, rows)
                else:
                    sums[0] += rows.sum(0)
        self.model.train()
        runtime.all_reduce_sum(sums)

        def loss_and_bpb(part: torch.Tensor) -> tuple[float, float]:
            bpb = float(part[2] / (math.log(2) * part[3])) if part[3] > 0 else math.nan
            return float(part[0] / part[1]), bpb

        val_loss, bpb = loss_and_bpb(sums.sum(0))
        self.state.val_loss, self.state.val_bpb = val_loss, bpb
        self.state.val_languages = {
            name: dict(zip(("loss", "bpb"), loss_and_bpb(sums[i]), strict=True))
            for i, name in enumerate(languages)
        }
        return val_loss, bpb
