"""Tasks: what a run trains on and is scored by.

A task gives the trainer seeded training batches (`train_batch(n, gen, step) -> Batch`), a held-out split it
never draws from (`held_out(n) -> Batch`: its first n, an integer >= 1, or all of it when it holds fewer, so
`len(batch)` is the count scored), its tokenizer (`tok`, saved with every checkpoint), the ids of its end and
padding tokens (`eos_id` and `pad_id`, on the task, not the tokenizer), `size` (training examples, or None for
data generated on the fly), how it is scored (`scored_by`: exact match of the greedy answer, or perplexity),
`load_eval(path, n)` for a file of the user's own test problems, and `format_answer(text)` for printing. A
`Batch` carries token ids, next-token targets (IGNORE where a position is not scored) and a real-token mask, so
nothing outside a task needs its padding id or prompt format. Size-graded tasks (parity, chain) add
`sized_batch(size, n)`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError
from . import tokenizers
from .addition import AdditionTask, read_addition_jsonl
from .base import IGNORE, Batch
from .jsonl import JsonlTask
from .sized import ChainTask, ParityTask
from .text import TextTask
from .tokenizers import CharTokenizer


def make_task(cfg: Config, tokenizer: Any = None, lazy: bool = False) -> Any:
    """The task of a looplm model's run (`data.task`), checked against the model's vocabulary and positions.
    `tokenizer`: the one saved with the run's checkpoint (a file's vocabulary is not rebuilt); `lazy` (with it):
    a file task reads its data only when it needs it."""
    d, m = cfg.data, cfg.model
    try:
        if d.task == "addition":
            task = AdditionTask(d.digits, max_len=m.max_seq_len, test_seed=d.test_seed, test_size=d.test_size)
            task.check_split_size(d.test_size)  # found now, not when the split is first built
        elif d.task == "jsonl":
            task = JsonlTask(d.path, d.prompt_field, d.answer_field, d.test_path, d.test_fraction, d.test_seed,
                             m.max_seq_len, tokenizer, lazy)
        elif d.task == "text":
            task = TextTask(d.path, d.window, d.test_fraction, d.tokenizer, d.bpe_vocab, m.max_seq_len, tokenizer,
                            lazy)
        else:
            task = {"parity": ParityTask, "chain": ChainTask}[d.task](d.min_size, d.max_size, d.test_size,
                                                                      d.test_seed, m.max_seq_len)
    except ValueError as e:
        raise ConfigError(f"data: {e}") from None
    if tokenizer is not None and task.tok.to_json() != tokenizer.to_json():
        # addition, parity and chain have a fixed alphabet: weights trained with other ids would read every
        # token as another character
        raise ConfigError(f"data.task={d.task}: the checkpoint this run starts from was trained with another "
                          f"vocabulary ({_shown(tokenizer)}) than the task's ({_shown(task.tok)}); its token ids "
                          "would mean other characters")
    vocab = task.tok.vocab_size
    if m.vocab_size and vocab > m.vocab_size:
        raise ConfigError(f"model.vocab_size={m.vocab_size} is smaller than the task's vocabulary ({vocab}); "
                          "set it to 0 to use the task's")
    if d.task == "addition" and task.seq_len > m.max_seq_len:
        raise ConfigError(f"model.max_seq_len={m.max_seq_len} is too short for {d.digits}-digit addition, which "
                          f"needs {task.seq_len}")
    if isinstance(task, (JsonlTask, TextTask)):
        task.read_at = read_at(task)  # taken now: the working folder may be deleted while the run goes on
    return task


def read_at(task: Any) -> tuple[list[str], str] | None:
    """(absolute paths of the task's files, the working folder): what a checkpoint's data.json records. None when
    the working folder is gone (deleted under a running run): os.getcwd() then raised at every save, so no
    checkpoint could be written, and the record is only a help for finding the data later."""
    try:
        return [os.path.abspath(p) for p in task.paths], os.getcwd()
    except OSError:
        return None


def window_notes(cfg: Config) -> list[str]:
    """A note for a text run whose windows are shorter than the model's positions: training reaches only the
    first data.window of them, yet generation goes on through the rest (a 4-token window generated 16 tokens,
    12 at positions never trained), unsaid."""
    d, m = cfg.data, cfg.model
    if cfg.kind != "native" or d.task != "text" or d.window >= m.max_seq_len or m.random_positions:
        return []
    return [f"note: data.window={d.window} trains positions 0-{d.window - 1} of model.max_seq_len={m.max_seq_len}: "
            f"text generated past {d.window} tokens is read at untrained positions; set model.max_seq_len="
            f"{d.window}, or model.random_positions=true to train them all"]


def with_task_vocab(cfg: Config, task: Any) -> Config:
    """`cfg` with model.vocab_size = 0 replaced by the task's vocabulary size."""
    if cfg.model.vocab_size:
        return cfg
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=task.tok.vocab_size))


def _shown(tok: Any) -> str:
    j = tok.to_json()
    return f"{j['kind']} {j['chars']!r}" if "chars" in j else j["kind"]


def saved_tokenizer(folder: str | Path) -> Any:
    """The tokenizer saved with a checkpoint (None for checkpoints from before they held one), its file checked
    against the manifest first: a tokenizer that is not the one training wrote would silently re-map every id."""
    from .. import checkpoint as ckpt

    d = ckpt.resolve(folder)
    if (d / tokenizers.FILE).is_file():
        ckpt.verify(d, (tokenizers.FILE,))
    return tokenizers.load(d)


def missing_init_from(init_from: str) -> str:
    """Why a fresh run cannot start: its train.init_from names nothing. A preset that fine-tunes another preset's
    run (addition-stars from runs/addition-fixed8) is named, with the command that trains that run (the loader's
    "checkpoint ... does not exist" named neither, and sent the user to download a looplm run from the hub)."""
    from ..config_files import PRESET_DIR, read_yaml_config
    from ..errors import not_there

    said = f"train.init_from={init_from} {not_there(init_from)}"  # (a ~ no shell expanded, a dead link: said so)
    if init_from.startswith("~"):
        return said
    setters = sorted(f.stem for f in PRESET_DIR.glob("*.yaml")
                     if (read_yaml_config(f).get("train") or {}).get("init_from") == init_from)
    if setters:
        said += f" (preset {' and '.join(setters)} fine-tunes that run)"
    first = Path(init_from).name
    if first in {f.stem for f in PRESET_DIR.glob("*.yaml")}:
        return (f"{said}; train it first: `looplm train --config {first} --out {init_from}`"
                f"{' (or `looplm demo`, which trains both stages)' if 'addition-stars' in setters else ''}")
    return f"{said}; give the run directory (train's --out) of the looplm run to fine-tune"


def starting_tokenizer(init_from: str, data: Any = None) -> Any:
    """The tokenizer of the run train.init_from names, if it saved one: fine-tuning keeps the token ids its
    weights were trained with (a vocabulary rebuilt from new data would map the same ids to other characters).
    A path that is no looplm checkpoint is left to the model loader, whose errors say what it is; a damaged
    tokenizer file of a real one is refused here, and so is a `data` section (the new run's) asking for a BPE
    of another size: it went unread, recorded in config.yaml as if it applied."""
    from .. import checkpoint as ckpt
    from ..hf.analysis import find_model_dir

    if init_from and init_from.startswith("~"):  # (find_model_dir expands it, and said "~x is no home folder")
        raise ckpt.CheckpointError(missing_init_from(init_from))
    if not init_from or find_model_dir(init_from) is not None:  # an HF model directory: the loader refuses it
        return None
    if not Path(init_from).exists() and not Path(init_from).is_symlink():  # (a dead link: the loader says where)
        raise ckpt.CheckpointError(missing_init_from(init_from))  # (the loader's type: callers catch it)
    try:
        ckpt.resolve(init_from)
    except (ckpt.CheckpointError, OSError, ValueError):
        return None
    tok = saved_tokenizer(init_from)
    began_on = ckpt.load_config(init_from).data
    if tok is None and began_on.task == "addition":  # a checkpoint from before tokenizers were saved (the shipped
        # models): its ids are the addition task's own; a vocabulary rebuilt from the new data remapped them all
        tok = AdditionTask(began_on.digits).tok
    want = getattr(data, "bpe_vocab", None) if getattr(data, "tokenizer", None) == "bpe" else None
    if want is not None and getattr(tok, "kind", None) == "bpe":
        began = getattr(ckpt.load_config(init_from).data, "bpe_vocab", want)
        if began != want:
            raise ConfigError(f"data.bpe_vocab={want}: this run starts from train.init_from={init_from} and keeps "
                              f"its BPE tokenizer (learned with data.bpe_vocab={began}), whose ids its weights "
                              f"read; set data.bpe_vocab={began}")
    return tok


DATA_FILE = "data.json"  # in a checkpoint of a task read from files: a digest of the data it was trained on


def save_fingerprint(task: Any, folder: Path) -> None:
    """Write the task's data digest, with the absolute paths its files were read from (`read_from`): a run records
    data.path as given, often relative to a working directory it does not record, so a sweep or a fine-tune's
    lineage check run from elsewhere found no file, or another file of the same name."""
    if getattr(task, "fingerprint", None) is not None:
        saved = dict(task.fingerprint)
        if isinstance(task, (JsonlTask, TextTask)) and (where := getattr(task, "read_at", None) or read_at(task)):
            saved["read_from"], saved["cwd"] = where  # (the cwd: what a relative train.init_from was read from)
        (Path(folder) / DATA_FILE).write_text(json.dumps(saved) + "\n")


def check_fingerprint(task: Any, folder: str | Path, why: str, order_free: bool = False) -> None:
    """Refuse a task whose data files no longer hold what the checkpoint in `folder` was trained on (edited,
    replaced, or a relative data.path read from another directory). Checkpoints without the record pass.
    `order_free`: the same rows in another order pass (a held-out split; a resume draws its batches by index)."""
    from .. import checkpoint as ckpt

    d = ckpt.resolve(folder)
    f = d / DATA_FILE
    if getattr(task, "fingerprint", None) is None or not f.is_file():
        return
    ckpt.verify(d, (DATA_FILE,))
    try:
        saved = json.loads(f.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ckpt.CheckpointError(f"{f} is unreadable ({e})") from None
    now, saved = task.fingerprint, saved if isinstance(saved, dict) else {}
    if same_rows(saved, now) and (order_free or _compared(saved) == _compared(now)):
        return
    # `made_from`: all a task's digest depends on (a chat template too)
    made_from = getattr(task, "made_from", None) or " and ".join(map(str, task.paths))
    holds = "hold" if len(getattr(task, "paths", ())) > 1 and not getattr(task, "made_from", None) else "holds"
    if same_rows(saved, now):
        raise ConfigError(f"data: {made_from} {holds} the rows {d} was trained on, in another order (a run draws "
                          f"its batches by row index, so it would not go on as it began); {why}")
    elsewhere = any(p and not Path(p).is_absolute() for p in getattr(task, "paths", ()))
    raise ConfigError(f"data: {made_from} no longer {holds} the data {d} was trained on"
                      f"{', or the run was trained in another directory' if elsewhere else ''} ("
                      f"{_what_changed(saved, now)}sha256 {str(saved.get('sha256'))[:12]}... then, "
                      f"{now['sha256'][:12]}... now); {why}")


def same_rows(saved: dict, now: dict) -> bool:
    """The same data, its rows in any order where both digests record the split as sets (`split_sha256`), else
    the digest itself (a run from before it was recorded)."""
    if "split_sha256" in saved and "split_sha256" in now:
        return saved["split_sha256"] == now["split_sha256"]
    return _compared(saved) == _compared(now)


def _compared(fingerprint: dict) -> dict:
    # a folder's file sizes: to name, not to compare; where the files were read from; the order-free digest
    return {k: v for k, v in fingerprint.items() if k not in ("files", "read_from", "cwd", "split_sha256")}


def _what_changed(saved: dict, now: dict) -> str:
    """What differs between two fingerprints, beyond the digest: a folder's files added, removed or resized (runs
    that recorded them), the characters or rows then and now. Ends in "; " when it says anything."""
    said = []
    then, files = saved.get("files"), now.get("files")
    if isinstance(then, dict) and isinstance(files, dict):
        for what, names in (("added", set(files) - set(then)), ("removed", set(then) - set(files)),
                            ("changed size", {f for f in set(files) & set(then) if files[f] != then[f]})):
            names = sorted(names)
            if names:
                said.append(f"files {what}: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}")
    elif isinstance(files, dict):  # (an older run recorded no file names)
        said.append(f"{len(files)} files now")
    counts = {"chars": "characters", "rows": "rows", "examples": "examples"}
    said += [f"{saved[k]:,} {word} then, {now[k]:,} now" for k, word in counts.items()  # (an edited data.json: ints)
             if isinstance(saved.get(k), int) and isinstance(now.get(k), int) and saved[k] != now[k]]
    return "".join(f"{s}; " for s in said)


DATA_KEYS = ("data.path", "data.test_path", "data.source")  # the paths a run's data is read from
MODEL_KEYS = ("model.name_or_path", "model.tokenizer")  # a fine-tune's base model (a hub id or a local folder)


def same_data(src: Path, key: str, old: Any, new: Any) -> bool:
    """A data file or folder named by another spelling (`./rows.jsonl`, an absolute path, `cl/`) is the same data,
    not a change. A relative path is recorded as given, relative to the directory the run started in, which is
    not recorded: from another one (a job run from elsewhere) it may name nothing or other files, so any path is
    taken, and the checkpoint's data digest (data.json, checked before training goes on) decides whether it holds
    the data trained on. A fine-tune's data.source alike; its model folder (model.name_or_path, model.tokenizer) is
    the same only where both spellings name it from here (no digest decides, and a hub id is compared as given)."""
    if key not in (*DATA_KEYS, *MODEL_KEYS) or not old or not new or not Path(new).exists():
        return False
    was = Path(old)
    if key in MODEL_KEYS:
        return was.exists() and os.path.samefile(was, new)
    if was.exists() and os.path.samefile(was, new):
        return True
    return not was.is_absolute() and (src / DATA_FILE).is_file()


def keep_spelling(src: Path, cfg: Config) -> None:
    """A resume that names the run's data (or base model) otherwise (`same_data`) has read it by the name given;
    the run goes on recording the name it was trained with. The new name was stored (config.yaml, the checkpoint),
    so a resume from a subfolder (`../data/rows.jsonl`) left a path that named nothing from the run's own folder,
    and its sweep and resume there were refused. Called once the data is read: `cfg` is changed in place, as the run's
    writers hold it."""
    from .. import checkpoint as ckpt

    saved = ckpt.load_config(src)
    for key in (*DATA_KEYS, *MODEL_KEYS):
        section, name = key.split(".")
        old, new = (getattr(getattr(c, section), name, "") for c in (saved, cfg))
        if old != new and same_data(src, key, old, new):
            setattr(getattr(cfg, section), name, old)


def eval_file(cfg: Config | None, data: str, folder: str | Path | None = None) -> str:
    """`data` (a sweep's or analyze's --data file, read), with a note when it is, lies in, or holds the training
    data (data.path) of the run (its checkpoint `folder`, where its data digest is) or of a run up its
    train.init_from chain (lineage.ancestors): its score is then of what the weights were trained on, not of
    held-out problems, and was taken for one (a data.test_path that overlaps training is refused for that reason).
    A run's data is found where its digest says it is (lineage.located): a relative path read
    from another directory may name another file of the same name, and a copy of the data is the data."""
    from .lineage import ancestors, located

    chain = ancestors(cfg, folder) if cfg is not None else []
    up = ["the run's train.init_from", "up the run's train.init_from chain"]
    runs = [("the run's training data", cfg, folder)] + [
        (f"the training data of {named} ({up[min(i, 1)]})", base, at) for i, (named, at, base) in enumerate(chain)]
    for whose, c, at in runs:
        d = getattr(c, "data", None)  # (None: eval_problems without a run's config, from Python)
        if getattr(d, "task", None) not in ("jsonl", "text") or not getattr(d, "path", ""):
            continue
        try:
            found = located(c, Path(at) if at is not None else None, (data,) if Path(data).is_file() else ())
            if found is None:
                continue
            here, there = Path(data).resolve(), Path(found[0]).resolve()
        except (OSError, ValueError):  # (a name past the limit: the read has refused it already)
            continue
        how = ("is" if here == there else "lies in" if there in here.parents else
               "holds" if here in there.parents else "")
        if how:
            print(f"note: --data {data} {how} {whose} (data.path={d.path}): this scores problems the model was "
                  "trained on, not held-out ones; leave out --data to score the held-out split")
            break
    return str(data)


def task_of_checkpoint(cfg: Config, folder: str | Path, held_out: bool = True) -> Any:
    """The task a checkpoint was trained on, with the tokenizer saved in it. `held_out`: the held-out split will
    be scored, so the data files must still be the ones training split (else it could score training rows)."""
    for key in ("path", "test_path") if held_out else ():
        p = getattr(cfg.data, key, "")
        if p and not Path(p).is_absolute() and not Path(p).exists():
            # the run does not record where it was trained: the file may have been moved, or the run trained elsewhere
            raise ConfigError(f"data.{key} {p} does not exist in {Path.cwd()}: it was moved or deleted, or the run "
                              "was trained in another directory (a relative data path is read from the working "
                              "directory); restore it, or score a file of your own with --data")
    task = make_task(cfg, saved_tokenizer(folder), lazy=not held_out)  # no split to score: no data to read
    if held_out:
        check_fingerprint(task, folder, "its held-out split would not be the one training held out; restore the "
                                        "files, or score a file of your own with --data", order_free=True)
    return task


__all__ = ["IGNORE", "AdditionTask", "Batch", "ChainTask", "CharTokenizer", "JsonlTask", "ParityTask", "TextTask",
           "check_fingerprint", "eval_file", "keep_spelling", "make_task", "read_addition_jsonl", "same_data",
           "save_fingerprint", "saved_tokenizer", "starting_tokenizer", "task_of_checkpoint", "with_task_vocab"]
