"""Fine-tuning data: records from a local JSONL / JSON / parquet file (or a folder of them) or an HF `datasets`
name, turned into tokenized chat examples with assistant-only labels, and batched with right padding."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import numbers
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from ..config import ChatDataConfig, ConfigError
from ..errors import emptiness, not_there, shown_path
from ..records import data_files, read_rows
from ..tasks.base import IGNORE, Batch
from .chat import Encoded, TemplateError, encode_chat, has_messages, to_messages
from .data_hints import field_hint, turns_hint
from .data_shapes import card_chooses, json_shape, model_folder, one_format, unread_info
from .paths import expand_home, shown_home

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


class Records(list):
    """Data records, with `where[i]`: record i's place in its source (file:line for JSONL), for error messages."""

    def __init__(self, rows: list[Any] = (), where: list[str] = ()):
        super().__init__(rows)
        self.where = list(where)


def _read_local(p: Path) -> Records:
    try:
        if p.suffix.lower() == ".jsonl":
            got = read_rows(p)
            out = Records([r for _, r in got], [w for w, _ in got])
        elif p.suffix.lower() == ".json":
            text = p.read_text(encoding="utf-8-sig")  # a BOM is not part of the data (as for .jsonl)
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                if e.msg != "Extra data":
                    raise
                # JSON Lines under a .json name (what `datasets`' to_json writes by default): read as such
                got = read_rows(p)
                data, where = [r for _, r in got], [w for w, _ in got]
                return _checked(Records(data, where))
            if json_shape(data):  # columns or splits: read as one record, said as a field's wrong type
                raise ValueError(f"{p}: {json_shape(data)}")
            if isinstance(data, dict) and set(data) <= {"data", "version"} and isinstance(data.get("data"), list):
                data = data["data"]
            elif isinstance(data, dict) and "\n" not in text.strip():  # one JSON Lines record (to_json of one row)
                got = read_rows(p)
                return _checked(Records([r for _, r in got], [w for w, _ in got]))
            if not isinstance(data, list):
                raise ValueError(f"{p}: expected a list of records")
            out = Records(data, [f"{p}[{i}]" for i in range(len(data))])
        elif p.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq  # comes with `datasets`

            table = pq.read_table(p)
            _no_struct_objects(table.schema, str(p), "write the data as JSONL")
            data = table.to_pylist()
            out = Records(data, [f"{p} row {i}" for i in range(len(data))])
        else:
            raise ValueError(f"{p}: unsupported file type (use {', '.join(LOCAL_SUFFIXES)})")
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{p}: not a readable {p.suffix[1:]} file ({type(e).__name__})") from None
    return _checked(out)


# The keys of tool-call arguments and tool parameters are free-form: each call and tool has its own
OBJECT_KEYS, TOOL_KEYS = ("arguments", "parameters"), ("tools", "tool_calls", "function_call")


def _no_struct_objects(schema: Any, source: str, fix: str) -> None:
    """Refuse tool-call arguments or tool parameters stored as Arrow structs (parquet, `datasets`). A struct has the
    keys of every row: each call got the other calls' argument keys as null and its ints beside others' floats became
    floats ({"city": "Paris"} came back {"city": "Paris", "query": null}; 3 as 3.0), so a model learned to pass every
    tool's parameters. Which keys a call had, and which nulls it wrote itself, cannot be told from the file.
    Refuse Arrow maps anywhere: one reads back as a list of (key, value) pairs, not an object, so arguments were
    trained as [["city", "Paris"]] (PySpark stores a Python dict as a map by default)."""
    import pyarrow as pa

    def walk(t: Any, path: str, name: str, tooly: bool) -> tuple[str, str] | None:
        if pa.types.is_map(t):
            return path, "map"
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            return walk(t.value_type, f"{path}[]", name, tooly)
        if not pa.types.is_struct(t):
            return None
        if tooly and name in OBJECT_KEYS:
            return path, "struct"
        return next((found for f in t if (found := walk(f.type, f"{path}.{f.name}", f.name,
                                                        tooly or f.name in TOOL_KEYS))), None)

    found = next((x for f in schema if (x := walk(f.type, f.name, f.name, f.name in TOOL_KEYS))), None)
    if found and found[1] == "map":
        raise ValueError(f"{source}: column {found[0]} holds Arrow maps, which read back as lists of [key, value] "
                         "pairs, not objects (with values of one type only), so they "
                         f"cannot be read back as written; {fix}, which keeps each object as it is")
    if found:
        raise ValueError(f"{source}: {found[0]} holds objects stored as Arrow structs, which give every one the keys "
                         "of all the others (null where it had none) and may turn its integers into floats, so they "
                         f"cannot be read back as written; {fix}, which keeps each object as it is")


def _checked(out: Records) -> Records:
    for r, w in zip(out, out.where, strict=True):
        if not isinstance(r, dict):
            raise ValueError(f"{w}: a record must be a JSON object, got {type(r).__name__}")
    return out


@contextlib.contextmanager
def quiet_hub() -> Iterator[None]:
    """huggingface_hub without its retry chatter: offline, it prints a warning per retry (11 lines over half a
    minute) before its own error, which the CLI prints as one line."""
    quiet = logging.getLogger("huggingface_hub.utils._http")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    _offline_when_unreachable()
    try:
        yield
    finally:
        quiet.setLevel(level)


def _offline_when_unreachable() -> None:
    """Offline mode for this process when the hub's host has no address: huggingface_hub retries a failed name
    lookup five times with back-off (~25 s) before it falls back to its cache; offline mode reads the cache (or
    fails) at once, with the same error."""
    import socket
    from urllib.parse import urlparse

    import huggingface_hub.constants as hub

    if hub.HF_HUB_OFFLINE:
        return
    host = urlparse(hub.ENDPOINT).hostname
    try:
        socket.getaddrinfo(host, 443)
    except (OSError, UnicodeError):
        hub.HF_HUB_OFFLINE = True
        with contextlib.suppress(ImportError):
            import datasets.config

            datasets.config.HF_HUB_OFFLINE = True


def _from_hub(datasets: Any, source: str, config_name: str | None, split: str) -> Any:
    # `json`, `csv`, `text`, ... name datasets' file loaders, not datasets: given no files (lm-eval task YAMLs write
    # `dataset_path: json` beside them) a loader reads every data file under the working folder, recursively
    packaged = {"json", "csv", "text", "parquet", "arrow", "pandas", "xml", "webdataset"}
    packaged |= set(getattr(getattr(datasets, "packaged_modules", None), "_PACKAGED_DATASETS_MODULES", ()))
    if source.lower() in packaged:
        raise ValueError(f"data source {source!r} names datasets' {source} loader, not a dataset (with no files it "
                         "reads every data file under the working folder); give the path of your data file or "
                         "folder, or a hub dataset's name")
    with quiet_hub():
        try:
            return datasets.load_dataset(source, config_name, split=split)
        except datasets.exceptions.DatasetGenerationError as e:  # its own message says only that an error occurred
            raise ValueError(f"datasets could not build {source}: {e.__cause__ or e}") from None
        except (ConnectionError, FileNotFoundError) as e:  # a mistyped local folder read as a hub name: say both
            why = str(e).rstrip(".")
            raise ValueError(f"{why}; nor is {shown_path(source)} a local file or folder: it {not_there(source)} "
                             f"(relative to {Path.cwd()})") from None


def load_records(source: str, split: str = "train", config_name: str | None = None, max_samples: int = 0,
                 subset: str = "first", seed: int = 0, chooser: str = "") -> Records:
    """Records from a local file or folder, else from the HF hub via `datasets.load_dataset(source, ...)`.

    `max_samples` > 0 keeps that many: the first ones (`subset="first"`, the dataset's order) or a seeded
    uniform sample (`subset="random"`). The training order is shuffled per epoch later either way. `chooser` says
    what chose `split` in the note on files in no split (default: data.split).
    """
    if subset not in ("first", "random"):
        raise ValueError(f"subset must be first or random, got {subset!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):  # (torch's RuntimeError in manual_seed)
        raise TypeError(f"seed must be an integer, got {type(seed).__name__} {seed!r}")
    # (-1 was "no records in FILE")
    if isinstance(max_samples, bool) or not isinstance(max_samples, numbers.Integral) or max_samples < 0:
        raise ValueError(f"max_samples must be an integer >= 0 (0: every record), got {max_samples!r}")
    given, source = source, expand_home(source, "the data source")  # (a pathlib.Path too)
    if not source.strip():  # "" is the working folder to pathlib: every data file there was read
        raise ValueError(f"the data source is {emptiness(source)}; give a data file or folder, or a "
                         "datasets name")
    take = max_samples if subset == "first" else 0
    p = Path(source)
    named = folder_splits(p, config_name) if p.is_dir() else None
    if p.exists() and named is None and (config_name is not None or split != "train"):  # a file is read whole
        raise ValueError(f"data.split / data.config_name choose part of a hub dataset; {source} is a local "
                         f"{'folder' if p.is_dir() else 'file'}, read whole (leave them unset, or give a file of the "
                         "part you want)")
    if p.exists():
        if p.is_dir() and ((p / "dataset_info.json").is_file() or (p / "dataset_dict.json").is_file()):
            raise ValueError(f"{p} is a datasets save_to_disk folder (Arrow files), not a folder of data files; "
                             "write it with to_json or to_parquet, or give its hub name")
        files = data_files(p, LOCAL_SUFFIXES) if p.is_dir() else [p]
        # files whose names say no split (extra.jsonl beside train.jsonl) are read by no split: said, not skipped
        unsplit = ", ".join(str(f.relative_to(p)) for f in files if named is not None and not any(
            f.resolve() in v for v in named.values()))[:120]
        if named is not None and split not in named:
            shown = "; ".join(f"{k}: {', '.join(sorted(f.name for f in v))[:80]}" for k, v in sorted(named.items()))
            sliced = ("; datasets' slicing (train[:4], train+test) is not read here: data.max_samples keeps fewer "
                      "records" if any(c in split for c in "[+") else "")
            raise ValueError(f"{p}: its files split it as datasets.load_dataset does ({shown}" + (
                f"; in no split: {unsplit}" if unsplit else "") + f"); data.split={split!r} is none of them: set "
                f"data.split to one{sliced}")
        if unsplit and not card_chooses(p):  # (a README's configs choose their files themselves; a plain card not)
            print(f"note: {p}: {unsplit} in no split (datasets.load_dataset splits a folder by its file names: "
                  f"train, test, validation), not read; {chooser or f'data.split={split!r}'} reads the {split} files")
        if named is not None:  # the split's files only: a hub snapshot read whole trained on its test split
            files = [f for f in files if f.resolve() in named[split]]
            _all_named(p, split, named[split], files)
        one_format(p, files)
        if not files:
            raise ValueError(f"{p} holds no {', '.join(LOCAL_SUFFIXES)} files")
        rows = Records()
        for f in files:
            part = _read_local(f)
            rows.extend(part)
            rows.where.extend(part.where)
            if take and len(rows) >= take:
                break
    else:
        if source.lower().endswith(LOCAL_SUFFIXES):  # (any letter case, as the reader takes them)
            raise FileNotFoundError(f"data file {shown_home(given, source)} {not_there(source)}")
        try:
            import datasets
        except ImportError:
            raise ImportError("loading a dataset by name needs `datasets` (pip install 'looplm[hf]')") from None
        ds = _from_hub(datasets, source, config_name, split)
        schema = getattr(getattr(ds, "data", None), "schema", None)
        if schema is not None:
            _no_struct_objects(schema, source, "give the data as JSONL (from the dataset's own source files)")
        if max_samples and max_samples < len(ds):
            idx = range(max_samples) if subset == "first" else _sample(len(ds), max_samples, seed)
            ds = ds.select(idx)
        rows = Records(ds.to_list(), [f"{source} row {i}" for i in range(len(ds))])
    if max_samples and len(rows) > max_samples:
        keep = range(max_samples) if subset == "first" else _sample(len(rows), max_samples, seed)
        rows = Records([rows[i] for i in keep], [rows.where[i] for i in keep])
    if not rows:
        raise ValueError(f"no records in {source}")
    return rows


def _card_configs(folder: Path, factory: Any) -> Any:
    """datasets' reading of a folder's README.md header (its `configs:`), with a broken header said as that: a YAML
    slip there (`title: My data: math`, a tab) or a README that is not UTF-8 was a yaml or codec traceback, in
    folders that trained fine before looplm read the card."""
    import yaml

    # (huggingface_hub logs "Repo card metadata block was not found" on stderr for a README with no YAML header:
    # a plain card is no fault of the data)
    card_log = logging.getLogger("huggingface_hub.repocard")
    level = card_log.level
    card_log.setLevel(logging.ERROR)
    try:
        return factory(str(folder)).get_module().builder_configs_parameters
    except FileNotFoundError:  # (no data files, or configs' files that match none: said by the caller)
        raise
    except Exception as e:  # datasets raises what it meets (an AttributeError on `{"a": 1}`): said by the file
        why = " ".join(str(e).split())[:200]
        info = unread_info(folder)
        if info:
            raise ValueError(f"{folder}/{info}: datasets reads it with the folder, and cannot ({type(e).__name__}: "
                             f"{why}); fix it, or remove it (the data is read without it)") from None
        if isinstance(e, (yaml.YAMLError, UnicodeDecodeError, TypeError)):
            raise ValueError(f"{folder}/README.md: datasets reads its header (the YAML between the --- lines) for "
                             f"the folder's configs, and cannot ({type(e).__name__}: {why}); fix the header, or "
                             "remove it") from None
        if "same data file format" in str(e):  # its splits' files in two formats: said per format, as looplm says it
            one_format(folder, data_files(folder, LOCAL_SUFFIXES))
        kind = "" if isinstance(e, ValueError) else f"{type(e).__name__}: "  # (datasets' own word on its configs)
        raise ValueError(f"{folder}/README.md: datasets could not read its `configs:` ({kind}{why}); fix them (see "
                         "https://huggingface.co/docs/hub/datasets-manual-configuration), or remove them") from None
    finally:
        card_log.setLevel(level)


def _all_named(folder: Path, split: str, named: set[Path], files: list[Path]) -> None:
    """Refuse a split whose files (by the README.md `configs:`) are not all among the folder's read files: one
    outside the folder (`path: ../x.jsonl`) was left out unsaid, or said as a folder with no data files."""
    def key(f: Path) -> tuple[int, int]:
        st = f.stat()
        return st.st_dev, st.st_ino

    read = {key(f) for f in files}
    away = sorted(f for f in named if not f.exists() or key(f) not in read)
    if away:
        raise ValueError(f"{folder}/README.md: its `configs:` give split {split!r} files looplm does not read from "
                         f"the folder ({', '.join(map(str, away[:3]))}{', ...' if len(away) > 3 else ''}): it reads "
                         f"only the {', '.join(LOCAL_SUFFIXES)} files inside it; move them in (or copy them)")


class Splits(dict):
    """{split: its files} of a folder, with the README.md config they are of (`config`: None where no config chose
    them; the default one where none was named)."""

    config: str | None = None


def folder_splits(folder: Path, config_name: str | None = None, choose: str = "set data.config_name to one"
                  ) -> Splits | None:
    """{split: its files} of a local folder, as `datasets.load_dataset(folder, config_name)` resolves them (datasets'
    own machinery): the `configs:` of its README.md (`hf download openai/gsm8k --local-dir` holds main/ and
    socratic/, two configs of the same questions, which read whole trained every question twice; a config's
    data_files map files to splits), else its file names (main/train-00000-of-00001.parquet beside main/test-...;
    train/...; x_test.jsonl). None where neither splits it: read whole, as datasets reads it. A folder of several
    configs and no default one is refused without `config_name` (as datasets refuses it), said with `choose`."""
    swapped = model_folder(folder)
    if swapped:  # (its trainer_state.pt was to be converted to JSONL; its config.json was no list of records)
        raise ValueError(f"{folder} is {swapped}, not chat data (were the model and the data swapped?): give the "
                         "data (finetune: data.source; analyze: --data) as a JSONL, JSON or parquet file, or a folder "
                         "of them")
    try:
        from datasets import config
        from datasets.data_files import DataFilesDict, EmptyDatasetError, get_data_patterns
        from datasets.load import LocalDatasetModuleFactory
    except ImportError:  # (no datasets: a folder is read whole)
        return None
    if (folder / config.REPOCARD_FILENAME).is_file() or (folder / config.REPOYAML_FILENAME).is_file():
        try:  # (a config's data_files that match nothing, two default configs)
            params = _card_configs(folder, LocalDatasetModuleFactory)
            configs = {c.name: c for c in params.builder_configs} if params.metadata_configs else {}
            name = config_name or params.default_config_name
            if configs and name is None:
                raise ValueError(f"{folder}: its README.md names {len(configs)} configs ({', '.join(configs)}) and no "
                                 f"default one, which datasets.load_dataset refuses to read together; {choose}")
            if configs and name not in configs:
                raise ValueError(f"data.config_name={name!r} is none of {folder}'s configs (its README.md names "
                                 f"{', '.join(configs)})")
            if configs:  # (the builder resolves a config's file patterns against the folder and its data_dir)
                chosen = configs[name]
                base = str(folder / chosen.data_dir) if chosen.data_dir else str(folder)
                found = chosen.data_files.resolve(base) if hasattr(chosen.data_files, "resolve") else chosen.data_files
                named = Splits({str(k): {Path(f).resolve() for f in v} for k, v in found.items()})
                named.config = name if len(configs) > 1 else None  # (one config is the folder, no choice)
                return named
        except EmptyDatasetError:  # (no data files at all: said as such by the caller)
            return None
        except FileNotFoundError as e:
            raise ValueError(f"{folder}: datasets cannot resolve its README.md `configs:` ({e})") from None
    if config_name is not None:
        raise ValueError(f"data.config_name={config_name!r}: {folder} names no configs (no README.md `configs:`); "
                         "leave it unset")
    try:
        patterns = {str(k): v for k, v in get_data_patterns(str(folder)).items()}
    except EmptyDatasetError:
        return None
    if patterns == {"train": ["**"]}:  # datasets' pattern for a folder whose names say no split
        return None
    found = DataFilesDict.from_patterns(patterns, base_path=str(folder))
    return Splits({str(k): {Path(f).resolve() for f in v} for k, v in found.items()})


def _sample(n: int, k: int, seed: int) -> list[int]:
    """k of range(n) uniformly without replacement, in increasing order (seeded)."""
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=g)[:k].tolist())


@dataclass
class DataStats:
    records: int
    kept: int
    no_target: int  # records with no usable assistant turn
    overlong: int  # dropped (overlong=drop) or cut and kept (overlong=truncate) for max_length
    tokens: int
    target_tokens: int
    reply_cut: int = 0  # overlong=truncate: dropped, the cut removed every reply token
    own_system: int = 0  # kept records whose own system turn stood in place of data.system_prompt
    special_text: int = 0  # kept records whose turns' text holds a special token's name
    special_token: str = ""  # the first such name
    drop_hint: str = ""  # how to read the first dropped record that holds its turns under other fields (data_hints)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def summary(self, max_length: int, overlong: str) -> str:
        """One line: how many records were kept, and how many were dropped (or cut) and why."""
        why = [f"{self.no_target} with no assistant reply to learn (a missing or empty conversation or field, no "
               "assistant turn, or only empty ones)"] if self.no_target else []
        if self.reply_cut:
            why.append(f"{self.reply_cut} whose reply starts after data.max_length={max_length} tokens")
        if self.overlong and overlong == "drop":
            why.append(f"{self.overlong} longer than data.max_length={max_length} tokens")
        line = f"data: {self.kept} of {self.records} records kept"
        if self.records > self.kept:
            line += f"; {self.records - self.kept} dropped: {', '.join(why)}" + (
                f" ({self.drop_hint})" if self.drop_hint else "")
        if self.overlong and overlong == "truncate":
            line += f"; {self.overlong} cut to data.max_length={max_length} tokens"
        if self.own_system:  # not silently: the config records a system prompt these records did not get
            line += (f"; {self.own_system} kept their own system turn (data.system_prompt opens only conversations "
                     "without one)")
        if self.special_text:  # a tokenizer reads a special token's name in text as that token: a turn marker
            line += (f"; {self.special_text} with a special token's text in a turn ({self.special_token!r}: read as "
                     "that token, not as text; edit those records if it is meant as text)")
        return line


def check_format(records: list[dict[str, Any]], d: ChatDataConfig) -> None:
    """Refuse field names that data.format=auto would leave unused. auto reads a record that holds a conversation
    as that conversation: a prompt_field/response_field set away from its default went unused, without a word, on
    records that hold both shapes (looplm.hf.mathdata's, many hub sets'); a messages_field that no record has read
    every record as prompt/response."""
    if d.format != "auto":
        return
    default = {f.name: f.default for f in fields(ChatDataConfig)}
    moved = [k for k in ("prompt_field", "response_field") if getattr(d, k) != default[k]]
    convo = [r for r in records if isinstance(r, dict) and has_messages(r, d.messages_field)]
    both = sum(any(r.get(getattr(d, k)) is not None for k in moved) for r in convo)
    if both:
        k = moved[0]
        raise ConfigError(f"data.{k}={getattr(d, k)!r} would go unused: {both} of {len(records)} records also have a "
                          f"{d.messages_field!r} conversation, which data.format=auto trains on; set "
                          "data.format=prompt_response to train on the fields (or messages for the conversations)")
    if d.messages_field != default["messages_field"] and not convo:
        raise ConfigError(f"data.messages_field={d.messages_field!r}: no record has it, so data.format=auto would read "
                          f"every record as data.prompt_field/response_field ({d.prompt_field}/{d.response_field}); "
                          "check the name, or set data.format=prompt_response")


def build_examples(records: list[dict[str, Any]], tokenizer: Any, max_length: int, overlong: str = "drop",
                   chat_template: str | None = None, **fmt: Any) -> tuple[list[Encoded], DataStats]:
    """Tokenize records into examples. `fmt` goes to `chat.to_messages` (format, field names, system prompt).

    overlong="drop" skips examples longer than max_length (a cut solution loses its final answer);
    "truncate" cuts them on the right and keeps them if any target token survives.
    """
    if overlong not in ("drop", "truncate"):
        raise ValueError(f"overlong must be drop or truncate, got {overlong!r}")
    out: list[Encoded] = []
    no_target = n_long = n_cut = own_system = 0
    # (the special added tokens, ChatML's <|im_end|> among them: all_special_tokens can list only bos/eos/pad)
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    specials = sorted({a.content for a in added.values() if getattr(a, "special", False) and a.content}
                      | {t for t in getattr(tokenizer, "all_special_tokens", None) or [] if isinstance(t, str) and t})
    special_text, special_token, drop_hint = 0, "", ""
    where = getattr(records, "where", None) or [f"record {i}" for i in range(len(records))]
    for r, w in zip(records, where, strict=True):
        try:
            msgs = to_messages(r, **fmt)
        except ValueError as e:
            raise ValueError(f"{w}: {e}") from None
        if msgs is None:  # TRL's prompt/completion turns beside messages records: said only when every one failed
            no_target += 1
            drop_hint = drop_hint or (isinstance(r, dict) and turns_hint(r, fmt.get("messages_field", "messages")))
            continue
        prompt = fmt.get("system_prompt")
        own = prompt and not any(m["role"] == "system" and m["content"] == prompt for m in msgs)
        try:
            enc = encode_chat(tokenizer, msgs, chat_template, tools=r.get("tools"))
        except TemplateError as e:
            raise TemplateError(f"{w}: {e}") from None
        except Exception as e:  # the tokenizers library's plain Exception: a vocabulary without this character
            if "Missing [UNK]" not in str(e):
                raise
            also = " or of data.system_prompt" if fmt.get("system_prompt") else ""
            raise ValueError(f"{w}: a character of this record{also} is outside the tokenizer's vocabulary (an "
                             "export of a character-level looplm run knows only the characters it was trained "
                             "on)") from None
        if len(enc.input_ids) > max_length:
            if overlong == "drop":
                n_long += 1
                continue
            enc = Encoded(enc.input_ids[:max_length], enc.labels[:max_length])
            if enc.n_targets == 0:  # the cut took every reply token: not a record without a reply
                n_cut += 1
                continue
            n_long += 1
        if enc.n_targets == 0:
            no_target += 1
            continue
        out.append(enc)
        own_system += bool(own)
        named = [t for t in specials if any(t in str(m.get("content") or "") for m in msgs)]
        special_text, special_token = special_text + bool(named), special_token or (named or [""])[0]
    stats = DataStats(len(records), len(out), no_target, n_long, sum(len(e.input_ids) for e in out),
                      sum(e.n_targets for e in out), n_cut, own_system, special_text, special_token, drop_hint or "")
    if not out:
        why = [f"no assistant target: {no_target}"] + (
            [f"reply after max_length={max_length}: {n_cut}"] if overlong == "truncate" else
            [f"over max_length={max_length}: {n_long}"])
        hint = LENGTH_HINT if n_cut or n_long else field_hint(records, fmt)
        raise ValueError(f"no usable examples out of {len(records)} records ({', '.join(why)}); {hint}")
    return out, stats


LENGTH_HINT = "raise the length limit (data.max_length; analyze: --max-length)"


def past_positions(examples: list[Encoded], positions: int, overlong: str, model: str) -> str:
    """finetune's refusal of examples longer than `model`'s position table of `positions`. A data.max_length at the
    table is advised only where it keeps examples: where none fits, it dropped them all, and the next refusal said
    to raise the limit again (analyze says these records are too long for the model, as here)."""
    longest = max(len(e.input_ids) for e in examples)
    # what data.max_length=positions keeps: the examples that fit, or (truncate) those with a target token within it
    kept = sum(len(e.input_ids) <= positions if overlong == "drop" else any(t != IGNORE for t in e.labels[:positions])
               for e in examples)
    said = f"data.max_length: the longest example has {longest} tokens but {model} has {positions} positions"
    if not kept:
        reach = "fits in them" if overlong == "drop" else "has a reply token within them"
        return (f"{said}, and no example {reach}: the records are longer than the model can read; use shorter "
                "records, or a model with more positions")
    return (f"{said}; set data.max_length={positions} (it keeps {kept} of {len(examples)} examples), or use shorter "
            "records")


def collate(examples: list[Encoded], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, labels, mask) tensors, each (B, T_max); mask is 1 on real tokens."""
    T = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), T), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), T), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return ids, labels, mask


def to_batch(examples: list[Encoded], pad_id: int) -> Batch:
    """Examples as a looplm Batch: next-token targets on assistant tokens (labels shifted left by one)."""
    ids, labels, mask = collate(examples, pad_id)
    targets = torch.full_like(labels, IGNORE)
    targets[:, :-1] = labels[:, 1:]
    return Batch(ids, targets, mask.bool())


class ChatTask:
    """Tokenized chat examples as a looplm task: global batch k of the run is examples k·n .. k·n + n - 1 of
    the concatenated epochs, each epoch in its own seeded order, so a resumed run (and every rank) knows its
    data from the step count alone."""

    def __init__(self, examples: list[Encoded], pad_id: int, seed: int):
        self.examples, self.pad_id, self.seed = examples, pad_id, seed
        self.size = len(examples)
        # what the run trains on, token for token: a resume on other data (an edited or shorter file, another
        # tokenizer or template) is refused against the digest its checkpoints record
        digest = hashlib.sha256()
        for e in examples:
            digest.update(json.dumps([e.input_ids, e.labels]).encode())
        self.fingerprint = {"sha256": digest.hexdigest(), "examples": len(examples)}
        self.paths = ["data.source"]
        self._order: tuple[int, list[int]] | None = None

    def _example(self, k: int) -> Encoded:
        ep = k // self.size
        if self._order is None or self._order[0] != ep:
            self._order = (ep, epoch_order(self.size, self.seed, ep))
        return self.examples[self._order[1][k % self.size]]

    def train_batch(self, n: int, gen: torch.Generator | None = None, step: int = 0) -> Batch:
        return to_batch([self._example(step * n + i) for i in range(n)], self.pad_id)

    def held_out(self, n: int) -> Batch | None:
        return None  # fine-tuning data has no held-out split here; lm-eval scores the run


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The example order of one epoch: a permutation that depends only on (seed, epoch), so a resumed run
    (and every rank) knows it from the step count alone."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    return torch.randperm(n, generator=g).tolist()
