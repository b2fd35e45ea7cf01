"""Synthetic GSM8K-style math (looplm.hf.mathdata): determinism, correct arithmetic, the held-out split, and the
local lm-eval task run through `eval_depths` with the chat template."""

import json
import operator
import re

import pytest

from looplm.hf.answers import extract_answer, gold_answer, is_correct
from looplm.hf.mathdata import is_held_out, math_problems, split, write_lm_eval_task, write_split

EQUATION = re.compile(r"(\d+) ([-+*]) (\d+) = (\d+)")
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_problems_are_deterministic_given_the_seed():
    a = math_problems(40, seed=5)
    assert a == math_problems(40, seed=5)
    assert a[:10] == math_problems(10, seed=5)  # a longer draw extends a shorter one
    assert [r["question"] for r in a] != [r["question"] for r in math_problems(40, seed=6)]
    assert len({r["question"] for r in a}) == 40


def test_every_worked_solution_is_right_and_within_bounds():
    records = math_problems(400, seed=0)
    seen_steps = set()
    for r in records:
        lines = r["answer"].split("\n")
        assert lines[-1] == f"#### {r['target']}"
        equations = [m for line in lines for m in EQUATION.finditer(line)]
        assert len(equations) == r["steps"], r["answer"]
        for m in equations:
            a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
            assert OPS[op](a, b) == c, m[0]
            assert all(0 <= x < 1000 for x in (a, b, c)) and (op != "*" or min(a, b) <= 12)
        assert int(equations[-1][4]) == int(r["target"])
        assert 1 <= r["steps"] <= 4
        seen_steps.add(r["steps"])
        assert extract_answer(r["answer"]) == r["target"] == gold_answer(r["answer"])
        assert is_correct(extract_answer(r["answer"]), r["target"])
        assert r["messages"] == [{"role": "user", "content": r["question"]},
                                 {"role": "assistant", "content": r["answer"]}]
    assert seen_steps == {1, 2, 3, 4}
    text = " ".join(r["question"] for r in records)  # every story kind shows up
    for word in ("dollars", "kilometers", "passengers", "shop", "stickers"):
        assert word in text
    assert {r["steps"] for r in math_problems(30, seed=1, steps=(2, 2))} == {2}
    for bad in ((0, 3), (3, 2), (1,), (2, 9), None, (1.9, 2.7), ("1", "2")):  # (1.9, 2.7) ran as (1, 2)
        with pytest.raises(ValueError, match="steps"):
            math_problems(3, steps=bad)
    for bad in (True, -1, 2.0, "3"):  # True made one problem
        with pytest.raises(ValueError, match="n must be a non-negative integer"):
            math_problems(bad)


def test_held_out_split_is_disjoint_and_stable(tmp_path):
    records = math_problems(300, seed=2)
    train, test = split(records)
    assert train and test and len(train) + len(test) == 300
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    assert all(is_held_out(r["question"]) for r in test) and not any(is_held_out(r["question"]) for r in train)
    for bad in (1.5, -1, True, "0.1"):  # 1.5 held out every question and -1 none, in silence
        with pytest.raises(ValueError, match=r"fraction must be a number in \[0, 1\]"):
            split(records, bad)
    tr, te = write_split(tmp_path / "a", n_train=40, n_test=12, seed=0)
    assert (tr.name, te.name) == ("train.jsonl", "test.jsonl")
    train0, test0 = read_jsonl(tr), read_jsonl(te)
    assert len(train0) == 40 and len(test0) == 12
    with pytest.raises(FileExistsError, match="already exist; pass overwrite=True"):  # its test set is kept
        write_split(tmp_path / "a", n_train=4, n_test=2, seed=5)
    tr2, te2 = write_split(tmp_path / "b", n_train=40, n_test=12, seed=0)
    assert tr2.read_bytes() == tr.read_bytes() and te2.read_bytes() == te.read_bytes()
    # The rule is a property of the question: another seed's training set never holds these test questions.
    train1 = read_jsonl(write_split(tmp_path / "c", n_train=200, n_test=0, seed=1)[0])
    assert not {r["question"] for r in train0 + train1} & {r["question"] for r in test0}
    with pytest.raises(ValueError, match="n_test"):
        write_split(tmp_path / "d", n_train=1, n_test=-1)


def test_a_split_past_the_question_space_is_refused_once_the_stream_runs_dry(tmp_path):
    """A request the question space cannot meet drew 100 times its size before it was refused (48 s for 20,000
    questions, 40 minutes for a million): it is refused once the stream stops finding new questions often enough
    to finish, however large the request. With 99.9% held out, one-step problems below 10 have a few training
    questions (the message names how many problems were drawn)."""
    for n in (1000, 10**6):
        with pytest.raises(ValueError, match="ask for fewer or widen steps") as err:
            write_split(tmp_path / "x", n_train=n, n_test=0, steps=(1, 1), max_value=10, fraction=0.999)
        drawn = int(re.search(r"drew (\d+) problems", str(err.value)).group(1))
        assert drawn <= 20_000  # (101,000 and 100,001,000 before)
    assert not (tmp_path / "x").exists()
    # a request the space can meet is met, the last questions rarer than the first
    train, _ = write_split(tmp_path / "y", n_train=500, n_test=0, steps=(1, 1), max_value=10)
    assert len(read_jsonl(train)) == 500


def test_lm_eval_task_runs_through_eval_depths_with_the_chat_template(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    pytest.importorskip("lm_eval")
    pytest.importorskip("accelerate")
    from looplm.hf.lm_eval_adapter import LoopedLM
    from looplm.hf.lm_eval_depths import eval_depths

    from .hf_fixtures import save_tiny_base, tiny_chat_tokenizer

    tok = tiny_chat_tokenizer()
    model = save_tiny_base(tmp_path / "model", tok)
    _, test = write_split(tmp_path / "data", n_train=4, n_test=3, seed=0)
    name = write_lm_eval_task(tmp_path / "tasks", test, max_gen_toks=8)
    assert name == "looplm_math"
    prompts = []
    original = LoopedLM.generate_until

    def spy(self, requests, *a, **k):
        prompts.extend(r.args[0] for r in requests)
        return original(self, requests, *a, **k)

    monkeypatch.setattr(LoopedLM, "generate_until", spy)
    res = eval_depths(str(model), [name], [1, 2], tmp_path / "eval", include_path=str(tmp_path / "tasks"),
                      limit=2, batch_size=2, apply_chat_template=True, device="cpu")
    assert [r["loops"] for r in res["rows"]] == [1, 2]
    for r in res["rows"]:
        assert 0.0 <= r["metrics"][name]["exact_match,none"] <= 1.0
    assert (tmp_path / "eval" / "eval_lm.json").is_file()
    # The prompt is the fine-tuning prompt: the question as the user turn, plus the generation prompt.
    questions = [r["question"] for r in read_jsonl(test)]
    assert len(prompts) == 4
    for p in prompts:
        assert p in {tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                             add_generation_prompt=True) for q in questions}
    with pytest.raises(ValueError, match="identifier"):
        write_lm_eval_task(tmp_path / "tasks", test, name="my-task")
    # a task edited by hand is kept unless overwrite=True (it was replaced without a word)
    edited = tmp_path / "tasks" / f"{name}.yaml"
    edited.write_text(edited.read_text() + "# my edit\n")
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        write_lm_eval_task(tmp_path / "tasks", test, max_gen_toks=8)
    assert edited.read_text().endswith("# my edit\n")
    write_lm_eval_task(tmp_path / "tasks", test, max_gen_toks=8, overwrite=True)
    assert "# my edit" not in edited.read_text()


def test_a_task_over_a_path_with_brackets_reads_that_file(tmp_path):
    """datasets reads a task's data_files as a glob: the task over `run[1]/test.jsonl` scored `run1/test.jsonl`
    (a folder beside it), or found no file at all."""
    datasets = pytest.importorskip("datasets")
    _, test = write_split(tmp_path / "run[1]", n_train=1, n_test=3, seed=0)
    write_split(tmp_path / "run1", n_train=1, n_test=2, seed=1)
    write_lm_eval_task(tmp_path / "tasks", test)
    line = next(ln for ln in (tmp_path / "tasks" / "looplm_math.yaml").read_text().splitlines()
                if ln.strip().startswith("test:"))
    ds = datasets.load_dataset("json", data_files={"test": json.loads(line.split(":", 1)[1])}, split="test",
                               cache_dir=str(tmp_path / "cache"))
    assert ds["question"] == [r["question"] for r in read_jsonl(test)]


def test_arguments_take_every_integer_and_number_kind_alike(tmp_path):
    """`math_problems` took np.int64(2) while `write_split` refused it (and a max_value np.int64(50)), a Decimal
    fraction was refused as no number, and seed -1 drew seed 1's problems (random.Random takes |seed|)."""
    from decimal import Decimal

    np = pytest.importorskip("numpy")
    tr, te = write_split(tmp_path / "a", np.int64(3), np.int64(2), seed=np.int64(1), max_value=np.int64(50),
                         fraction=Decimal("0.5"))
    assert len(read_jsonl(tr)) == 3 and len(read_jsonl(te)) == 2
    assert math_problems(np.int64(2), max_value=np.int64(50)) == math_problems(2, max_value=50)
    assert is_held_out("q", Decimal("1")) and not is_held_out("q", Decimal("0"))
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -1"):
        math_problems(1, seed=-1)
    for bad in (Decimal("NaN"), Decimal("1.5")):
        with pytest.raises(ValueError, match="fraction must be a number"):
            write_split(tmp_path / "b", 1, 1, fraction=bad)


def test_overwrite_is_a_bool_and_outputs_never_write_over_inputs(tmp_path):
    """overwrite="no" is a true value: it replaced a hand-edited split and task. With overwrite=True a test.jsonl
    that links outside the folder was written through the link, and a task given its own YAML as data replaced it
    with a task over that YAML."""
    tr, te = write_split(tmp_path / "sp", 4, 2)
    te.write_text(te.read_text() + "HAND-EDITED\n")
    with pytest.raises(ValueError, match="overwrite must be True or False, got 'no'"):
        write_split(tmp_path / "sp", 4, 2, overwrite="no")
    write_lm_eval_task(tmp_path / "tk", write_split(tmp_path / "sp2", 4, 2)[1], name="t1")
    (tmp_path / "tk" / "t1.yaml").write_text("# my task\n")
    with pytest.raises(ValueError, match="overwrite must be True or False"):
        write_lm_eval_task(tmp_path / "tk", te, name="t1", overwrite="no")
    with pytest.raises(ValueError, match="overwrite must be True or False"):  # before anything else is looked at
        write_split(tmp_path / "new", 1, 1, overwrite="false")
    assert "HAND-EDITED" in te.read_text() and (tmp_path / "tk" / "t1.yaml").read_text() == "# my task\n"
    assert not (tmp_path / "new").exists()
    # a symlinked output is replaced, not written through
    mine = tmp_path / "mine.jsonl"
    mine.write_text("MINE\n")
    (tmp_path / "p2").mkdir()
    (tmp_path / "p2" / "test.jsonl").symlink_to(mine)
    write_split(tmp_path / "p2", 2, 2, overwrite=True)
    assert mine.read_text() == "MINE\n" and not (tmp_path / "p2" / "test.jsonl").is_symlink()
    assert len(read_jsonl(tmp_path / "p2" / "test.jsonl")) == 2
    # a task's own file (or any file that is no JSONL of problems) is no data for it
    write_lm_eval_task(tmp_path / "p3", tmp_path / "p2" / "test.jsonl", name="test")
    before = (tmp_path / "p3" / "test.yaml").read_text()
    for data in ("test.yaml", "test_utils.py"):
        with pytest.raises(ValueError, match="is not a JSONL file of problems"):
            write_lm_eval_task(tmp_path / "p3", tmp_path / "p3" / data, name="test", overwrite=True)
    assert (tmp_path / "p3" / "test.yaml").read_text() == before
    (tmp_path / "p3" / "own.yaml").write_text((tmp_path / "p2" / "test.jsonl").read_text())  # problems, named so
    with pytest.raises(ValueError, match="is this task's own file"):
        write_lm_eval_task(tmp_path / "p3", tmp_path / "p3" / "own.yaml", name="own", overwrite=True)


def test_an_output_that_is_a_folder_is_refused_before_anything_is_written(tmp_path):
    """write_split(overwrite=True) with a folder at test.jsonl replaced train.jsonl, then failed with an
    IsADirectoryError naming its hidden .part file: a split half written, the earlier train file gone."""
    (tmp_path / "s1" / "test.jsonl").mkdir(parents=True)
    (tmp_path / "s1" / "train.jsonl").write_text("keep\n")
    with pytest.raises(IsADirectoryError, match=r"s1/test\.jsonl is a folder; remove it"):
        write_split(tmp_path / "s1", 5, 5, overwrite=True)
    assert (tmp_path / "s1" / "train.jsonl").read_text() == "keep\n"
    assert [p.name for p in (tmp_path / "s1").iterdir() if p.name.startswith(".")] == []
    te = write_split(tmp_path / "ok", 2, 2)[1]
    (tmp_path / "tk" / "t_utils.py").mkdir(parents=True)
    with pytest.raises(IsADirectoryError, match=r"t_utils\.py is a folder"):
        write_lm_eval_task(tmp_path / "tk", te, name="t", overwrite=True)
    assert not (tmp_path / "tk" / "t.yaml").exists()
    (tmp_path / "afile").write_text("x\n")
    with pytest.raises(NotADirectoryError, match="afile is a file, not a folder"):
        write_split(tmp_path / "afile", 2, 2)
