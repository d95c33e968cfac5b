"""`aifactory export hf|gguf|ollama|lmstudio` and `aifactory finetune lora`, with a progress bar.

Each command resolves what to export first (export/source.py: a clear error, before any work, for an
unknown checkpoint, a tokenizer of another generation or an output that exists), then runs the target
(export/tasks.py) and says where the result is and how to use it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from aifactory.export import ExportError, tasks
from aifactory.settings import Settings

BAR_WIDTH = 24


class ProgressBar:
    """A one-line bar on a terminal; a line every 10 s (and at the end) otherwise."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self.printed = 0.0
        self.open = False

    def __call__(self, fraction: float, message: str) -> None:
        fraction = max(0.0, min(1.0, fraction))
        filled = int(BAR_WIDTH * fraction)
        line = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction:4.0%}  {message}"
        if self.tty:
            self.stream.write("\r\x1b[2K" + line[:200])
            self.stream.flush()
            self.open = True
        elif fraction >= 1.0 or time.monotonic() - self.printed >= 10:
            self.printed = time.monotonic()
            print(line, file=self.stream, flush=True)

    def finish(self) -> None:
        if self.open:
            self.stream.write("\n")
            self.stream.flush()
            self.open = False


def _source(settings: Settings, args: argparse.Namespace) -> Any:
    from aifactory.export.source import resolve

    source = resolve(settings, checkpoint=args.checkpoint, tokenizer=args.tokenizer)
    print(f"exporting {source.name}: {source.config.short()}, from {source.origin}", file=sys.stderr)
    return source


def _check(args: argparse.Namespace, source: Any, path: str, kind: str) -> None:
    if not args.check:
        return
    from aifactory.export.llamacpp import check_gguf

    figures = check_gguf(source, Path(path), kind)
    print(
        f"    checked in llama.cpp: same {figures['tokens']} tokens, logits within "
        f"{figures['relative_logit_difference']:.1e} (relative), best token agrees at "
        f"{figures['argmax_agreement']:.0%} of positions"
    )


def _run(what: str, work: Any) -> int:
    bar = ProgressBar()
    try:
        result = work(bar)
    except ExportError as exc:
        bar.finish()
        print(f"aifactory {what}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        bar.finish()
        print(f"aifactory {what}: interrupted; nothing was written", file=sys.stderr)
        return 130
    bar.finish()
    return result


def export_hf_command(settings: Settings, args: argparse.Namespace) -> int:
    def work(bar: ProgressBar) -> int:
        source = _source(settings, args)
        result = tasks.hf(source, Path(args.out), bar)
        bar.finish()
        print(f"wrote {result['directory']}")
        print(f"    transformers: AutoModelForCausalLM.from_pretrained({result['directory']!r})")
        return 0

    return _run("export hf", work)


def export_gguf_command(settings: Settings, args: argparse.Namespace) -> int:
    def work(bar: ProgressBar) -> int:
        kind = tasks.check_type(args.type or settings.export_gguf_type)
        source = _source(settings, args)
        result = tasks.gguf(source, Path(args.out), kind, bar)
        bar.finish()
        print(f"wrote {result['file']} ({kind}, {result['bytes'] / 1e6:.1f} MB)")
        _check(args, source, result["file"], kind)
        print(f"    llama.cpp: llama-cli -m {result['file']} -cnv")
        return 0

    return _run("export gguf", work)


def export_ollama_command(settings: Settings, args: argparse.Namespace) -> int:
    from aifactory.export.targets import check_ollama_name, ollama_file_stem

    def work(bar: ProgressBar) -> int:
        name = check_ollama_name(args.name)
        kind = tasks.check_type(args.type or settings.export_gguf_type)
        directory = (
            Path(args.dir) if args.dir else tasks.export_dir(settings) / "ollama" / ollama_file_stem(name)
        )
        source = _source(settings, args)
        result = tasks.ollama(
            settings,
            source,
            name,
            directory,
            kind,
            system=args.system or "",
            create=not args.no_create,
            progress=bar,
        )
        bar.finish()
        print(f"wrote {result['gguf']} and {result['modelfile']}")
        _check(args, source, result["gguf"], kind)
        if result["created"]:
            print(f"ollama create {name}: done; chat with: ollama run {name}")
        else:
            why = "not asked to run it" if args.no_create else f"no `{settings.ollama_bin}` on the PATH"
            print(f"to import it into Ollama ({why}), run:")
            print(f"    {result['command']}")
            print(f"then: ollama run {name}")
        return 0

    return _run("export ollama", work)


def export_lmstudio_command(settings: Settings, args: argparse.Namespace) -> int:
    def work(bar: ProgressBar) -> int:
        kind = tasks.check_type(args.type or settings.export_gguf_type)
        source = _source(settings, args)
        result = tasks.lmstudio(
            settings,
            source,
            kind,
            models_dir=args.models_dir,
            publisher=args.publisher,
            model=args.model,
            progress=bar,
        )
        bar.finish()
        print(f"wrote {result['file']} ({kind}, {result['bytes'] / 1e6:.1f} MB)")
        _check(args, source, result["file"], kind)
        print(f"    LM Studio lists it under My Models (models folder {result['models_dir']})")
        return 0

    return _run("export lmstudio", work)


def finetune_lora_command(settings: Settings, args: argparse.Namespace) -> int:
    from aifactory.export.lora import LoraOptions, finetune

    def work(bar: ProgressBar) -> int:
        options = LoraOptions.from_settings(
            settings,
            args.base,
            steps=args.steps,
            rank=args.rank,
            learning_rate=args.lr,
            gguf_type=args.type,
            text_file=args.text_file,
            seq_len=args.seq_len,
            batch_size=args.batch_size,
        )
        result = finetune(settings, options, Path(args.output), bar)
        bar.finish()
        print(f"plan: {result['plan']['reason']}")
        print(f"data: {result['data']}")
        print(
            f"held-out loss {result['held_out_loss_before']:.4f} -> {result['held_out_loss_after']:.4f} "
            f"after {options.steps} steps ({result['train_seconds']:.0f}s)"
        )
        print(f"wrote {result['directory']}: adapter/, merged/ (transformers), {Path(result['file']).name}")
        return 0

    return _run("finetune lora", work)


def add_parsers(sub: Any) -> None:
    """`export` and `finetune` on the `aifactory` parser."""
    export = sub.add_parser(
        "export",
        help="export a trained model to transformers, llama.cpp (GGUF), Ollama or LM Studio",
        description="Export a checkpoint (default: the best one, or the latest when there is no best) with "
        "the tokenizer generation it was trained on. Outputs are written under a temporary name and renamed "
        "when complete; an output that exists is an error. See docs/export.md.",
    )
    export_sub = export.add_subparsers(dest="export_command", metavar="TARGET", required=True)

    def common(parser: argparse.ArgumentParser, gguf: bool = True) -> None:
        parser.add_argument(
            "--checkpoint",
            metavar="NAME_OR_PATH",
            help="latest, best, backup (in DATA_DIR/checkpoints), production or vN (the registry) or a "
            "checkpoint directory; default best",
        )
        parser.add_argument(
            "--tokenizer",
            type=Path,
            metavar="DIR",
            help="the tokenizer generation directory (default: found by hash)",
        )
        if gguf:
            parser.add_argument(
                "--type", choices=("f32", "f16", "q8_0"), help="GGUF weight type (default EXPORT_GGUF_TYPE)"
            )
            parser.add_argument(
                "--check",
                action="store_true",
                help="load the GGUF in llama.cpp (needs llama-cpp-python) and compare its tokens and logits "
                "with the model's",
            )

    hf = export_sub.add_parser(
        "hf",
        help="a Hugging Face directory (LlamaForCausalLM, safetensors, tokenizer, chat template)",
        description="Write a directory that transformers loads with AutoModelForCausalLM and AutoTokenizer "
        "(no custom code), and that vLLM and llama.cpp's converter read too.",
    )
    common(hf, gguf=False)
    hf.add_argument("out", metavar="OUT", help="directory to create")
    hf.set_defaults(func=export_hf_command)

    gguf = export_sub.add_parser(
        "gguf",
        help="one GGUF file for llama.cpp and everything built on it",
        description="Write a GGUF file (architecture llama) directly: the SentencePiece vocabulary, BOS/EOS, "
        "<|end|> as end of turn, the chat template, and the rotary layout llama.cpp expects.",
    )
    common(gguf)
    gguf.add_argument("out", metavar="OUT.gguf", help="file to create")
    gguf.set_defaults(func=export_gguf_command)

    ollama = export_sub.add_parser(
        "ollama",
        help="a GGUF and its Modelfile; runs `ollama create` when Ollama is installed",
        description="Write NAME's GGUF and a Modelfile (FROM, TEMPLATE, PARAMETER stop, sampling) into a "
        "folder (default EXPORT_DIR/ollama/NAME), then run `ollama create NAME -f Modelfile` if an ollama "
        "binary is on the PATH, or print that command.",
    )
    common(ollama)
    ollama.add_argument("name", metavar="NAME", help="Ollama model name, e.g. aifactory or aifactory:v3")
    ollama.add_argument("--dir", type=Path, help="folder to create for the GGUF and the Modelfile")
    ollama.add_argument("--system", help="a SYSTEM prompt for the Modelfile")
    ollama.add_argument(
        "--no-create", action="store_true", help="write the files only; do not run ollama create"
    )
    ollama.set_defaults(func=export_ollama_command)

    lmstudio = export_sub.add_parser(
        "lmstudio",
        help="the GGUF in LM Studio's models folder (publisher/model/file.gguf)",
        description="Write the GGUF as MODELS_DIR/PUBLISHER/MODEL/MODEL-TYPE.gguf, where LM Studio finds it "
        "(MODELS_DIR: --models-dir or LMSTUDIO_MODELS_DIR).",
    )
    common(lmstudio)
    lmstudio.add_argument(
        "--models-dir", type=Path, help="LM Studio's models folder (default LMSTUDIO_MODELS_DIR)"
    )
    lmstudio.add_argument("--publisher", default="aifactory", help="publisher folder (default aifactory)")
    lmstudio.add_argument("--model", help="model folder (default aifactory-g<generation>-step<step>)")
    lmstudio.set_defaults(func=export_lmstudio_command)

    finetune = sub.add_parser(
        "finetune",
        help="fine-tune an existing open model on the corpus",
        description="Fine-tune an existing open model (Llama or Qwen2 family) on the factory's corpus.",
    )
    finetune_sub = finetune.add_subparsers(dest="finetune_command", metavar="METHOD", required=True)
    lora = finetune_sub.add_parser(
        "lora",
        help="train a LoRA adapter on a local Hugging Face model, merge it and write GGUF",
        description="Train a LoRA adapter (peft) on the allowed corpus with settings chosen from the machine,"
        " merge it into the base and write OUTPUT/ with adapter/, merged/ and merged-TYPE.gguf. The base is"
        " a local directory (the model hub is not reached).",
    )
    lora.add_argument("--base", type=Path, required=True, metavar="DIR", help="Hugging Face model directory")
    lora.add_argument("--output", type=Path, required=True, metavar="OUT", help="directory to create")
    lora.add_argument("--steps", type=int, help="optimizer steps (default LORA_STEPS)")
    lora.add_argument("--rank", type=int, help="LoRA rank (default LORA_RANK)")
    lora.add_argument("--lr", type=float, help="learning rate (default LORA_LEARNING_RATE)")
    lora.add_argument("--seq-len", type=int, help="tokens per sequence (default LORA_SEQ_LEN or chosen)")
    lora.add_argument(
        "--batch-size", type=int, help="sequences per micro-batch (default LORA_BATCH_SIZE or chosen)"
    )
    lora.add_argument("--type", choices=("f32", "f16", "q8_0"), help="GGUF type of the merged model")
    lora.add_argument("--text-file", type=Path, help="train on this UTF-8 file instead of the corpus")
    lora.set_defaults(func=finetune_lora_command)
