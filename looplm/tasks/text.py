"""Language modeling on your own text: a UTF-8 file, or every file of a folder, cut into fixed-length windows.

Every position of a window is scored (next-token CE; perplexity = exp(CE)). The held-out split is the last
`data.test_fraction` of the token stream, so no training window overlaps it. Tokens are characters (those of the
whole file, saved with the checkpoint; another text with characters outside them is refused), bytes, or
byte-level BPE merges learned from the training part (`data.tokenizer=bpe`, with the `tokenizers` package).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from .. import memory
from ..arguments import check_count, check_optional_count
from ..config import TOKENIZERS
from ..errors import UserError
from ..records import (
    UNREAD_SUFFIXES,
    data_files,
    few,
    first_bad_byte,
    held_files,
    missing_data,
    unread_format,
)
from .base import IGNORE, Batch, ReadOnUse
from .tokenizers import EOS, PAD, BpeTokenizer, ByteTokenizer, CharTokenizer

TEXT_SUFFIXES = ("", ".txt", ".md", ".text", ".rst")
# records for a fine-tune, not running text: in a text folder they are refused, not skipped
RECORD_SUFFIXES = (".jsonl", ".json", ".parquet")


# Memory a corpus takes while it is read and tokenized, per byte of its files (peak RSS over the process before,
# measured with TextTask on 1, 5, 10 and 20 MB ASCII files, OMP_NUM_THREADS=1): 18.6 for the char tokenizer and
# 17.2 for byte (the text, its UTF-8 copy for the fingerprint, the split's copies, a list of ids at 8 bytes an id
# and their tensor at 8 more); 216-252 for training BPE merges (the tokenizers package's counts). A 200 MB corpus
# under a 4 GB limit ran out of memory, told to lower the batch size, width or depths.
TEXT_BYTES_PER_BYTE = 18
BPE_TRAIN_BYTES_PER_BYTE = 200
CHUNK_CHARS = 1 << 24  # read in pieces, so a NUL byte is found before the whole file is held
SNIFF_BYTES = 1 << 20


def _binary(f: Path) -> ValueError:
    # an old tar, a cpio archive, UTF-16 text: valid UTF-8, yet no text to learn
    return ValueError(f"{f}: holds NUL bytes, so it is binary data (an archive, UTF-16 text, ...), not UTF-8 text")


def corpus_files(p: Path) -> list[Path]:
    """The files read_text reads: a file itself, or a folder's text files."""
    return data_files(p, TEXT_SUFFIXES, UNREAD_SUFFIXES + RECORD_SUFFIXES, sniff_all=True) if p.is_dir() else [p]


def read_text(path: str | Path, bytes_per_byte: int = TEXT_BYTES_PER_BYTE) -> str:
    """The text of a file, or of a folder's files joined by newlines. `bytes_per_byte`: the memory the caller
    needs per byte of them, checked before any is read (memory.require)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(missing_data(p))
    if not (p.is_dir() or p.is_file()):  # /dev/zero or a FIFO would be read forever
        raise ValueError(f"data file {p} is not a regular file or a folder (a device, FIFO or socket)")
    if p.is_file() and unread_format(p, (), UNREAD_SUFFIXES + RECORD_SUFFIXES):  # as a folder's file would be
        raise ValueError(f"data file {p} holds data in a format the text task does not read as text (compressed, "
                         "an archive, or records); give plain UTF-8 text (.txt, .md, .text, .rst or no suffix)")
    files = corpus_files(p)
    if not files:  # "holds no files" of a folder of .log files, or of text kept in a hidden folder
        held = held_files(p)
        if not held:
            raise ValueError(f"{p} holds no files")
        raise ValueError(f"{p} holds no text files (.txt, .md, .text, .rst or no suffix; hidden files are not "
                         f"read); it holds {few(held)}")
    for f in files:  # binary data is said to be binary, not too big (a 3 GB file of NULs)
        with open(f, "rb") as fh:
            if b"\x00" in fh.read(SNIFF_BYTES):
                raise _binary(f)
    size = sum(f.stat().st_size for f in files)
    try:
        memory.require(size * bytes_per_byte, f"the text corpus {p} ({size / 1e6:,.1f} MB) and its token ids")
    except UserError as e:
        raise UserError(f"{e} (about {bytes_per_byte} bytes for each byte of text); use a smaller corpus") from None
    parts = []
    for f in files:
        try:
            # every byte as it is (no \r\n -> \n, no locale) but a byte-order mark, which is no part of the text
            with open(f, encoding="utf-8-sig", newline="") as fh:
                chunks = []
                while chunk := fh.read(CHUNK_CHARS):
                    if "\x00" in chunk:
                        raise _binary(f)
                    chunks.append(chunk)
        except UnicodeDecodeError:
            raise ValueError(f"{f}: not a UTF-8 text file ({first_bad_byte(f)})") from None
        parts.append("".join(chunks))
        del chunks
    text = "\n".join(parts)
    if not text.strip():  # a file of blank lines is not empty: say what it holds
        raise ValueError(f"{p}: no text (" + (f"only whitespace, {len(text):,} characters)" if text else "empty)"))
    return text


class TextTask(ReadOnUse):
    """The task interface (looplm.tasks) over a text corpus."""

    _read_on_use = ("train_ids", "test_ids", "size", "fingerprint")

    scored_by = "perplexity"
    eos_id, pad_id = EOS, PAD

    def __init__(self, path: str, window: int = 64, test_fraction: float = 0.05, tokenizer: str = "char",
                 vocab_size: int = 512, max_len: int | None = None, saved=None, lazy: bool = False):
        """`saved`: the tokenizer of the checkpoint a run continues or a command reads. `lazy` (with `saved`): the
        corpus is read only when its windows are needed, so scoring a file of one's own or generating works
        without the training files."""
        if tokenizer not in TOKENIZERS:  # any other name trained a BPE tokenizer without a word
            raise ValueError(f"unknown tokenizer {tokenizer!r:.80}; choose {', '.join(TOKENIZERS)}")
        window = check_count("window", window, 1)  # (0 was a ZeroDivisionError)
        if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r:.80}")
        self.paths = [path]
        self._spec = (path, test_fraction, tokenizer, vocab_size)
        if max_len is not None and window > max_len:
            raise ValueError(f"data.window={window} is longer than model.max_seq_len={max_len}")
        self.window, self.max_len = window, max_len
        if saved is not None:
            if saved.kind != tokenizer:  # the weights' ids are the saved tokenizer's, whatever the config says
                raise ValueError(f"data.tokenizer={tokenizer}, but the model this run continues was trained with "
                                 f"the {saved.kind} tokenizer; set data.tokenizer={saved.kind}")
            self.tok = saved
        if not (lazy and saved is not None):
            self._read()

    def _read(self) -> None:
        path, test_fraction, tokenizer, vocab_size = self._spec
        window = self.window
        train_bpe = tokenizer == "bpe" and "tok" not in self.__dict__
        text = read_text(path, BPE_TRAIN_BYTES_PER_BYTE if train_bpe else TEXT_BYTES_PER_BYTE)
        # what was read, so a resume or a held-out sweep can tell that the corpus is still the same text
        self.fingerprint = {"sha256": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
                            "chars": len(text)}
        if Path(path).is_dir():  # (not compared: named when the digest differs, so a changed folder says what changed)
            self.fingerprint["files"] = {os.path.relpath(f, path): f.stat().st_size for f in corpus_files(Path(path))}
        cut = int(len(text) * (1 - test_fraction))
        train_text, test_text = text[:cut], text[cut:]
        if "tok" in self.__dict__:
            pass
        elif tokenizer == "char":  # over the whole stream, so the held-out tail has no unknown character
            self.tok = CharTokenizer("".join(sorted(set(text))))
        elif tokenizer == "byte":
            self.tok = ByteTokenizer()
        else:
            self.tok = BpeTokenizer.train([train_text], vocab_size)
        # counted over the whole text, as a sweep of the same file counts (the training part alone undercounted)
        self._check_known(text, path, "to train on it, start a new run (no train.init_from) with data.tokenizer="
                                      "byte or bpe, which read any text")
        self.train_ids = torch.tensor(self._encode(train_text), dtype=torch.long)
        self.test_ids = torch.tensor(self._encode(test_text), dtype=torch.long)
        for name, ids in (("training part", self.train_ids), ("held-out tail", self.test_ids)):
            if len(ids) < window + 1:
                raise ValueError(f"{path}: the {name} has {len(ids)} tokens, fewer than one window of "
                                 f"{window} + 1 (data.window, data.test_fraction)")
        self.size = (len(self.train_ids) - 1) // window  # windows per pass over the training part

    def _check_known(self, text: str, path: str, advice: str) -> None:
        """Refuse text with characters a char tokenizer lacks: dropping them would score a different text than the
        file's, and pass for it. Only a saved tokenizer lacks any (a new one is built from the whole text), so
        `data.tokenizer=byte` is no advice here: a sweep cannot change it, and a fine-tune of a char run refuses it."""
        if isinstance(self.tok, CharTokenizer):
            unknown = sorted(set(text) - set(self.tok.stoi))
            if unknown:
                n = sum(text.count(c) for c in unknown)
                shown = ", ".join(repr(c) for c in unknown[:8]) + (", ..." if len(unknown) > 8 else "") + (
                    "; a folder's files are joined with a newline between them" if "\n" in unknown and
                    Path(path).is_dir() else "")
                chars = f"{len(unknown)} character{'s' if len(unknown) > 1 else ''}"
                raise ValueError(f"{path}: {n:,} occurrence{'s' if n > 1 else ''} of {chars} the model's vocabulary "
                                 f"lacks ({shown}); a model's char tokenizer knows only the characters of the text "
                                 f"it was trained on; {advice}")

    def _encode(self, text: str) -> list[int]:
        return [self.tok.stoi[c] for c in text] if isinstance(self.tok, CharTokenizer) else self.tok.encode(text)

    @property
    def vocab_size(self) -> int:
        return self.tok.vocab_size

    @property
    def seq_len(self) -> int:
        """Model input length: a window."""
        return self.window

    def _windows(self, ids: torch.Tensor, starts: torch.Tensor) -> Batch:
        idx = starts[:, None] + torch.arange(self.window + 1)[None, :]
        chunk = ids[idx]  # (B, window + 1)
        inp, tgt = chunk[:, :-1], chunk[:, 1:]
        return Batch(inp.contiguous(), tgt.contiguous(), torch.ones_like(inp, dtype=torch.bool))

    def train_batch(self, n: int, gen: torch.Generator, step: int = 0) -> Batch:
        n = check_count("n", n, 1)  # (a negative n was torch's "negative dimension")
        starts = torch.randint(0, len(self.train_ids) - self.window, (n,), generator=gen)
        return self._windows(self.train_ids, starts)

    def _all_windows(self, ids: torch.Tensor, n: int | None) -> Batch:
        """Up to n consecutive, non-overlapping windows from the start of `ids`; when n covers the stream, the
        tokens left after the last whole window are scored too, in one shorter window padded on the right (pads
        are neither attended to by earlier positions, under causal attention, nor scored)."""
        whole = (len(ids) - 1) // self.window
        k = whole if n is None else min(n, whole)
        batch = self._windows(ids, torch.arange(k) * self.window)
        rest = len(ids) - 1 - k * self.window  # next-token targets after the k windows
        if k < whole or rest <= 0 or (n is not None and n <= k):
            return batch
        inp = torch.full((1, self.window), PAD, dtype=torch.long)
        tgt = torch.full((1, self.window), IGNORE, dtype=torch.long)
        inp[0, :rest] = ids[k * self.window : k * self.window + rest]
        tgt[0, :rest] = ids[k * self.window + 1 : k * self.window + rest + 1]
        mask = torch.zeros((1, self.window), dtype=torch.bool)
        mask[0, :rest] = True
        return Batch(torch.cat([batch.input_ids, inp]), torch.cat([batch.targets, tgt]), torch.cat([batch.mask, mask]))

    def held_out(self, n: int) -> Batch:
        """Up to n windows of the held-out tail (all of its tokens when n covers it)."""
        n = check_count("n", n, 1)
        return self._all_windows(self.test_ids, n)

    def load_eval(self, path: str, n: int | None) -> Batch:
        """Windows of a text file, as `held_out`: every token of it scored when n is None or covers it."""
        n = check_optional_count("n", n, 1)  # (n=-1 was torch's "upper bound and lower bound inconsistent")
        text = read_text(path)
        self._check_known(text, path, "score text written in them (a model trained with data.tokenizer=byte or bpe "
                                      "reads any text)")
        ids = torch.tensor(self._encode(text), dtype=torch.long)
        if len(ids) < 2:
            raise ValueError(f"{path}: fewer than 2 tokens; nothing to score")
        return self._all_windows(ids, n)

    def format_answer(self, text: str) -> str:
        return text
