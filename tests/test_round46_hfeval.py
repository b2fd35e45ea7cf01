"""Round 46, HF eval (probe round 44): a model whose tokenizer has no eos token (a BERT/WordPiece-style one) was
lm-eval's TypeError traceback on every task kind, two task YAMLs naming one task scored one of them without a word,
and `looplm plot` on eval_lm.json said it was neither a sweep.json nor a dynamics.json."""

import json
import logging
import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("transformers")
pytest.importorskip("lm_eval")

from looplm.errors import UserError  # noqa: E402

from . import hf_fixtures as hfx  # noqa: E402
from .test_round39_hfeval import ROLLING  # noqa: E402  (a rolling log-likelihood task: tiny_roll)


def _set_json(path, **values):
    doc = json.loads(path.read_text())
    doc.update(values)
    path.write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    """`wpm`: a tiny Ouro base whose WordPiece tokenizer has [CLS]/[SEP] and no eos token (its generation config:
    eos_token_id 3, [SEP]); `wpe`: the same model whose tokenizer names [SEP] its eos token; `wpn`: the same with no
    eos id anywhere. Tasks: generation and multiple choice over math problems, and a rolling log-likelihood."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    d = tmp_path_factory.mktemp("r46")
    rows = hfx.math_problems(6)
    data = hfx.write_jsonl(rows, d / "m.jsonl")
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator([r["question"] + " " + r["answer"] for r in rows], vocab_size=300, show_progress=False,
                           special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    os.makedirs(d / "wp")
    wp.save_model(str(d / "wp"))
    tok = BertTokenizerFast(str(d / "wp" / "vocab.txt"), do_lower_case=True)
    tok.chat_template = ("{% for m in messages %}[CLS] {{ m['role'] }}: {{ m['content'] }} [SEP]{% endfor %}"
                         "{% if add_generation_prompt %}[CLS] assistant:{% endif %}")
    assert tok.eos_token_id is None
    wpm = hfx.save_tiny_base(d / "wpm", tok, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    shutil.copytree(wpm, d / "wpe")
    _set_json(d / "wpe" / "tokenizer_config.json", eos_token="[SEP]")
    shutil.copytree(wpm, d / "wpn")
    for f in ("config.json", "generation_config.json"):
        _set_json(d / "wpn" / f, eos_token_id=None)
    hfx.write_lm_eval_tasks(d / "tasks", data, max_gen_toks=4)
    (d / "tasks" / "tiny_roll.yaml").write_text(ROLLING.format(data=data))
    return {"dir": d, "wpm": wpm, "wpe": d / "wpe", "wpn": d / "wpn", "tasks": d / "tasks"}


TASKS = ["tiny_math_gen", "tiny_math_mc", "tiny_roll"]


def test_no_eos_token_takes_the_models_eos_id_and_scores_as_with_it(fx, tmp_path, caplog):
    """Generation, log-likelihood and rolling tasks were lm-eval's TypeError ('None' is not an instance of
    'Sequence'); now they run, with a note, and score as the tokenizer that names [SEP] its eos token."""
    from looplm.hf.lm_eval_depths import eval_depths

    kw = {"include_path": str(fx["tasks"]), "limit": 3, "batch_size": 1, "device": "cpu"}
    with caplog.at_level(logging.WARNING):
        got = eval_depths(str(fx["wpm"]), TASKS, [1, 3], tmp_path / "m", **kw)
    assert "no eos_token" in caplog.text and "eos_token_id 3 ('[SEP]')" in caplog.text
    want = eval_depths(str(fx["wpe"]), TASKS, [1, 3], tmp_path / "e", **kw)
    assert got["rows"] == want["rows"]
    assert set(got["rows"][0]["metrics"]) == set(TASKS)
    assert got["rows"][0]["metrics"]["tiny_roll"] != got["rows"][1]["metrics"]["tiny_roll"]  # (the depths differ)


def test_no_eos_token_generates_as_with_it(fx):
    """The completions themselves (stopped on [SEP], the model's eos) equal those of the tokenizer with eos."""
    from lm_eval.api.instance import Instance

    from looplm.hf.lm_eval_adapter import LoopedLM

    def run(path):
        lm = LoopedLM.create_from_arg_string(f"pretrained={path},num_loops=2", {"device": "cpu", "batch_size": 1})
        reqs = [Instance("generate_until", {}, (f"question: what is {i} + 2? answer:",
                                                {"until": ["question:"], "max_gen_toks": 6, "do_sample": False}), i)
                for i in range(3)]
        return lm.eot_token_id, lm.prefix_token_id, lm.generate_until(reqs)

    assert run(fx["wpm"]) == run(fx["wpe"])
    assert run(fx["wpm"])[:2] == (3, 3)


def test_no_eos_anywhere_is_one_line_naming_where_to_set_it(fx, tmp_path, capsys):
    from looplm.cli import main
    from looplm.hf.lm_eval_depths import eval_depths

    for task in ("tiny_math_mc", "tiny_math_gen"):
        with pytest.raises(UserError, match="has no end-of-text token.*eos_token in tokenizer_config.json"):
            eval_depths(str(fx["wpn"]), [task], [1], tmp_path / "e", include_path=str(fx["tasks"]), limit=1,
                        batch_size=1, device="cpu")
    capsys.readouterr()
    rc = main(["eval-lm", str(fx["wpn"]), "--tasks", "tiny_roll", "--include-path", str(fx["tasks"]), "--depths",
               "1", "--limit", "1", "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 2 and "error: " in err and "eos_token_id in generation_config.json" in err
    assert "Traceback" not in err and not (tmp_path / "c").exists()


def test_adapter_command_line_runs_a_model_without_eos_token(fx):
    from .helpers import ENV

    env = {**ENV, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-m", "looplm.hf.lm_eval_adapter", "run", "--model", "looplm", "--model_args",
                        f"pretrained={fx['wpm']},num_loops=1", "--tasks", "tiny_math_mc", "--include_path",
                        str(fx["tasks"]), "--limit", "1", "--device", "cpu"], capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "tiny_math_mc" in p.stdout and "Traceback" not in p.stderr


def test_two_task_files_naming_one_task_are_refused(fx, tmp_path, capsys):
    """lm-eval's index kept the second file's task and scored it alone (a log line the only sign)."""
    from looplm.cli import main
    from looplm.hf.lm_eval_depths import _task_files

    other = tmp_path / "other"
    shutil.copytree(fx["tasks"], other)
    one, two = fx["tasks"] / "tiny_math_mc.yaml", other / "tiny_math_mc.yaml"
    with pytest.raises(UserError, match=f"{one} and {two} both name the task tiny_math_mc"):
        _task_files([str(one), str(two)])
    # one file given twice (two spellings of its path) is one task
    assert _task_files([str(one), str(fx["tasks"] / "." / "tiny_math_mc.yaml")])[0] == ["tiny_math_mc"]
    capsys.readouterr()
    rc = main(["eval-lm", str(fx["wpe"]), "--tasks", f"{one},{two}", "--depths", "1", "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert rc == 2 and "both name the task tiny_math_mc" in err and not (tmp_path / "e").exists()


def test_plot_of_eval_lm_json_names_its_figure(tmp_path, capsys):
    from looplm.cli import main

    (tmp_path / "ev").mkdir()
    doc = {"model": "m", "tasks": ["x"], "depths": [1, 2], "rows": [{"loops": 1, "metrics": {}}], "table": "| |"}
    (tmp_path / "ev" / "eval_lm.json").write_text(json.dumps(doc))
    capsys.readouterr()
    rc = main(["plot", str(tmp_path / "ev" / "eval_lm.json"), "--out", str(tmp_path / "p.png")])
    err = capsys.readouterr().err
    assert rc == 2 and "eval-lm's result" in err and str(tmp_path / "ev" / "eval_lm.png") in err
    assert "neither a sweep.json" not in err and not (tmp_path / "p.png").exists()
