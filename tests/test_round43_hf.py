"""Round 43, HF side: one rule for `~` in every HF path (a model path's `~` was blamed on the hub's repo-id rules,
data.source's was expanded and then said not to be); finetune's advice on examples past the model's position table
(following it dropped every example); load_records' and the chat API's argument types; record shapes that hold
their conversation under other fields (a records list under `rows`, `conversations`, TRL's lists of turns); a string
exit threshold."""

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402

from looplm.cli import main  # noqa: E402
from looplm.hf.analysis import _fields, find_model_dir  # noqa: E402
from looplm.hf.chat import CHATML_TEMPLATE, TemplateError, encode_chat, to_messages  # noqa: E402
from looplm.hf.data import build_examples, load_records  # noqa: E402

from .hf_fixtures import math_problems, save_tiny_base, tiny_chat_tokenizer, tiny_ouro, write_jsonl  # noqa: E402

TURNS = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "#### 2"}]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fake home folder: `~` never reaches the real one."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    return h


def _finetune(tmp: Path, capsys, model: str, data: Path, *more: str) -> str:
    (tmp / "ft.yaml").write_text(f"model:\n  name_or_path: {model}\ndata:\n  source: {data}\n  max_length: 256\n"
                                 "train:\n  steps: 1\n  batch_size: 2\n")
    capsys.readouterr()
    assert main(["finetune", "--config", str(tmp / "ft.yaml"), "--out", str(tmp / "ft"), "--no-progress",
                 *more]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_a_model_path_with_tilde_is_read_from_the_home_folder(home, tmp_path, capsys, monkeypatch):
    """A YAML config's `name_or_path: ~/base` was refused as a hub id ("Repo id must use alphanumeric chars");
    here it loads, and the run stops at its data: records whose conversation is under `conversations`."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    save_tiny_base(home / "base", tiny_chat_tokenizer())
    data = write_jsonl([{"conversations": TURNS}] * 2, tmp_path / "conv.jsonl")
    err = _finetune(tmp_path, capsys, "~/base", data)
    assert "Repo id" not in err and "data.messages_field=conversations" in err, err
    assert find_model_dir("~/base") == home / "base"  # analyze and eval-lm find it too
    assert find_model_dir("~") is None


def test_a_missing_tilde_path_names_where_it_looked(home, tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_records("~/missing.jsonl")
    assert str(e.value) == f"data file ~/missing.jsonl ({home}/missing.jsonl) does not exist"
    with pytest.raises(ValueError, match=r"~nosuchuser43 is no home folder \(there is no user 'nosuchuser43'\)"):
        load_records("~nosuchuser43/x.jsonl")


def test_eval_lm_reads_tilde_as_the_home_folder(home, tmp_path):
    from looplm.errors import UserError
    from looplm.hf.lm_eval_depths import eval_depths

    with pytest.raises(UserError, match=f"model directory {home}/nobase does not exist"):
        eval_depths("~/nobase", ["x"], [1], tmp_path / "e")


def test_finetune_past_the_position_table_says_the_records_are_too_long(tmp_path, capsys, monkeypatch):
    """It said "set data.max_length=16 or lower"; following that dropped every example and the next refusal said
    "raise the length limit"."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = save_tiny_base(tmp_path / "pos", tiny_chat_tokenizer())
    conf = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**conf, "max_position_embeddings": 8}))
    data = write_jsonl(math_problems(4), tmp_path / "m.jsonl")
    for more in ((), ("--set", "data.overlong=truncate")):
        err = _finetune(tmp_path, capsys, str(base), data, *more)
        assert "has 8 positions" in err and "the records are longer than the model can read" in err, err
        assert "set data.max_length" not in err, err


def test_finetunes_position_advice_names_what_a_limit_at_the_table_keeps():
    from looplm.hf.chat import Encoded
    from looplm.hf.data import past_positions

    short, long = Encoded([1] * 6, [-100, -100, 1, 1, 1, 1]), Encoded([1] * 20, [-100] * 10 + [1] * 10)
    said = past_positions([short, long], 8, "drop", "m")
    assert said.endswith("set data.max_length=8 (it keeps 1 of 2 examples), or use shorter records"), said
    assert "no example has a reply token within them" in past_positions([long], 8, "truncate", "m")


def test_load_records_takes_a_path_and_refuses_a_negative_count(tmp_path):
    f = write_jsonl(math_problems(3), tmp_path / "m.jsonl")
    assert len(load_records(f)) == 3  # (a pathlib.Path: 'PosixPath' object has no attribute 'strip')
    with pytest.raises(ValueError, match=r"max_samples must be an integer >= 0 \(0: every record\), got -1"):
        load_records(str(f), max_samples=-1)  # (it said "no records in FILE")
    with pytest.raises(TypeError, match="the data source must be a str or os.PathLike, got int"):
        load_records(3)


def test_the_chat_api_names_a_wrong_type():
    tok = tiny_chat_tokenizer()
    with pytest.raises(TypeError, match="messages must be a list of {role, content} dicts, got dict"):
        encode_chat(tok, TURNS[0])
    with pytest.raises(TypeError, match=r"record must be a dict \(one data record\), got list"):
        to_messages(["p", "s"])


def test_encode_chat_reads_chatml_as_the_config_does():
    """The name was rendered as the constant text "chatml", then blamed for dropping the user turn."""
    tok = tiny_chat_tokenizer(chat_template="{% for m in messages %}{{ m['content'] }}\n{% endfor %}")
    named = encode_chat(tok, TURNS, chat_template="chatml")
    assert named == encode_chat(tok, TURNS, chat_template=CHATML_TEMPLATE)
    with pytest.raises(TemplateError, match="'chatmlx' is no Jinja template, nor chatml or a named template"):
        encode_chat(tok, TURNS, chat_template="chatmlx")


@pytest.mark.parametrize("record, hint", [
    ({"conversations": TURNS}, "set data.messages_field=conversations"),
    ({"prompt": TURNS[:1], "completion": TURNS[1:]}, "the records' prompt and completion are lists of role/content "
                                                     "turns (TRL's conversational prompt/completion)"),
])
def test_a_conversation_under_other_fields_gets_its_own_hint(record, hint):
    """Both were told "check the records' shape and field names" (finetune) or to rename their text fields
    (analyze)."""
    with pytest.raises(ValueError, match=r"no usable examples") as e:
        build_examples([record], tiny_chat_tokenizer(), 256)
    assert hint in str(e.value)
    with pytest.raises(ValueError) as e:
        _fields(record)
    assert hint in str(e.value) and "rename the prompt's" not in str(e.value)


def test_a_json_object_holding_the_records_list_is_said_as_such(tmp_path):
    f = tmp_path / "rows.json"
    f.write_text(json.dumps({"rows": math_problems(2)}))
    with pytest.raises(ValueError, match=r"one JSON object whose 'rows' holds a list of 2 objects, read as one "
                                         "record; write the records alone"):
        load_records(str(f))
    f.write_text(json.dumps({"data": math_problems(2)}))  # (read as its list, as before)
    assert len(load_records(str(f))) == 2
    f.write_text(json.dumps({"messages": TURNS}))  # one record in a .json file: still one record
    assert len(load_records(str(f))) == 1


def test_a_string_exit_threshold_is_refused():
    m = tiny_ouro(64)
    with pytest.raises(ValueError, match="must be a number or null, got the string '0.5'"):
        m(torch.tensor([[1, 2, 3]]), exit_threshold="0.5")
    m(torch.tensor([[1, 2, 3]]), exit_threshold=0.5)
