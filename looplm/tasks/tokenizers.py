"""Tokenizers for looplm's own tasks, each saved with a run's checkpoints (`tokenizer.json`) so a sweep or a
generation encodes text exactly as training did.

All of them reserve id 0 for padding and id 1 for the end token:
- `CharTokenizer`: one id per character of a fixed alphabet (addition's 12 symbols, or the characters of a
  training file);
- `ByteTokenizer`: one id per UTF-8 byte (any text, no vocabulary to build);
- `BpeTokenizer`: byte-level BPE merges learned from the training text (needs the `tokenizers` package, which
  the `hf` extra installs).
"""

from __future__ import annotations

import hashlib
import json
import operator
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

PAD, EOS = 0, 1
FILE = "tokenizer.json"
# The longest piece BPE sees: a pre-tokenized word (a run of letters) is cut into pieces of at most this many
# byte-level characters. BPE training is quadratic in a word's length: a one-line DNA sequence of 600 KB, one
# word, took minutes to train on. No word of ordinary text is this long, so such text is cut as before.
MAX_PIECE = 100


def _shown(c: str) -> str:
    """A character for a message: its code point beside it unless it is printable ASCII (é and e + U+0301 print
    alike)."""
    return repr(c) if " " <= c <= "~" else f"{c!r} (U+{ord(c):04X})"


def text(s: Any) -> str:
    """`s` if it is a str, else TypeError: encode of bytes was "'<=' not supported between 'str' and 'int'" (a
    CharTokenizer), of 5 "'int' object is not iterable", and a list of ids was looked up as characters."""
    if not isinstance(s, str):
        ids = "; decode turns ids into text" if isinstance(s, list | tuple) else ""
        raise TypeError(f"encode takes a str, got {type(s).__name__} {s!r:.40}{ids}")
    return s


def token_ids(ids: Any) -> list[int]:
    """`ids` (a list of ints, numpy ints, or a 1-D int tensor) as Python ints, or TypeError naming what is no id: a
    str decoded to torch's "'<=' not supported between 'int' and 'str'", a float id to "string indices must be
    integers"."""
    if isinstance(ids, str | bytes) or not isinstance(ids, Iterable):
        text = "; encode turns text into ids" if isinstance(ids, str) else ""
        raise TypeError(f"decode takes token ids (a list of ints or a 1-D int tensor), got {type(ids).__name__} "
                        f"{ids!r:.40}{text}")
    out = []
    for i in ids:
        try:  # int, numpy's ints, a 0-d int tensor (what iterating a 1-D one gives); not a float or a str
            out.append(operator.index(i))
        except TypeError:
            raise TypeError(f"id {i!r:.40} ({type(i).__name__}) is no token id: decode takes ints") from None
    return out


class CharTokenizer:
    """`<pad>`, `<eos>`, then one id per character of `chars`."""

    kind = "char"

    def __init__(self, chars: str = "0123456789+="):
        # a string of several characters (from a list) decoded to text that encode refused, and an empty vocabulary
        # names nothing to train on
        if isinstance(chars, bytes) or not isinstance(chars, Iterable):
            raise TypeError(f"CharTokenizer takes a str of characters, got {type(chars).__name__} {chars!r:.40}")
        entries = list(chars)
        long = [c for c in entries if not (isinstance(c, str) and len(c) == 1)]
        if long:
            raise ValueError(f"CharTokenizer takes one character per id, got the entry {long[0]!r:.40}")
        if not entries:
            raise ValueError("CharTokenizer needs at least one character; its vocabulary is empty")
        chars = "".join(entries)
        # a character given twice had two ids, and encode produced only the last one: the other was a dead id
        twice = sorted(c for c, n in Counter(chars).items() if n > 1)
        if twice:
            raise ValueError(f"CharTokenizer characters must be distinct; {chars!r} gives "
                             f"[{', '.join(map(_shown, twice))}] more than once")
        self.chars = chars
        self.stoi = {c: i + 2 for i, c in enumerate(chars)}
        self.vocab_size = len(chars) + 2

    def encode(self, s: str) -> list[int]:
        bad = sorted({c for c in text(s) if c not in self.stoi})
        if bad:
            raise ValueError(f"character(s) [{', '.join(map(_shown, bad))}] in {s!r} are outside the vocabulary "
                             f"{self.chars!r}{self._normalization_hint(s)}")
        return [self.stoi[c] for c in s]

    def _normalization_hint(self, s: str) -> str:
        """When `s` fits the vocabulary once Unicode-normalized (an é typed as one code point, trained as e and a
        combining accent): the two look the same when printed, so say so."""
        for form in ("NFC", "NFD"):
            if all(c in self.stoi for c in unicodedata.normalize(form, s)):
                return (f"; the text differs from the vocabulary only in Unicode normalization: in {form} form it "
                        f"fits (unicodedata.normalize({form!r}, text)); the vocabulary holds "
                        f"{' '.join(f'U+{ord(c):04X}' for c in self.chars if ord(c) > 126)}")
        return ""

    def decode(self, ids: list[int], stop_at_eos: bool = True) -> str:
        out = []
        for i in token_ids(ids):
            # an id past the vocabulary was a bare IndexError, a negative one dropped without a word (a model's head
            # may be wider than its tokenizer: the addition presets' 16 ids over 14 tokens)
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"id {int(i)} is outside the vocabulary of {self.vocab_size} tokens (ids 0.."
                                 f"{self.vocab_size - 1}); it names no character")
            if i == EOS and stop_at_eos:
                break
            if i >= 2:
                out.append(self.chars[i - 2])
        return "".join(out)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "chars": self.chars}


class ByteTokenizer:
    """`<pad>`, `<eos>`, then the 256 byte values of the UTF-8 encoding."""

    kind = "byte"
    vocab_size = 258

    def encode(self, s: str) -> list[int]:
        return [b + 2 for b in text(s).encode("utf-8")]

    def decode(self, ids: list[int], stop_at_eos: bool = True) -> str:
        out = bytearray()
        for i in token_ids(ids):
            if i == EOS and stop_at_eos:
                break
            if 2 <= i < 258:
                out.append(i - 2)
        return out.decode("utf-8", errors="replace")

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind}


class BpeTokenizer:
    """Byte-level BPE from the `tokenizers` package, with `<pad>` = 0 and `<eos>` = 1."""

    kind = "bpe"

    def __init__(self, tok: Any):
        # The text "<eos>" or "<pad>" in a corpus or a prompt is text: matched as the special tokens, a corpus that
        # writes such markers would train on end and padding tokens in mid-text (and decoding would drop them).
        tok.encode_special_tokens = True
        self.tok = tok
        self.vocab_size = tok.get_vocab_size()

    @classmethod
    def train(cls, texts: list[str], vocab_size: int) -> BpeTokenizer:
        try:
            from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
        except ImportError:
            raise ValueError("data.tokenizer=bpe needs the `tokenizers` package (pip install 'looplm[hf]')") from None
        tok = Tokenizer(models.BPE())
        # The split is saved in tokenizer.json, so encoding cuts as training did; an older run's tokenizer.json,
        # without it, keeps cutting as it was trained
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.ByteLevel(add_prefix_space=False),
            pre_tokenizers.Split(Regex(f".{{1,{MAX_PIECE}}}"), behavior="isolated")])
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<eos>"], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.encode_special_tokens = True  # as in __init__: the training text's "<eos>" is text too
        hearing_ctrl_c(lambda: tok.train_from_iterator(texts, trainer))
        return cls(tok)

    def encode(self, s: str) -> list[int]:
        if len(text(s)) < 1 << 16:  # a prompt or a record: one call is quicker than a thread
            return self.tok.encode(s).ids
        # a corpus: `encode_batch` releases the GIL (`encode` does not), so the wait can hear Ctrl-C. Same ids:
        # one text is one batch row, through the same pipeline
        return hearing_ctrl_c(lambda: self.tok.encode_batch([s])[0].ids)

    def decode(self, ids: list[int], stop_at_eos: bool = True) -> str:
        ids = token_ids(ids)
        if stop_at_eos and EOS in ids:
            ids = ids[: ids.index(EOS)]
        return self.tok.decode([i for i in ids if i >= 2])

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "tokenizer": json.loads(self.tok.to_str())}


def hearing_ctrl_c(work: Callable[[], T]) -> T:
    """`work()`, run in a helper thread while this one waits in 0.1 s slices, so Ctrl-C is heard at once.

    Why: a call into the `tokenizers` library is one call of Rust. Training merges on or encoding a corpus of tens
    of megabytes takes tens of seconds, and Python runs its SIGINT handler only between bytecodes, so a Ctrl-C
    waited for the whole call. `work` must release the GIL (training and `encode_batch` do). On Ctrl-C the helper
    is abandoned (a daemon thread: it does not hold the process open) and its result is never used."""
    if threading.current_thread() is not threading.main_thread():
        return work()  # signals reach only the main thread: nothing to hear here
    done: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            done.append((True, work()))
        except BaseException as e:  # handed to the caller, as if raised there
            done.append((False, e))

    helper = threading.Thread(target=run, name="looplm-tokenizer", daemon=True)
    helper.start()
    while helper.is_alive():
        helper.join(0.1)
    ok, value = done[0]
    if not ok:
        raise value
    return value


def token_unit(tok: Any) -> str:
    """What one token of `tok` is, recorded beside a perplexity per token: `char`, `byte`, or `bpe:<hash>` (the
    hash of its merges: two BPE vocabularies cut a text into different pieces). Perplexities per token are
    comparable only between equal units."""
    if tok.kind != "bpe":
        return tok.kind
    return "bpe:" + hashlib.sha256(json.dumps(tok.to_json(), sort_keys=True).encode()).hexdigest()[:12]


def from_json(d: dict[str, Any]) -> CharTokenizer | ByteTokenizer | BpeTokenizer:
    kind = d.get("kind")
    if kind == "char" and isinstance(d.get("chars"), str):
        return CharTokenizer(d["chars"])
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe" and isinstance(d.get("tokenizer"), dict):
        from tokenizers import Tokenizer

        return BpeTokenizer(Tokenizer.from_str(json.dumps(d["tokenizer"])))
    raise ValueError(f"not a looplm tokenizer (kind {kind!r})")


def save(tok: Any, folder: Path) -> None:
    (Path(folder) / FILE).write_text(json.dumps(tok.to_json()))


def load(folder: Path) -> Any | None:
    """The tokenizer saved in a checkpoint folder, or None when it has none (checkpoints from before they did)."""
    f = Path(folder) / FILE
    if not f.is_file():
        return None
    try:
        return from_json(json.loads(f.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, AttributeError) as e:
        raise ValueError(f"{f} is not a looplm tokenizer ({e})") from None
