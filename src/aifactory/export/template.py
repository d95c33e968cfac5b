"""The chat template in every exported format, and the sampling defaults that ship with it.

    <s><|system|>SYSTEM<|end|><|user|>QUESTION<|end|><|assistant|>ANSWER<|end|><|user|>...<|assistant|>

The same template as serving's (`serve/template.py` on the serving branch holds these strings too; one
will import the other once both are merged). BOS is added once, by id, as in training; the markers are
the tokenizer's control tokens; no newline or space around them; a turn ends with `<|end|>`, and
generation stops at `<|end|>` or `</s>`.

- CHAT_TEMPLATE_JINJA goes into `tokenizer.chat_template` of a GGUF: llama.cpp, llama-cpp-python and
  LM Studio render it and then add BOS themselves (`tokenizer.ggml.add_bos_token`).
- HF_CHAT_TEMPLATE is what `chat_template.jinja` of a Hugging Face export holds: the same template
  with `{{ bos_token }}` in front. transformers' `apply_chat_template(..., tokenize=True)` encodes the
  rendered text with `add_special_tokens=False` (tokenization_utils_base.py), so without it the model
  would see no BOS at all; with it, BOS is still there exactly once. (Rendering to text and encoding
  that text with `add_special_tokens=True` would give two: pass `add_special_tokens=False` then, as
  transformers' own docs say for every template that writes BOS.)
- OLLAMA_TEMPLATE is the Go template of a Modelfile; Ollama adds BOS from the GGUF as llama.cpp does.
"""

from __future__ import annotations

SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
BOS, EOS = "<s>", "</s>"

CHAT_TEMPLATE_JINJA = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
HF_CHAT_TEMPLATE = "{{ bos_token }}" + CHAT_TEMPLATE_JINJA
OLLAMA_TEMPLATE = "{{- range .Messages }}<|{{ .Role }}|>{{ .Content }}<|end|>{{ end }}<|assistant|>"
STOP_STRINGS = (END, EOS)  # for tools that stop on text (Ollama PARAMETER stop)

# Default sampling for tools that read it from the export (generation_config.json, the Modelfile).
# The usual defaults of llama.cpp and Ollama, with a mild repetition penalty: small models repeat.
SAMPLING = {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "repeat_penalty": 1.1}
