"""A conversation as training tokens: the serving template exactly, and which tokens the loss counts.

    <s><|system|>SYSTEM<|end|><|user|>QUESTION<|end|><|assistant|>ANSWER<|end|>...

is what serve/template.py's `render_chat` gives a chat (without the generation prompt), and the
tokens come from the same `turn_ids`, so training and serving can never drift apart. The loss mask is
True on exactly the tokens the model is meant to write when it serves: the content of each assistant
turn and the `<|end|>` that closes it. The BOS, the role markers (serving writes `<|assistant|>` into
the prompt itself) and the system and user turns are context only: a model trained on them learns to
write the user's side of the conversation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from aifactory.serve.template import TokenizerLike, turn_ids


def encode_conversation(
    tokenizer: TokenizerLike, messages: Sequence[dict[str, str]]
) -> tuple[np.ndarray, np.ndarray]:
    """(token ids int32, loss mask bool) of one conversation, BOS first."""
    ids = [tokenizer.bos_id]
    mask = [False]
    for message in messages:
        turn = turn_ids(tokenizer, message["role"], message["content"])
        ids += turn
        learn = message["role"] == "assistant"
        mask += [False] + [learn] * (len(turn) - 1)  # the marker never; content and <|end|> if assistant
    return np.asarray(ids, dtype=np.int32), np.asarray(mask, dtype=bool)


class EncodedConversations:
    """Conversations encoded into one token stream with its loss mask, and where each one starts."""

    def __init__(self, tokenizer: TokenizerLike, conversations: Sequence[Sequence[dict[str, str]]]) -> None:
        parts = [encode_conversation(tokenizer, messages) for messages in conversations]
        self.count = len(parts)
        self.tokens = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int32)
        self.mask = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, bool)
        lengths = np.asarray([p[0].size for p in parts], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if parts else lengths

    def window(self, conversation: int, span: int) -> tuple[np.ndarray, np.ndarray]:
        """`span` tokens from the start of conversation `conversation`, running on into the following
        ones (wrapping at the end) as documents do, with their mask."""
        start = int(self.starts[conversation])
        index = (start + np.arange(span)) % self.tokens.size
        return self.tokens[index], self.mask[index]
