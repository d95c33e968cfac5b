"""The chat template in every exported format, and the sampling defaults that ship with it.

    <s><|system|>SYSTEM<|end|><|user|>QUESTION<|end|><|assistant|>ANSWER<|end|><|user|>...<|assistant|>

Serving's template (`serve/template.py`, where its strings are defined). BOS is added once, by id, as
in training; the markers are the tokenizer's control tokens; no newline or space around them; a turn
ends with `<|end|>`, and generation stops at `<|end|>` or `</s>`.

- CHAT_TEMPLATE_JINJA is serving's string, as it is.
- EXPORT_CHAT_TEMPLATE is what the exports carry (`chat_template.jinja` of a Hugging Face directory,
  `tokenizer.chat_template` of a GGUF): the same template with `{{ bos_token }}` in front, because that
  is the one form that gives BOS exactly once in every tool that reads it:
    transformers   `apply_chat_template(tokenize=True)` encodes the rendered text with
                   `add_special_tokens=False`: the BOS has to come from the template.
    llama-cpp-python  its Jinja2ChatFormatter reports `added_special=True` and never adds BOS itself.
    llama.cpp      (llama-server, llama-cli, LM Studio's engine) adds BOS from `add_bos_token` and strips
                   a BOS the template wrote at the start (common/chat.cpp), so it is still one.
  Without it, transformers and llama-cpp-python would prompt the model without BOS, which it never
  saw in training. The tests render the exported template in each and compare the ids with serving's.
- OLLAMA_TEMPLATE is the Go template of a Modelfile: Ollama tokenizes the rendered prompt adding BOS from
  the GGUF's `add_bos_token`, so it has none.
"""

from __future__ import annotations

from aifactory.serve.template import (  # noqa: F401  (the strings every export target writes)
    ASSISTANT,
    CHAT_TEMPLATE_JINJA,
    END,
    OLLAMA_TEMPLATE,
    STOP_STRINGS,
    SYSTEM,
    USER,
)

BOS, EOS = "<s>", "</s>"
EXPORT_CHAT_TEMPLATE = "{{ bos_token }}" + CHAT_TEMPLATE_JINJA


def export_chat_template(add_bos: bool) -> str:
    """The template an export carries: with BOS in front when the model was trained with BOS
    (tokenizer generation 2 on; generation 1 documents had none)."""
    return EXPORT_CHAT_TEMPLATE if add_bos else CHAT_TEMPLATE_JINJA


# Default sampling for tools that read it from the export (generation_config.json, the Modelfile).
# The usual defaults of llama.cpp and Ollama, with a mild repetition penalty: small models repeat.
SAMPLING = {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "repeat_penalty": 1.1}
