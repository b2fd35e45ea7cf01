"""Transformers tokenizers: a byte-level BPE chat tokenizer trained on the user's own text, and the HF form of a
looplm task's tokenizer (so an `export-hf` folder loads with `AutoTokenizer` and encodes exactly as training did).

The chat tokenizer is laid out like Ouro's: ids 0, 1, 2 are `<|endoftext|>` (bos = eos = pad), `<|im_start|>` and
`<|im_end|>`, and the chat template is ChatML. Digits are split one per token before BPE, as in Qwen's and Ouro's
tokenizers: with merges learned freely, `348` and `271` become unrelated pieces (`Ġ3 4 8`, `Ġ27 1`), and a small
model then has to learn arithmetic over an arbitrary segmentation."""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..records import first_bad_byte
from .chat import CHATML_TEMPLATE, PLAIN_TEMPLATE
from .flags import check_flag

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_chat_tokenizer(texts: Iterable[str], vocab_size: int, chat_template: str = CHATML_TEMPLATE,
                         split_digits: bool = True) -> Any:
    """A transformers fast tokenizer (character offsets, so assistant masks can be located) whose BPE merges are
    learned from `texts` (an iterable of strings); every byte is in the vocabulary, so no text is ever out of it.
    `chat_template`: a Jinja template, or `chatml` (as data.chat_template names it)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    split_digits = check_flag("split_digits", split_digits)  # ("false" is a true value: it split them)
    least = 256 + len(SPECIAL_TOKENS)  # every byte and the special tokens: a smaller size came back as this one
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, numbers.Integral) or vocab_size < least:
        raise ValueError(f"vocab_size must be an integer >= {least} (the 256 bytes and {len(SPECIAL_TOKENS)} special "
                         f"tokens), got {vocab_size!r}")
    if isinstance(texts, str | bytes) or not isinstance(texts, Iterable):  # a str was read as one text per character
        raise TypeError(f"texts must be an iterable of texts (a list of strings), got {type(texts).__name__}"
                        f"{'; pass [text] for one text' if isinstance(texts, str | bytes) else ''}")
    if chat_template == "chatml":  # (stored as the literal text `chatml`, every conversation rendered as it)
        chat_template = CHATML_TEMPLATE
    if not isinstance(chat_template, str) or ("{{" not in chat_template and "{%" not in chat_template):
        raise ValueError(f"chat_template must be chatml or a Jinja template (text with {{{{ ... }}}} or {{% ... %}}), "
                         f"got {str(chat_template)[:60]!r}")

    def each(texts: Iterable[str]) -> Iterable[str]:  # (None was "'NoneType' object is not iterable")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] must be a string, got {type(text).__name__} {repr(text)[:40]}")
            yield text

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                         if split_digits else byte_level)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(each(texts), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = chat_template
    return fast


def byte_symbols() -> list[str]:
    """The printable stand-in for each byte value that byte-level tokenizers (GPT-2's scheme, `tokenizers`'
    ByteLevel) use: printable Latin-1 bytes stand for themselves, the other 68 take code points from 256 up, in
    byte order. Index b is byte b's symbol."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    out, extra = [], 0
    for b in range(256):
        if b in keep:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


def as_hf_tokenizer(tok: Any, max_length: int | None = None) -> Any:
    """A transformers fast tokenizer with the same ids as a looplm task tokenizer (`looplm.tasks.tokenizers`):
    `<pad>` = 0, `<eos>` = 1, no BOS added, and a chat template that lays a user turn and an assistant turn out
    as the task does (prompt, answer, `<eos>`). Char and byte vocabularies become a one-symbol-per-token WordLevel
    model; a BPE one is already a `tokenizers` object. A character outside a char vocabulary is refused on
    encoding, as in looplm, rather than mapped to an unknown token."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from ..tasks.tokenizers import EOS, PAD

    one_each = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every code point its own token
    if tok.kind == "char":
        vocab = {"<pad>": PAD, "<eos>": EOS, **tok.stoi}
        hf = Tokenizer(models.WordLevel(vocab))
        hf.pre_tokenizer = one_each
        hf.decoder = decoders.Fuse()
    elif tok.kind == "byte":
        vocab = {"<pad>": PAD, "<eos>": EOS, **{c: b + 2 for b, c in enumerate(byte_symbols())}}
        hf = Tokenizer(models.WordLevel(vocab))
        # bytes -> their symbols (one pre-token for the whole text), then one token per symbol
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False), one_each])
        hf.decoder = decoders.ByteLevel()
    elif tok.kind == "bpe":
        hf = Tokenizer.from_str(tok.tok.to_str())
    else:
        raise ValueError(f"no Hugging Face form for a {tok.kind!r} tokenizer")
    hf.add_special_tokens(["<pad>", "<eos>"])
    kw = {"model_max_length": max_length} if max_length else {}
    fast = PreTrainedTokenizerFast(tokenizer_object=hf, eos_token="<eos>", pad_token="<pad>",
                                   clean_up_tokenization_spaces=False, **kw)
    fast.chat_template = PLAIN_TEMPLATE  # prompt, answer, <eos>: the task's own layout
    return fast


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt", "vocab.txt")


def not_utf8(folder: str | Path) -> str | None:
    """Where the first text file transformers reads with a model folder's tokenizer (tokenizer.json,
    tokenizer_config.json, chat_template.jinja, ...) stops being UTF-8, as `chat_template.jinja: byte 0xff at offset
    0, line 1`; None when they all are. transformers' own error was the codec's, naming neither folder nor file."""
    p = Path(folder)
    # only the files a tokenizer is read from: a Latin-1 LICENSE.txt or README beside a broken tokenizer_config.json
    # was named as the culprit
    text = [p / n for n in TOKENIZER_FILES]
    for f in [*text, *sorted((p / "additional_chat_templates").glob("*.jinja"))]:
        if not f.is_file():
            continue
        try:
            f.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            return f"{f.relative_to(p)}: {first_bad_byte(f)}"
        except OSError:
            continue
    return None
