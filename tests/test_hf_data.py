"""Fine-tune data as it comes from real exports: where records are read from, and which shape a record is read as."""

import json
import re

import pytest

pytest.importorskip("transformers")

from looplm.hf.chat import CHATML_TEMPLATE, to_messages  # noqa: E402
from looplm.hf.data import load_records  # noqa: E402

from .hf_fixtures import math_problems, write_jsonl  # noqa: E402


def test_a_loader_name_is_no_data_source_and_a_folder_refuses_what_it_cannot_read(tmp_path, monkeypatch):
    """`data.source: json` (lm-eval task YAMLs write `dataset_path: json`) went to datasets' json loader, which with
    no files read every data file under the working folder, recursively; a data folder left out .ndjson and
    .jsonlines files (JSON Lines under other names) without a word, while the same file alone was refused."""
    write_jsonl(math_problems(3), tmp_path / "sub" / "unrelated.jsonl")
    monkeypatch.chdir(tmp_path)
    for name in ("json", "csv", "text", "parquet", "JSON"):
        with pytest.raises(ValueError, match=f"data source '{name}' names datasets' {name} loader, not a dataset"):
            load_records(name)
    for name in ("nope.JSONL", "nope.Parquet"):  # a missing file in upper case was looked up on the hub
        with pytest.raises(FileNotFoundError, match=f"data file {name} does not exist"):
            load_records(name)
    d = tmp_path / "d"
    write_jsonl(math_problems(3), d / "a.jsonl")
    assert len(load_records(str(d))) == 3
    for name in ("b.ndjson", "c.jsonlines", "e.pq"):
        write_jsonl(math_problems(2), d / name)
        with pytest.raises(ValueError, match=rf"holds data files looplm does not read \({name}\)"):
            load_records(str(d))
        (d / name).unlink()
    # Feather and Parquet under other names (a hub shard has none) were left out: 28 of 30 rows, "2 of 2 kept"
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa
    import pyarrow.feather as feather

    table = pa.Table.from_pylist(math_problems(2))
    for name, write in (("b.feather", feather.write_feather), ("train-00001-of-00002", pq.write_table),
                        ("c.parq", pq.write_table)):
        write(table, d / name)
        with pytest.raises(ValueError, match=rf"holds data files looplm does not read \({name}\)"):
            load_records(str(d))
        (d / name).unlink()


def test_a_null_messages_column_is_no_conversation_and_a_developer_turn_is_a_system_turn(tmp_path):
    """Parquet and merged hub datasets fill the `messages` of prompt/response records with null: such a record was
    read as a conversation with no turns and dropped. OpenAI's newer exports name the system turn `developer`:
    data.system_prompt was put in front of it, giving the conversation two instructions."""
    row = {"messages": None, "problem": "2+2?", "solution": "4"}
    assert to_messages(row) == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    (tmp_path / "mixed.jsonl").write_text(json.dumps(row) + "\n")
    assert load_records(str(tmp_path / "mixed.jsonl")) == [row]
    dev = {"messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                        {"role": "assistant", "content": "4"}]}
    assert to_messages(dev, system_prompt="Tutor.") == dev["messages"]
    assert to_messages({"messages": dev["messages"][1:]}, system_prompt="Tutor.")[0] == {
        "role": "system", "content": "Tutor."}


def test_an_empty_messages_list_is_no_conversation_under_auto(tmp_path):
    """JSON exports of merged sets write `[]` for the missing conversation: such a record (with its prompt/response
    fields) was dropped as an empty conversation under data.format=auto, where a null one was read by its fields;
    analyze too read it as a conversation with nothing to learn."""
    from looplm.hf.analysis import _fields

    row = {"messages": [], "problem": "2+2?", "solution": "4"}
    assert to_messages(row) == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    assert _fields(row)["fmt"] == "prompt_response" and _fields({"messages": []}) == {"fmt": "messages"}
    assert to_messages(row, fmt="messages") is None  # asked for: the conversation, empty


def test_a_chat_template_file_that_is_no_template_is_refused(tmp_path):
    """data.chat_template naming a data file or a tokenizer_config.json (which holds a chat_template key, the
    transformers 4 layout) was rendered as a template: every example was the file's text, and the error spoke of
    the records (no assistant target, over max_length) or of prefix stability."""
    from looplm.config import ConfigError
    from looplm.hf.chat import CHATML_TEMPLATE
    from looplm.hf.finetune import chat_template

    data = write_jsonl(math_problems(2), tmp_path / "math.jsonl")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHATML_TEMPLATE}, indent=2))
    (tmp_path / "notes.txt").write_text("use chatml\n")
    (tmp_path / "t.jinja").write_text(CHATML_TEMPLATE)
    for f, msg in ((data, "is a JSON file, not a chat template"), (tmp_path / "notes.txt", "is a file with no Jinja"),
                   (tmp_path / "tokenizer_config.json", "is a JSON file, not a template; it holds a chat_template")):
        with pytest.raises(ConfigError, match=f"data.chat_template: {f} {msg}"):
            chat_template(str(f))
    assert chat_template(str(tmp_path / "t.jinja")) == CHATML_TEMPLATE


def test_a_chat_tokenizer_smaller_than_its_bytes_is_refused():
    """train_chat_tokenizer(texts, 100) (or 0) returned 259 tokens without a word: every byte and the special
    tokens are always in; a negative size was an OverflowError from the tokenizers library."""
    from looplm.hf.tokenizer import train_chat_tokenizer

    for bad in (100, 258, 0, -5, True, 300.0):
        with pytest.raises(ValueError, match=r"vocab_size must be an integer >= 259 \(the 256 bytes and 3 special"):
            train_chat_tokenizer(["hello world 123"], bad)
    assert len(train_chat_tokenizer(["hello world 123"], 259)) == 259


def test_a_lone_surrogate_in_a_record_is_refused_with_its_file_line_and_field(tmp_path):
    """A lone surrogate escape (`\\ud800`, valid JSON: an emoji cut in half) in a chat record was the tokenizer's
    TypeError traceback from inside build_examples; it is refused as the native JSONL task refuses it, with the
    record's file:line and the field, wherever the record puts it (a message, a field pair, tools)."""
    from looplm.hf.data import build_examples

    from .hf_fixtures import tiny_chat_tokenizer

    tok = tiny_chat_tokenizer()
    rows = [{"messages": [{"role": "user", "content": "a\ud800b"}, {"role": "assistant", "content": "c"}]},
            {"problem": "1+1?", "solution": "2\udc00"},
            {"problem": "1+1?", "solution": "2", "tools": [{"type": "function", "function": {"name": "f\ud83d"}}]}]
    for row, field in zip(rows, ("messages[0].content", "solution", "tools[0].function.name"), strict=True):
        f = tmp_path / "d.jsonl"
        f.write_text(json.dumps(math_problems(1)[0]) + "\n" + json.dumps(row) + "\n")
        with pytest.raises(ValueError, match=rf"d\.jsonl:2: field '{re.escape(field)}' holds a lone surrogate"):
            build_examples(load_records(str(f)), tok, 256)


def test_records_with_another_field_pair_name_the_settings_that_read_them(tmp_path):
    """GSM8K's question/answer records under the default problem/solution fields: 'check data.format and the field
    names' named neither the fields the records have nor the settings that read them."""
    from looplm.hf.data import build_examples

    from .hf_fixtures import tiny_chat_tokenizer

    rows = load_records(str(write_jsonl([{"question": "What is 2+2?", "answer": "#### 4"}] * 2, tmp_path / "q.jsonl")))
    with pytest.raises(ValueError, match="the records have question/answer fields: set data.prompt_field=question "
                                         "and data.response_field=answer"):
        build_examples(rows, tiny_chat_tokenizer(), 256)
    ex, _ = build_examples(rows, tiny_chat_tokenizer(), 256, prompt_field="question", response_field="answer")
    assert len(ex) == 2


def test_a_weight_0_conversation_beside_records_of_another_field_pair_gets_both_hints(tmp_path):
    """One weight-0 conversation and one question/answer record: only the weight-0 hint was given ("1 of them
    have"), and the field names that would read the other record were not said."""
    from looplm.hf.data import build_examples

    from .hf_fixtures import tiny_chat_tokenizer

    w0 = {"messages": [{"role": "user", "content": "2+3?"}, {"role": "assistant", "content": "#### 5", "weight": 0}]}
    rows = load_records(str(write_jsonl([w0, {"question": "1+1?", "answer": "2"}], tmp_path / "mix.jsonl")))
    with pytest.raises(ValueError, match=r"; 1 of them has weight 0 on every assistant turn \(context, not a target\): "
                                         r"give the turns to learn weight 1; the records have question/answer fields: "
                                         r"set data.prompt_field=question and data.response_field=answer$"):
        build_examples(rows, tiny_chat_tokenizer(), 256)


def test_tool_call_objects_stored_as_arrow_structs_are_refused(tmp_path):
    """Arrow unifies the struct of every row's `arguments` (and tools' `parameters`): parquet gave each call the
    other calls' keys as null and turned its ints into floats ({"city": "Paris", "days": 3} came back with
    "days": 3.0, "query": null), and the model was trained on them without a word."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def rec(name, args):
        call = {"type": "function", "function": {"name": name, "arguments": args}}
        return {"messages": [{"role": "user", "content": "Weather?"},
                             {"role": "assistant", "content": "", "tool_calls": [call]},
                             {"role": "tool", "content": "ok"}, {"role": "assistant", "content": "Done."}]}

    rows = [rec("get_weather", {"city": "Paris", "days": 3}), rec("search", {"query": "news", "days": 2.5})]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "tc.parquet")
    with pytest.raises(ValueError, match=r"tc\.parquet: messages\[\]\.tool_calls\[\]\.function\.arguments holds "
                                         r"objects stored as Arrow structs, .*; write the data as JSONL"):
        load_records(str(tmp_path / "tc.parquet"))
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    pq.write_table(pa.Table.from_pylist([{**math_problems(1)[0], "tools": [tool]}]), tmp_path / "tools.parquet")
    with pytest.raises(ValueError, match=r"tools\.parquet: tools\[\]\.function\.parameters holds objects"):
        load_records(str(tmp_path / "tools.parquet"))
    for r in rows:  # JSON strings keep each call as written
        r["messages"][1]["tool_calls"][0]["function"]["arguments"] = json.dumps(
            r["messages"][1]["tool_calls"][0]["function"]["arguments"])
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "ok.parquet")
    got = load_records(str(tmp_path / "ok.parquet"))[0]["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(got) == {"city": "Paris", "days": 3}


def test_objects_stored_as_arrow_maps_are_refused(tmp_path):
    """A map column (PySpark's default for a Python dict) reads back as (key, value) pairs: arguments were trained
    as [["city", "Paris"]], and tools' parameters accepted as [("type", "object")]."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kv = pa.map_(pa.string(), pa.string())
    fn = pa.struct([("name", pa.string()), ("arguments", kv)])
    msg = pa.struct([("role", pa.string()), ("content", pa.string()),
                     ("tool_calls", pa.list_(pa.struct([("type", pa.string()), ("function", fn)])))])
    call = {"type": "function", "function": {"name": "get_weather", "arguments": [("city", "Paris")]}}
    rows = [{"messages": [{"role": "user", "content": "Weather?", "tool_calls": None},
                          {"role": "assistant", "content": "", "tool_calls": [call]},
                          {"role": "tool", "content": "20C", "tool_calls": None},
                          {"role": "assistant", "content": "It is 20.", "tool_calls": None}]}]
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([("messages", pa.list_(msg))])), tmp_path / "m.parquet")
    with pytest.raises(ValueError, match=r"m\.parquet: column messages\[\]\.tool_calls\[\]\.function\.arguments "
                                         r"holds Arrow maps, .*pairs, not objects.*; write the data as JSONL"):
        load_records(str(tmp_path / "m.parquet"))
    fn = pa.struct([("name", pa.string()), ("parameters", kv)])
    schema = pa.schema([("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
                        ("tools", pa.list_(pa.struct([("type", pa.string()), ("function", fn)])))])
    tools = [{"type": "function", "function": {"name": "f", "parameters": [("type", "object")]}}]
    pq.write_table(pa.Table.from_pylist([{"messages": [{"role": "user", "content": "Hi"}], "tools": tools}],
                                        schema=schema), tmp_path / "t.parquet")
    with pytest.raises(ValueError, match=r"t\.parquet: column tools\[\]\.function\.parameters holds Arrow maps"):
        load_records(str(tmp_path / "t.parquet"))
    msgs = pa.schema([("messages", pa.list_(kv))])  # whole messages as maps: said as maps, not as a bad message
    pq.write_table(pa.Table.from_pylist([{"messages": [[("role", "user"), ("content", "Hi")]]}], schema=msgs),
                   tmp_path / "mm.parquet")
    with pytest.raises(ValueError, match=r"column messages\[\] holds Arrow maps"):
        load_records(str(tmp_path / "mm.parquet"))


def test_an_unquoted_inline_template_in_set_gets_the_quoting_hint(tmp_path, capsys):
    """`--set data.chat_template={{ 'x' }}` blamed a config key ("must be a name, got dict"), and `{% ... %}`
    YAML syntax: never the quotes that make it text, the hint other text settings get."""
    from looplm.cli import main as cli

    (tmp_path / "ft.yaml").write_text("model:\n  name_or_path: nowhere\ndata:\n  source: nowhere.jsonl\n")
    for value in ("{{ 'x' }}", "{% for m in messages %}{{ m.content }}{% endfor %}"):
        assert cli(["finetune", "--config", str(tmp_path / "ft.yaml"), "--out", str(tmp_path / "r"), "--no-progress",
                    "--set", f"data.chat_template={value}"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --set data.chat_template={value}: ") and err.endswith(
            "; for text (a Jinja template), put it in YAML quotes, each ' in it written '': "
            "--set \"data.chat_template='...'\"\n"), err
    assert not (tmp_path / "r").exists()


def test_data_chat_template_names_one_of_the_tokenizers_named_templates():
    """A tokenizer with named templates (tokenizer_config.json's list) and none called default: transformers asks
    for a template name, which data.chat_template refused ('neither chatml, a template file, nor ...')."""
    from looplm.config import ConfigError
    from looplm.hf.finetune import chat_template

    named = {"rag": "{{ 'r' }}", "tool_use": "{{ 't' }}"}
    assert chat_template("rag", named) == "{{ 'r' }}"
    assert chat_template("chatml", named) == CHATML_TEMPLATE
    with pytest.raises(ConfigError, match=r"neither chatml, one of the tokenizer's named templates \(rag, tool_use\)"):
        chat_template("rgg", named)


def test_finetune_trains_on_a_named_template_and_resumes_with_it(tmp_path):
    """A tokenizer with named templates (rag, tool_use) and none called default: finetune failed with transformers'
    advice to pass a template name, and data.chat_template=rag was refused. Unset, it now says what to do; named,
    it trains on that template, the checkpoint keeps the named ones beside it (its default), and a resume that
    names it again goes on."""
    from looplm.config import Config, ConfigError
    from looplm.train import fit

    from .hf_fixtures import name_templates, save_tiny_base, tiny_chat_tokenizer

    d = save_tiny_base(tmp_path / "m", tiny_chat_tokenizer())
    text = name_templates(d)
    data = write_jsonl(math_problems(8), tmp_path / "math.jsonl")

    def cfg(**d_kw):
        return Config.from_dict({"model": {"name_or_path": str(d)}, "data": {"source": str(data), "max_length": 256,
                                                                             **d_kw},
                                 "train": {"steps": 2, "batch_size": 2, "checkpoint_every": 1, "threads": 1}})

    with pytest.raises(ConfigError, match=r'named chat templates \(rag, tool_use\) and none called "default".* or '
                                          "choose one with data.chat_template=NAME"):
        fit(cfg(), tmp_path / "r0", progress=False)
    assert not (tmp_path / "r0").exists()
    with pytest.raises(RuntimeError, match="injected crash"):
        fit(cfg(chat_template="rag"), tmp_path / "r", progress=False, fault={"crash_at_step": 2})
    assert (tmp_path / "r" / "checkpoint" / "chat_template.jinja").read_text() == text
    assert (tmp_path / "r" / "checkpoint" / "additional_chat_templates" / "tool_use.jinja").is_file()
    fit(cfg(chat_template="rag"), tmp_path / "r", resume=True, progress=False)


def test_a_chat_template_file_that_is_a_device_or_too_long_is_refused(tmp_path):
    """A .jinja link to /dev/zero was read until memory ran out, said as "lower the batch size"; a file of any
    length was read whole."""
    from looplm.config import ConfigError
    from looplm.hf.finetune import TEMPLATE_LIMIT, chat_template

    (tmp_path / "z.jinja").symlink_to("/dev/zero")
    with pytest.raises(ConfigError, match=r"^data.chat_template: .*z\.jinja is a device, not a template file$"):
        chat_template(str(tmp_path / "z.jinja"))
    (tmp_path / "big.jinja").write_text("{{ x }}" * (TEMPLATE_LIMIT // 7 + 1))
    with pytest.raises(ConfigError, match=r"big\.jinja is longer than 1,048,576 characters, which no chat template"):
        chat_template(str(tmp_path / "big.jinja"))
    (tmp_path / "crlf.jinja").write_bytes(CHATML_TEMPLATE.encode() + b"\r\n")  # read as read_text reads it
    assert chat_template(str(tmp_path / "crlf.jinja")) == CHATML_TEMPLATE + "\n"


def test_records_whose_assistant_turns_all_have_weight_0_say_so(tmp_path):
    """Records whose only assistant turn has weight 0 (context) left nothing to learn, and the refusal said "check
    data.format and the field names", in analyze too, which has no data.format."""
    from looplm.hf.analysis import text_batch
    from looplm.hf.data import build_examples

    from .hf_fixtures import tiny_chat_tokenizer

    rec = {"messages": [{"role": "user", "content": "2+3?"}, {"role": "assistant", "content": "#### 5", "weight": 0}]}
    f = write_jsonl([rec] * 2, tmp_path / "w0.jsonl")
    said = r"2 of them have weight 0 on every assistant turn \(context, not a target\): give the turns to learn " \
        "weight 1"
    with pytest.raises(ValueError, match=r"no usable examples out of 2 records .*; " + said + "$"):
        build_examples(load_records(str(f)), tiny_chat_tokenizer(), 256)
    with pytest.raises(ValueError, match=said):  # analyze reads the records
        text_batch(tiny_chat_tokenizer(), str(f), 1)
    with pytest.raises(ValueError, match=r"check the records' shape and field names \(finetune: data.format"):
        build_examples([{"messages": [{"role": "user", "content": "hi"}]}], tiny_chat_tokenizer(), 256)
