"""A byte-level BPE chat tokenizer trained on the user's own text, laid out like Ouro's: ids 0, 1, 2 are
`<|endoftext|>` (bos = eos = pad), `<|im_start|>` and `<|im_end|>`, and the chat template is ChatML.

Digits are split one per token before BPE, as in Qwen's and Ouro's tokenizers: with merges learned freely,
`348` and `271` become unrelated pieces (`Ġ3 4 8`, `Ġ27 1`), and a small model then has to learn arithmetic
over an arbitrary segmentation."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .chat import CHATML_TEMPLATE

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_chat_tokenizer(texts: Iterable[str], vocab_size: int, chat_template: str = CHATML_TEMPLATE,
                         split_digits: bool = True) -> Any:
    """A transformers fast tokenizer (character offsets, so assistant masks can be located) whose BPE merges are
    learned from `texts`; every byte is in the vocabulary, so no text is ever out of it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                         if split_digits else byte_level)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = chat_template
    return fast
