"""`looplm analyze` for Hugging Face looped LMs: the same per-loop diagnostics as for looplm checkpoints
(looplm.dynamics.diagnose), on chat-formatted text instead of addition problems.

Any model the Auto classes load that implements the looped-model protocol (looplm.looped) works: the native
Ouro model, a looplm export, a `looplm finetune` run. The answer positions (for CE, entropy and exact
match) are the assistant tokens, located exactly as fine-tuning locates them (looplm.hf.chat).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import emptiness
from ..looped import check_looped
from ..outputs import data_flag_input
from ..tasks.base import Batch
from .chat import TemplateError, end_of_turn_token, has_messages, no_default_template, to_messages
from .data import LENGTH_HINT, Records, build_examples, folder_splits, load_records, to_batch
from .data_hints import FIELD_PAIRS, turns_hint
from .paths import expand_home


def config_problem(path: str | Path) -> str | None:
    """What keeps the folder `path` from being an HF model directory, said plainly (None: nothing, or no
    config.json at all). Standard library only."""
    f = Path(path) / "config.json"
    if not f.is_file():
        return None
    try:
        conf = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return f"{f} is not valid JSON ({getattr(e, 'msg', type(e).__name__)})"
    if not isinstance(conf, dict) or "model_type" not in conf:
        return f"{f} has no model_type: not a Hugging Face model's config"
    return None


def find_model_dir(path: str | Path) -> Path | None:
    """The HF model directory `path` names (itself, or the `checkpoint/` of a finetune run), or None when
    `path` is not one. Standard library only: the CLI asks before deciding whether to import transformers."""
    if not str(path).strip():  # "" is the working folder to pathlib: it was searched for a model there
        raise ValueError(f"the model path is {emptiness(str(path))}; give a run directory, a model "
                         "directory or a hub id")
    p = Path(expand_home(path, "the model path"))  # (~/models/x of a YAML config or an API call: no shell)
    for d in (p, p / "checkpoint"):
        cfg = d / "config.json"
        if cfg.is_file():
            try:
                if "model_type" in json.loads(cfg.read_text()):
                    return d
            except (json.JSONDecodeError, UnicodeDecodeError):
                return None
    return None


def _fields(record: dict[str, Any], pair: tuple[str, str] | None = None) -> dict[str, str]:
    """How analyze reads a record: its conversation, else the first field pair it has (`pair`, a fine-tune's own
    data.prompt_field/response_field, before FIELD_PAIRS)."""
    if has_messages(record):
        return {"fmt": "messages"}
    for p, r in ((pair,) if pair else ()) + FIELD_PAIRS:
        if p in record and r in record:
            return {"fmt": "prompt_response", "prompt_field": p, "response_field": r}
    if isinstance(record.get("messages"), list):  # an empty conversation, and no fields: nothing to learn
        return {"fmt": "messages"}
    if turns_hint(record) is not None:  # a conversation under other fields: no field pair to rename
        raise ValueError(turns_hint(record))
    raise ValueError(f"a data record needs a `messages` list or one of the field pairs "
                     f"{', '.join(f'{p}/{r}' for p, r in FIELD_PAIRS)} (or, for a fine-tune, its run's "
                     f"data.prompt_field/response_field); got keys {sorted(record)}: rename the prompt's and the "
                     "reply's fields to one of these pairs")


def run_data(path: str | Path) -> Any:
    """The data config (ChatDataConfig) a `looplm finetune` run trained its model directory `path` with; None for
    a model looplm did not fine-tune."""
    from .. import checkpoint as ckpt
    from ..config import ChatDataConfig

    if not (Path(path) / ckpt.RUN_CONFIG).is_file():
        return None
    data = getattr(ckpt.load_config(path), "data", None)
    return data if isinstance(data, ChatDataConfig) else None


def run_system_prompt(path: str | Path) -> str | None:
    """The data.system_prompt a `looplm finetune` run trained its model directory `path` with (None: none, or no
    fine-tune's folder). Its model saw that system turn in every example: it is scored with it too."""
    return getattr(run_data(path), "system_prompt", None) or None


def run_reading(path: str | Path, data: str) -> tuple[tuple[str, str] | None, str | None]:
    """(field pair, config name) of a fine-tune's run that analyze reads `data` by, as fine-tuning read its data:
    the run's data.prompt_field/response_field where they are not the defaults (query/response, prompt/completion
    records were refused as having no known pair), and its data.config_name where `data` is the run's data.source
    (a folder of several configs was refused). (None, None) for a model looplm did not fine-tune."""
    d = run_data(path)
    if d is None:
        return None, None
    pair = (d.prompt_field, d.response_field)
    same = Path(data).expanduser().resolve() == Path(d.source).expanduser().resolve()
    return (None if pair == FIELD_PAIRS[0] else pair), (d.config_name if same else None)


def held_out_split(data: str, config_name: str | None = None) -> tuple[str, list[str], str | None]:
    """(the split analyze reads, all the splits, the README.md config read) of `data`: a folder that
    datasets.load_dataset splits (a hub snapshot, write_split's) gives its test split (else validation, else its only
    one): read as train, analyze scored the fine-tune's own training problems; a test-only folder was refused.
    ("train", [], None): not split, read whole. A folder of several configs gives `config_name`'s, else its default
    one (`default: true`, as datasets reads it; none: refused)."""
    p = Path(data).expanduser()
    choose = "give --data the folder or files of one config"
    named = folder_splits(p, config_name, choose=choose) if p.is_dir() else None
    splits = sorted(named or ())
    held = [s for s in ("test", "validation", "train") if s in splits]
    return (held[0] if held else splits[0] if splits else "train"), splits, getattr(named, "config", None)


def text_batch(tokenizer: Any, data: str, n: int, max_length: int = 512, system_prompt: str | None = None,
               split: str = "train", pair: tuple[str, str] | None = None, config_name: str | None = None
               ) -> tuple[Batch, dict]:
    """(batch, stats) for the first `n` usable records of `data` (a local file or a `datasets` name), with
    `system_prompt` opening each conversation that has no system turn of its own (as fine-tuning does), records
    read by their conversation or a field pair (`pair` first), `config_name` choosing the config of a dataset.
    batch.targets[t] is the next token where that token is an assistant target; batch.mask the real tokens."""
    def encode(records: Records) -> tuple[list, Any]:
        # each record read by its own shape (a messages list, or a field pair), as a conversation
        convs = Records([], records.where)
        for r, w in zip(records, records.where, strict=True):
            try:
                # a conversation with nothing to learn goes on as it is: the refusal says why (weight 0 turns)
                said = (to_messages(r, **_fields(r, pair), system_prompt=system_prompt)
                        or (r["messages"] if has_messages(r) else []))
                convs.append({"messages": said, "tools": r.get("tools")})
            except ValueError as e:
                raise ValueError(f"{w}: {e}") from None
        return build_examples(convs, tokenizer, max_length, fmt="messages")

    chooser = "analyze (a split folder's test split, else validation, else its only one)"
    records = load_records(data, split, config_name, max_samples=0 if n <= 0 else n * 2, chooser=chooser)
    try:
        examples, stats = encode(records)
    except ValueError:
        if len(records) < n * 2:
            raise
        examples, stats = [], None  # none usable among the first 2n: the rest of the file may hold some
    if len(examples) < n and len(records) == n * 2:  # the rest of the file may hold more usable records
        examples, stats = encode(load_records(data, split, config_name, chooser=chooser))
    examples = examples[:n]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return to_batch(examples, pad), stats.to_json() | {"used": len(examples)}


def load_looped(path: str | Path, device: torch.device) -> Any:
    """The model of an HF model directory, in float32 (the Jacobian estimates want the precision)."""
    from .finetune import load_pretrained

    model = load_pretrained(str(path)).to(device)
    try:
        check_looped(model)
    except TypeError as e:
        raise ValueError(f"{path}: {e}") from None
    return model


def analyze_hf(path: str | Path, data: str | None, depths: list[int], n: int | None, device: torch.device,
               max_length: int | None = None, before: Any = None, default_n: int = 256, **diagnose_kw: Any
               ) -> dict:
    """looplm.dynamics.diagnose on an HF looped model; a JSON-ready dict like `looplm analyze` writes. `n`
    records, refused if the data holds fewer usable ones; None: `default_n`, or all there are if fewer. The
    inputs are read and checked (and `before()` runs) before the weights are loaded. Records longer than
    `max_length` tokens (default: the model's position table) are skipped, and the count is printed."""
    from ..checkpoint import loaded_at_step, run_label
    from ..dynamics import diagnose
    from .finetune import check_local, check_model_type, check_vocab, load_tokenizer

    if data is None:
        raise ValueError("analyzing an HF model needs --data: a JSONL/JSON/parquet file or a datasets name whose "
                         "records have `messages` or question/answer-style fields")
    if not data.strip():  # "" is the working folder to pathlib: every data file there was read
        raise ValueError(f"--data is {emptiness(data)}; give a JSONL/JSON/parquet file or folder, or a "
                         "datasets name")
    check_local(str(path))  # a fine-tune's checkpoint against its manifest before any of its files is parsed
    check_model_type(str(path))
    tok = load_tokenizer(str(path))
    if not getattr(tok, "chat_template", None):  # (transformers' "cannot use chat template functions" paragraph)
        raise ValueError(f"{path}: its tokenizer has no chat template, through which analyze reads the --data "
                         "records as conversations; add one (chat_template.jinja in the model directory)")
    if no_default_template(tok):  # (transformers' advice, a template name, is no option of analyze)
        raise ValueError(f"{path}: {no_default_template(tok)}")
    try:  # the model's own template on a two-turn conversation first: a broken one is the model's, not a record's
        end_of_turn_token(tok)
    except TemplateError as e:
        raise ValueError(f"{path}: {e}") from None
    conf = json.loads((Path(path) / "config.json").read_text())
    positions = next((conf[k] for k in ("max_position_embeddings", "max_seq_len") if isinstance(conf.get(k), int)),
                     None)
    if max_length is not None and positions is not None and max_length > positions:
        raise ValueError(f"--max-length {max_length} is longer than the model's position table ({positions})")
    max_length = max_length or positions or 4096
    system = run_system_prompt(path)  # a fine-tune's model is scored on the conversations it was trained on
    pair, config_name = run_reading(path, data)  # and its data read as fine-tuning read it
    split, splits, config = held_out_split(data, config_name)
    shown = f"{data} (its {split} split)" if splits else data
    try:
        batch, stats = text_batch(tok, data, n if n is not None else default_n, max_length, system, split, pair,
                                  config_name)
    except ValueError as e:  # no limit can be raised past the positions: the records are too long for this model
        if max_length != positions or LENGTH_HINT not in str(e):
            raise
        raise ValueError(str(e).replace(LENGTH_HINT, f"they are longer than the model's {positions} positions; "
                                                     "analyze shorter records")) from None
    if n is not None and stats["used"] < n:  # before the note, which says what is analyzed
        raise ValueError(f"--n {n}: {shown} holds only {stats['used']} usable records; ask for at most "
                         f"{stats['used']}")
    if splits:
        print(f"note: {data} is split as datasets.load_dataset splits it ({', '.join(splits)}); analyze read its "
              f"{split} split")
    if stats["overlong"] or stats["no_target"]:
        print(f"note: {stats['records'] - stats['kept']} of {stats['records']} records read were skipped "
              f"({stats['overlong']} longer than {max_length} tokens, {stats['no_target']} with an empty prompt or "
              f"no assistant reply); {stats['used']} analyzed")
    if pair:
        print(f"note: the run's data.prompt_field/response_field ({pair[0]}/{pair[1]}) read the --data records that "
              "have them, as in fine-tuning")
    if config_name:
        print(f"note: the run's data.config_name={config_name!r} chooses the config of {data}, as in fine-tuning")
    elif config:  # (datasets' choice, as a fine-tune without data.config_name read it; dynamics.json records it)
        print(f"note: {data}'s README.md names several configs; analyze read its default one, {config!r} (give --data "
              "another config's folder or files to read that one)")
    if system:
        print(f"note: the run's data.system_prompt ({system!r:.60}) opens each --data conversation without a "
              "system turn, as in fine-tuning")
    if before is not None:
        before({Path(data): data_flag_input(data)})
    model, step = loaded_at_step(Path(path), lambda: load_looped(path, device))
    check_vocab(tok, model, f"the tokenizer of {path}", "its tokenizer and weights are of two models")
    trained = _trained_loops(path, step)  # its run config read before the work, not after
    res = diagnose(model, batch, depths, vocab=getattr(model.config, "tokenizer_vocab_size", 0) or None, **diagnose_kw)
    cfg = model.config
    res.update({"checkpoint": str(path), "step": step, "data": str(data), "split": split if splits else None,
                "config_name": config or config_name,
                "data_stats": stats, "system_prompt": system,
                "train_loops": trained, "label": run_label(path),
                "model": {"model_type": cfg.model_type, "architecture": type(model).__name__,
                          "parameters": sum(p.numel() for p in model.parameters())}})
    return res


def _trained_loops(path: str | Path, step: int | None) -> list[int] | None:
    """The loop counts a looplm fine-tune trained at (its run config), for the figure's shading; None for a model
    looplm did not train (Ouro, an export: their training depths are not in the files)."""
    from .. import checkpoint as ckpt
    from ..loops import trained_loops

    if not (Path(path) / ckpt.RUN_CONFIG).is_file():
        return None
    return trained_loops(ckpt.load_config(path), step)
