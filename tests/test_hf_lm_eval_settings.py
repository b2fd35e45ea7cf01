"""The lm-eval `looplm` model runs each request with the request's settings and the model_args loop settings, and
says in one line what keeps a model directory from being evaluated (a generation config, a tokenizer, a template)."""

import json
import logging
import shutil

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("lm_eval")
pytest.importorskip("accelerate")

from looplm.cli import main as cli  # noqa: E402
from looplm.errors import UserError  # noqa: E402
from looplm.hf.finetune import load_pretrained  # noqa: E402
from looplm.hf.lm_eval_adapter import LoopedLM  # noqa: E402

from .hf_fixtures import save_tiny_base, tiny_chat_tokenizer, tiny_ouro  # noqa: E402


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny_base(tmp_path_factory.mktemp("settings") / "base", tiny_chat_tokenizer())


def variant(base, tmp_path, name, file="generation_config.json", **changes):
    """A copy of the tiny base with keys of one of its JSON files changed."""
    d = tmp_path / name
    shutil.copytree(base, d)
    conf = json.loads((d / file).read_text())
    conf.update(changes)
    (d / file).write_text(json.dumps(conf))
    return d


def test_a_generation_configs_decoding_settings_are_set_aside_with_a_warning(base, tmp_path, caplog):
    """A base model's generation_config.json (copied into every fine-tune checkpoint) reached every greedy
    request: max_new_tokens cut each completion to its length, num_beams ran beam search, a repetition_penalty or
    suppress_tokens changed the tokens, while eval_lm.json recorded the task's settings; num_return_sequences=3
    returned three rows per prompt (`zip() argument 2 is shorter`), stop_strings asked for a tokenizer that
    generate() is not given."""
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]])
    plain = LoopedLM(pretrained=str(base), device="cpu", num_loops=2)._model_generate(ids, 14, [], do_sample=False)
    odd = dict(max_length=7, max_new_tokens=1, num_beams=3, num_return_sequences=3, repetition_penalty=5.0,
               suppress_tokens=[int(plain[0, 6])], stop_strings=["the"], no_repeat_ngram_size=1)
    with caplog.at_level(logging.WARNING, logger="looplm.hf.lm_eval_adapter"):
        lm = LoopedLM(pretrained=str(variant(base, tmp_path, "odd", **odd)), device="cpu", num_loops=2)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "the model's generation config sets" in said and "generates with each request's own settings" in said
    for key in odd:
        if key != "max_length":  # (lm-eval passes its own on every call: never the model's)
            assert f"{key}=" in said, key
    assert torch.equal(lm._model_generate(ids, 14, [], do_sample=False), plain)
    assert lm.model.generation_config.num_beams == 3  # set aside for the call only
    # a request's own settings still apply
    assert not torch.equal(lm._model_generate(ids, 14, [], do_sample=False, repetition_penalty=5.0), plain)


def test_an_ouro_configs_stray_num_loops_is_not_the_default_depth(base, tmp_path):
    """A `num_loops` key in an Ouro config.json was the looplm model's depth when model_args gave none, while the
    model ran total_ut_steps: requests ran 1 loop where the model runs 4. Since round 46 Ouro reads num_loops as
    total_ut_steps, and a config.json where the two disagree is refused, naming the file."""
    with pytest.raises(UserError, match=r"config.json: num_loops=1 and total_ut_steps=4 disagree"):
        LoopedLM(pretrained=str(variant(base, tmp_path, "nl", "config.json", num_loops=1)), device="cpu")
    lm = LoopedLM(pretrained=str(variant(base, tmp_path, "nl4", "config.json", num_loops=4)), device="cpu")
    assert lm._loop_kwargs()["num_loops"] == lm.model.config.total_ut_steps == 4
    ids = torch.tensor([[5, 6, 7]])
    assert torch.equal(lm._model_call(ids), lm.model(ids).logits)


def test_a_string_token_id_in_a_generation_config_is_one_line(base, tmp_path, capsys):
    """`"eos_token_id": "0"` in generation_config.json was a TypeError traceback inside generate() (eval-lm) and
    in a fine-tune's setup (sorting the end-of-turn ids); every loader now refuses it, naming the file."""
    d = variant(base, tmp_path, "g_str", eos_token_id="0")
    for bad in ("0", 320, True, [0, -1]):
        (d / "generation_config.json").write_text(json.dumps({"eos_token_id": bad}))
        with pytest.raises(UserError, match=r"generation_config.json: eos_token_id must be null or a token id in "
                                            r"\[0, 320\), got"):
            load_pretrained(str(d))
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(f"model: {{name_or_path: {d}}}\ndata: {{source: {tmp_path}/c.jsonl}}\ntrain: {{steps: 1}}\n")
    (tmp_path / "c.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "1+1"},
                                                               {"role": "assistant", "content": "2"}]}) + "\n")
    assert cli(["finetune", "--config", str(cfg), "--out", str(tmp_path / "ft"), "--no-progress"]) == 2
    assert "generation_config.json: eos_token_id must be null" in capsys.readouterr().err
    assert not (tmp_path / "ft").exists()


def test_a_tokenizer_with_nothing_to_pad_with_is_said_so(base, tmp_path):
    """A tokenizer with no pad, eos or unk token gets a `<|pad|>` from lm-eval, past the embedding: the refusal
    said the model's own 320-token tokenizer had 321 tokens, and to give the model's own tokenizer."""
    d = variant(base, tmp_path, "nopad", "tokenizer_config.json", bos_token=None, eos_token=None, pad_token=None)
    with pytest.raises(UserError, match="the tokenizer has neither a pad, an eos nor an unk token to pad with"):
        LoopedLM(pretrained=str(d), device="cpu")
    # an embedding with rows to spare takes lm-eval's pad token: evaluated as before
    tiny_ouro(330).save_pretrained(d)
    assert LoopedLM(pretrained=str(d), device="cpu").tokenizer.pad_token == "<|pad|>"


def test_a_model_without_a_chat_template_is_named(base, tmp_path, capsys):
    """--apply-chat-template on a model with no chat template was transformers' paragraph (no model named, no
    way out); eval-lm says it before reading any task, and the looplm model in lm-eval's own command line says it
    too; analyze said the template "fails to render"."""
    d = tmp_path / "nochat"
    shutil.copytree(base, d)
    (d / "chat_template.jinja").unlink()
    capsys.readouterr()
    assert cli(["eval-lm", str(d), "--tasks", "no_such_task", "--depths", "1", "--device", "cpu",
                "--apply-chat-template", "--out", str(tmp_path / "e")]) == 2
    assert f"error: {d}: its tokenizer has no chat template; run without --apply-chat-template" in \
        capsys.readouterr().err
    with pytest.raises(UserError, match=f"^{d}: its tokenizer has no chat template; run without --apply_chat_template"):
        LoopedLM(pretrained=str(d), device="cpu").apply_chat_template([{"role": "user", "content": "hi"}])
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "1+1", "answer": "2"}) + "\n")
    assert cli(["analyze", str(d), "--data", str(data), "--depths", "1:2", "--no-progress", "--no-plot",
                "--out", str(tmp_path / "a")]) == 2
    assert f"{d}: its tokenizer has no chat template" in capsys.readouterr().err


def test_a_model_directorys_bad_generation_config_is_one_line_naming_it(base, tmp_path):
    """A list pad_token_id / bos_token_id passed the token-id check (only eos may be a list) and was a TypeError
    traceback in transformers' generation-config checks; a value transformers refuses (max_new_tokens -5) was
    its message alone, with no file named (eval-lm has its own --max-gen-toks, so a user looked there)."""
    for name, file, key, bad, msg in (
            ("gpad", "generation_config.json", "pad_token_id", [0, 2], r"pad_token_id must be null or a token id "
             r"in \[0, 320\), got \[0, 2\]; only eos_token_id may be a list"),
            ("gbos", "generation_config.json", "bos_token_id", [0], "bos_token_id must be null or a token id"),
            ("cpad", "config.json", "pad_token_id", [0, 2], r"pad_token_id .*; only eos_token_id may be a list"),
            ("gmax", "generation_config.json", "max_new_tokens", -5, "max_new_tokens must be greater than 0")):
        d = variant(base, tmp_path, name, file, **{key: bad})
        if file == "config.json":
            (d / "generation_config.json").unlink()
        with pytest.raises(UserError, match=rf"^{d / file}: {msg}"):
            load_pretrained(str(d))
    assert load_pretrained(str(variant(base, tmp_path, "eos", eos_token_id=[0, 2]))) is not None
    # a cut-off file was read as absent: a fine-tune's end-of-turn eos [0, 2] was lost without a word
    d = variant(base, tmp_path, "cut", eos_token_id=[0, 2])
    (d / "generation_config.json").write_text('{"eos_token_id": [0, 2], ')
    with pytest.raises(UserError, match=rf"^{d / 'generation_config.json'}: not valid JSON"):
        load_pretrained(str(d))


def test_config_and_tokenizer_values_transformers_cannot_use_are_one_line(base, tmp_path):
    """A config.json layer_types / mlp_layer_types entry transformers' validator refuses raised huggingface_hub's
    StrictDataclassClassValidationError (no ValueError): a traceback in eval-lm, analyze and finetune; so was a
    string model_max_length in tokenizer_config.json, compared with the length of every encoding."""
    from looplm.hf.finetune import load_tokenizer

    for key, bad, msg in (("layer_types", ["full_attention"], r"num_hidden_layers \(2\) must be equal to the number "
                                                              r"of layer_types \(1\)"),
                          # (looplm's own check, since sliding_attention is no option either)
                          ("layer_types", ["full_attention", "bogus"], r"layer_types must say \"full_attention\" for "
                                                                       r"every layer"),
                          ("mlp_layer_types", ["dense"], "number of mlp_layer_types")):
        d = variant(base, tmp_path, f"{key}{len(bad)}", "config.json", **{key: bad})
        with pytest.raises(UserError, match=rf"^{d / 'config.json'}: .*{msg}"):
            load_pretrained(str(d))
    for i, bad in enumerate(("abc", [512], True)):
        d = variant(base, tmp_path, f"mml{i}", "tokenizer_config.json", model_max_length=bad)
        with pytest.raises(UserError, match=rf"^{d / 'tokenizer_config.json'}: model_max_length must be an integer"):
            load_tokenizer(str(d))
    assert load_tokenizer(str(variant(base, tmp_path, "mml", "tokenizer_config.json", model_max_length=64)))


def test_num_loops_with_a_space_and_the_tokenizer_hint_of_eval_lm(base, tmp_path, capsys):
    """lm-eval parses `num_loops= 3` to 3.0, refused as "got 3.0" (a value never typed); eval-lm's refusal of a
    tokenizer larger than the embedding told it to give model_args tokenizer=..., which eval-lm has not."""
    assert LoopedLM(pretrained=str(base), device="cpu", num_loops=3.0).num_loops == 3
    with pytest.raises(UserError, match="num_loops must be an integer >= 1, got 2.5"):
        LoopedLM(pretrained=str(base), device="cpu", num_loops=2.5)
    d = variant(base, tmp_path, "pad", "tokenizer_config.json", pad_token="<|nonexistent|>")
    capsys.readouterr()
    assert cli(["eval-lm", str(d), "--tasks", "x", "--depths", "1", "--device", "cpu", "--out",
                str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "embedding has 320 rows; the model directory's tokenizer and weights are of two models, or its " \
           "tokenizer_config.json adds a token its vocabulary lacks" in err and "model_args" not in err


def test_a_chat_template_that_drops_the_question_or_the_system_turn_is_refused(base, tmp_path, capsys):
    """eval-lm --apply-chat-template (and the looplm model in lm-eval's command line) scored every task on prompts
    whose question the model's template dropped (the prompt was `<|im_start|>assistant\\n`), where finetune and
    analyze refuse that template; a system turn (a task's description) dropped in silence too. A template that
    raises on a system turn is left to lm-eval, which renders the prompt again without it."""
    d = tmp_path / "drop"
    shutil.copytree(base, d)
    only = ("{% for m in messages %}{% if m.role in ROLES %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
            "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    (d / "chat_template.jinja").write_text(only.replace("ROLES", "['assistant']"))
    capsys.readouterr()
    assert cli(["eval-lm", str(d), "--tasks", "no_such_task", "--depths", "1", "--device", "cpu",
                "--apply-chat-template", "--out", str(tmp_path / "e")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {d}: its chat template cannot be used: the chat template drops the user turn ('the question' is not "
        "in the conversation it renders), so the model would read the conversation without it; evaluate without the "
        "chat template, or give the model one that writes that turn (chat_template.jinja in the model directory)")
    assert not (tmp_path / "e").exists()
    lm = LoopedLM(pretrained=str(d), device="cpu")
    with pytest.raises(UserError, match=r"drops the user turn \('What is 2\+3\?' is not in"):
        lm.apply_chat_template([{"role": "user", "content": "What is 2+3?"}])
    (d / "chat_template.jinja").write_text(only.replace("ROLES", "['user', 'assistant']"))
    lm = LoopedLM(pretrained=str(d), device="cpu")
    assert "2+3" in lm.apply_chat_template([{"role": "user", "content": "What is 2+3?"}])
    with pytest.raises(UserError, match=r"drops the system turn \('Answer briefly.' is not in"):
        lm.apply_chat_template([{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "2+3?"}])
    (d / "chat_template.jinja").write_text("{% if messages[0].role == 'system' %}{{ raise_exception('no system') }}"
                                           "{% endif %}" + only.replace("ROLES", "['user', 'assistant']"))
    lm = LoopedLM(pretrained=str(d), device="cpu")
    assert lm.apply_chat_template([{"role": "system", "content": "Answer briefly."},
                                   {"role": "user", "content": "2+3?"}]) == "<|im_start|>user\n2+3?<|im_end|>\n" \
                                                                             "<|im_start|>assistant\n"


def test_a_chat_template_that_raises_a_python_error_is_one_line_naming_the_model(base, tmp_path, capsys):
    """The looplm model caught only Jinja's own error type: a template's plain Python error at run time
    (`m.content + 1`: TypeError) was a traceback in eval-lm --apply-chat-template and in lm-eval's command line
    (analyze and finetune said it in one line); and the adapter's refusals named no model ("its chat template")."""
    from .hf_fixtures import math_problems, write_jsonl, write_lm_eval_tasks

    d = tmp_path / "typed"
    shutil.copytree(base, d)
    (d / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] + 1 }}{% endfor %}")
    said = rf"{d}: its chat template cannot be used \(TypeError: can only concatenate str \(not \"int\"\) to str\)"
    with pytest.raises(UserError, match=rf"^{said}$"):
        LoopedLM(pretrained=str(d), device="cpu").apply_chat_template([{"role": "user", "content": "hi"}])
    write_lm_eval_tasks(tmp_path / "tasks", write_jsonl(math_problems(2), tmp_path / "m.jsonl"), max_gen_toks=4)
    capsys.readouterr()
    assert cli(["eval-lm", str(d), "--tasks", "tiny_math_gen", "--include-path", str(tmp_path / "tasks"), "--limit",
                "1", "--depths", "1", "--device", "cpu", "--apply-chat-template", "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"error: {said.replace(chr(92), '')}" and "Traceback" not in err
    assert not (tmp_path / "e").exists()


def test_a_tokenizer_file_that_is_no_utf8_is_named(base, tmp_path, capsys):
    """A leading 0xff byte in chat_template.jinja, tokenizer.json or tokenizer_config.json was the codec's bare
    "'utf-8' codec can't decode byte 0xff", naming neither the model folder nor the file."""
    from looplm.hf.finetune import load_tokenizer

    for name in ("chat_template.jinja", "tokenizer.json", "tokenizer_config.json"):
        d = tmp_path / name.split(".")[0]
        shutil.copytree(base, d)
        (d / name).write_bytes(b"\xff\xfe\x00{{")
        with pytest.raises(UserError, match=rf"^{d}: its tokenizer files are not valid UTF-8 \({name}: byte 0xff at "
                                            r"offset 0, line 1\)$"):
            load_tokenizer(str(d))
    capsys.readouterr()
    assert cli(["eval-lm", str(d), "--tasks", "x", "--depths", "1", "--device", "cpu", "--out",
                str(tmp_path / "e")]) == 2
    assert capsys.readouterr().err == (f"error: {d}: its tokenizer files are not valid UTF-8 (tokenizer_config.json: "
                                       "byte 0xff at offset 0, line 1)\n")


def test_a_file_beside_the_tokenizers_is_not_named_as_the_bad_one(base, tmp_path):
    """A Latin-1 LICENSE.txt beside a tokenizer_config.json that is not UTF-8 was named as the file at fault (the
    first bad .txt/.json of the folder, one transformers never reads)."""
    from looplm.hf.finetune import load_tokenizer

    d = tmp_path / "m"
    shutil.copytree(base, d)
    (d / "LICENSE.txt").write_bytes("Copyright \u00a9 2025".encode("latin-1"))
    (d / "tokenizer_config.json").write_bytes(b"\xff\xfe\x00{{")
    with pytest.raises(UserError, match=r"\(tokenizer_config\.json: byte 0xff at offset 0, line 1\)$"):
        load_tokenizer(str(d))
