"""Export and migration: the factory's models in transformers, llama.cpp, Ollama and LM Studio, and LoRA
fine-tuning of an existing open model on the factory's corpus.

template.py   the chat template in each format (Jinja, Ollama's Go template), stop strings, sampling
source.py     what to export: a checkpoint (a model version, once the registry exists) -> weights, model
              config, tokenizer directory and provenance; the checks that come before any work
sentencepiece_vocab.py  a SentencePiece model's pieces, scores and piece types (read from its protobuf)
hf.py         a Hugging Face directory (LlamaForCausalLM, safetensors, tokenizer files, chat template)
gguf_file.py  a GGUF file written directly with the `gguf` package: llama and qwen2, F32/F16/Q8_0
vocab.py      GGUF vocabularies: SentencePiece ("llama") and byte-level BPE ("gpt2") from HF files
targets.py    Ollama (GGUF + Modelfile, `ollama create`) and LM Studio (its models folder layout)
lora.py       LoRA on an existing base with peft: corpus text, machine-chosen settings, merge, GGUF
jobs.py       export jobs in the database and the runner that starts each in its own process (no torch)
worker.py     the job process: runs one job, reporting progress to its row
commands.py   `aifactory export ...` and `aifactory finetune lora`

Nothing heavy is imported here: the web process uses jobs.py and source.py's checks without torch.
"""


class ExportError(Exception):
    """An export cannot be done as asked; the message says what is wrong and what to do."""


class ExportNotFound(ExportError):
    """What was asked to export (a checkpoint, a version, a base model) does not exist."""
