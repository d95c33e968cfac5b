"""Generation speed: our inference engine against Hugging Face `generate()`, same weights, same machine.

Configuration (fixed): the `small` preset this machine's auto-tune picks (8 layers, 8 heads, width 512,
SwiGLU 1408), vocabulary 8000, tied embeddings, context 512, random weights (speed does not depend on
what the weights learned), CPU, the inference engine's threads (SERVE_THREADS: half the cores) on both
sides; `--size tiny` for the preset of small machines.

1. decode tokens/s at batch 1, greedy, a 32-token prompt, 128 new tokens (end of text never chosen):
   - ours: the InferenceService the inference engine runs (continuous-batching scheduler, KV cache,
     per-request sampling, incremental detokenization, stop handling), decode rate from its first to
     its last token;
   - transformers: `LlamaForCausalLM.generate(do_sample=False)` on the same weights (model/hf.py),
     decode time = a 128-token generate minus a 1-token generate (its prefill), best of the round;
   in fp32 and with int8 dynamic quantization (ENABLE_CPU_QUANTIZATION on our side,
   `quantize_dynamic` of every Linear on theirs). Ours and theirs alternate in rounds; the RESULT is the
   median of the per-round ratios, so both sides see the same machine load.
2. aggregate tokens/s of 8 concurrent streams against 1 stream (continuous batching), ours.
3. decode tokens/s while the trainer trains in another process (`aifactory train` on the same data
   directory, so it reads the inference load and yields) against idle (rounds before and after).

On a CPU, batch-1 decoding of a model this size is bound by memory bandwidth: both engines read every
weight once per token through the same GEMV kernels, and what differs is the work around them
(transformers' generate loop, cache objects and logits processors against our scheduler). So the
ratio is largest where that work matters most: int8 (faster matmuls), small models, fast cores.

    .venv/bin/python benchmarks/generate.py [--rounds 5] [--tokens 128]
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from aifactory.autotune import cpu_cores
from aifactory.dataset import tokenizer as tokenizers
from aifactory.model.config import preset
from aifactory.model.hf import hf_config, to_hf_state_dict
from aifactory.model.llama import Transformer
from aifactory.serve.batch import quantize_int8
from aifactory.serve.service import InferenceService, serving_threads
from aifactory.settings import Settings
from aifactory.train.checkpoint import CheckpointStore

PROMPT_TOKENS, CONTEXT, VOCAB = 32, 512, 8000
NO_END = {2: -100.0, 7: -100.0}  # </s> and <|end|>: every answer runs to max_tokens


def build(root: Path, size: str) -> tuple[Path, Any, Transformer]:
    """A tokenizer of VOCAB pieces and a random `small` model saved as the trainer would save it."""
    rng = random.Random(0)
    syllables = [a + b for a in "kstnhmyrwgzdbp" for b in "aiueo"] + list("あいうえおかきくけこさしすせそ")
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(20000)]
    texts = [" ".join(rng.choice(words) for _ in range(200)) for _ in range(1500)]
    data_dir = root / "data"
    tokenizer = tokenizers.train(
        data_dir,
        1,
        [("und", text) for text in texts],
        vocab_size=VOCAB,
        model_type="bpe",
        threads=cpu_cores(),
    )
    config = preset(size, tokenizer.vocab_size, max_seq_len=CONTEXT)
    torch.manual_seed(0)
    model = Transformer(config).eval()
    meta = {
        "step": 1,
        "model": config.to_dict(),
        "parameters": model.parameter_count(),
        "tokenizer_hash": tokenizer.hash,
        "saved_at": time.time(),
    }
    CheckpointStore(data_dir / "checkpoints").save(model.state_dict(), meta, None, ("latest",))
    return data_dir, tokenizer, model


class Ours:
    """The inference service in this process, as the inference engine runs it."""

    def __init__(self, data_dir: Path, *, quantize: bool) -> None:
        self.settings = Settings(
            _env_file=None,
            data_dir=data_dir,
            auto_tune=False,
            enable_cpu_quantization=quantize,
            serve_max_batch=8,
            max_generate_tokens=4096,
        )
        self.service = InferenceService(self.settings)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.service.run, args=(self._stop.is_set,), daemon=True)
        self._thread.start()

    def generate(self, prompts: list[list[int]], tokens: int) -> tuple[float, float]:
        """(aggregate decode tokens/s, wall seconds) for these prompts generated together."""
        events: queue.Queue[dict[str, Any]] = queue.Queue()
        started = time.perf_counter()
        for ids in prompts:
            self.service.submit(
                {
                    "prompts": [ids],
                    "max_tokens": tokens,
                    "sampling": {"temperature": 0, "logit_bias": NO_END},
                },
                lambda event: events.put({**event, "at": time.perf_counter()}),
            )
        first: list[float] = []
        done = 0
        last = started
        while done < len(prompts):
            event = events.get(timeout=600)
            if event["event"] == "error":
                raise RuntimeError(event["message"])
            if event["event"] == "end":
                first.append(event["at"] - event["timings"]["decode_ms"] / 1000)
                last = max(last, event["at"])
            if event.get("final"):
                done += 1
        decode_seconds = last - min(first)
        return len(prompts) * (tokens - 1) / decode_seconds, last - started

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)


class Theirs:
    def __init__(self, model: Transformer, *, quantize: bool) -> None:
        config = LlamaConfig(**hf_config(model.config, bos_token_id=1, eos_token_id=2))
        self.model = LlamaForCausalLM(config).eval()
        self.model.load_state_dict(to_hf_state_dict(model.state_dict(), model.config), strict=False)
        self.model.tie_weights()
        if quantize:
            quantize_int8(self.model)

    @torch.no_grad()
    def _run(self, ids: list[int], tokens: int) -> float:
        started = time.perf_counter()
        self.model.generate(
            torch.tensor([ids]),
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            pad_token_id=0,
        )
        return time.perf_counter() - started

    def decode_rate(self, ids: list[int], tokens: int) -> float:
        prefill = min(self._run(ids, 1) for _ in range(2))
        return (tokens - 1) / (self._run(ids, tokens) - prefill)


def prompt(tokenizer: Any, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [tokenizer.bos_id] + [rng.randrange(10, tokenizer.vocab_size) for _ in range(PROMPT_TOKENS - 1)]


def compare(
    data_dir: Path, tokenizer: Any, model: Transformer, *, quantize: bool, rounds: int, tokens: int
) -> float:
    label = "int8" if quantize else "fp32"
    ours, theirs = Ours(data_dir, quantize=quantize), Theirs(model, quantize=quantize)
    ours.generate([prompt(tokenizer, 0)], 8)  # load the model, warm up
    theirs.decode_rate(prompt(tokenizer, 0), 8)
    ratios, ours_rates, theirs_rates = [], [], []
    for r in range(rounds):
        ids = prompt(tokenizer, r)
        mine, _ = ours.generate([ids], tokens)
        hf = theirs.decode_rate(ids, tokens)
        ours_rates.append(mine)
        theirs_rates.append(hf)
        ratios.append(mine / hf)
        print(
            f"  {label} round {r + 1}: ours {mine:7.1f} tok/s   transformers {hf:7.1f} tok/s   "
            f"x{mine / hf:.2f}"
        )
    ours.close()
    print(
        f"{label} batch 1 decode: ours {statistics.median(ours_rates):.1f} tok/s, transformers "
        f"{statistics.median(theirs_rates):.1f} tok/s (medians)"
    )
    return statistics.median(ratios)


def concurrency(data_dir: Path, tokenizer: Any, rounds: int, tokens: int) -> float:
    ours = Ours(data_dir, quantize=False)
    ours.generate([prompt(tokenizer, 0)], 8)
    ratios = []
    for r in range(rounds):
        _, single_wall = ours.generate([prompt(tokenizer, r)], tokens)
        _, eight_wall = ours.generate([prompt(tokenizer, 100 * r + i) for i in range(8)], tokens)
        single, eight = tokens / single_wall, 8 * tokens / eight_wall
        ratios.append(eight / single)
        print(
            f"  round {r + 1}: 1 stream {single:7.1f} tok/s   8 streams {eight:7.1f} tok/s in all   "
            f"x{eight / single:.2f}"
        )
    ours.close()
    return statistics.median(ratios)


def while_training(data_dir: Path, tokenizer: Any, root: Path, rounds: int, tokens: int) -> float:
    """Decode rate with `aifactory train` running on the same data directory, against idle."""
    text = root / "corpus.txt"
    text.write_text(
        " ".join(
            random.Random(1).choice(["the", "model", "reads", "text", "京都", "東京"]) for _ in range(200_000)
        )
    )
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "AUTO_TUNE": "0",
        "MODEL_SIZE": "small",
        "TRAIN_SEQ_LEN": "256",
        "TRAIN_BATCH_SIZE": "4",
        "VAL_EVAL_EVERY": "100000",
        "TRAIN_STEPS_PER_CYCLE": "100000",
    }
    ours = Ours(data_dir, quantize=False)
    ours.generate([prompt(tokenizer, 0)], 8)
    idle = [ours.generate([prompt(tokenizer, r)], tokens)[0] for r in range(rounds)]
    trainer = subprocess.Popen(
        [sys.executable, "-m", "aifactory", "train", "--steps", "1000000", "--text-file", str(text),
         "--checkpoint-dir", str(root / "trainer-checkpoints")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(15)  # imports, the matmul peak measurement, the first steps
        if trainer.poll() is not None:
            raise RuntimeError(f"the trainer exited: {trainer.stderr.read() if trainer.stderr else ''}")
        busy = [ours.generate([prompt(tokenizer, r)], tokens)[0] for r in range(rounds)]
    finally:
        trainer.send_signal(signal.SIGKILL)
        trainer.wait(30)
    # Idle again after the trainer: other load on the machine changes over minutes, so idle is the
    # median of the rounds before and after the training rounds.
    idle += [ours.generate([prompt(tokenizer, r)], tokens)[0] for r in range(rounds)]
    ours.close()
    print(
        f"  decode idle {statistics.median(idle):.1f} tok/s, "
        f"while training {statistics.median(busy):.1f} tok/s"
    )
    return statistics.median(busy) / statistics.median(idle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--size", default="small", choices=["tiny", "small", "base"])
    args = parser.parse_args()
    torch.set_num_threads(serving_threads(Settings(_env_file=None)))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data_dir, tokenizer, model = build(root, args.size)
        print(
            f"model: {args.size} preset, {model.parameter_count():,} parameters, "
            f"vocab {tokenizer.vocab_size}, {torch.get_num_threads()} threads"
        )
        fp32 = compare(data_dir, tokenizer, model, quantize=False, rounds=args.rounds, tokens=args.tokens)
        int8 = compare(data_dir, tokenizer, model, quantize=True, rounds=args.rounds, tokens=args.tokens)
        concurrent = concurrency(data_dir, tokenizer, max(2, args.rounds // 2), args.tokens)
        training = while_training(data_dir, tokenizer, root, max(2, args.rounds // 2), args.tokens)
    print(f"RESULT decode_vs_transformers_ratio {fp32:.2f}")
    print(f"RESULT decode_int8_vs_transformers_ratio {int8:.2f}")
    print(f"RESULT concurrent8_vs_single_ratio {concurrent:.2f}")
    print(f"RESULT decode_while_training_ratio {training:.2f}")


if __name__ == "__main__":
    main()
