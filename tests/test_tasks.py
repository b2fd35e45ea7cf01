"""Every task through the CLI, on tiny data the tests write: train, sweep (one pass), generate, analyze; the
tokenizer saved with the checkpoint; the held-out splits; text perplexity and size-graded sweeps checked against
direct computation."""

import json
import math
import random

import pytest
import torch

from looplm import checkpoint as ckpt
from looplm.cli import main
from looplm.config import load_config
from looplm.evaluate import sweep
from looplm.generate import generate
from looplm.tasks import ChainTask, JsonlTask, ParityTask, task_of_checkpoint
from looplm.tasks.base import IGNORE

TINY = ["--set", "model.d_model=32", "--set", "model.d_ff=64", "--set", "model.n_heads=2", "--set", "train.steps=8",
        "--set", "train.batch_size=8", "--set", "train.eval_every=4", "--set", "train.eval_size=8",
        "--set", "loops.max_loops=4", "--set", "reg.start_step=0", "--set", "train.checkpoint_every=4",
        "--set", "train.threads=1", "--set", "data.test_size=12", "--set", "reg.rho_every=4",
        "--set", "train.log_every=1"]
WORDS = "the quick brown fox jumps over a lazy dog while seven wise owls watch".split()


def reverse_rows(n, seed=0):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        w = "".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 5)))
        rows.append({"q": w + ">", "a": w[::-1]})
    return rows


def cli(*args):
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def jsonl_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("jsonl")
    (d / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reverse_rows(300)))
    assert cli("train", "--config", "jsonl-stars", "--out", d / "run", "--no-progress", *TINY,
               "--set", f"data.path={d / 'rows.jsonl'}", "--set", "data.prompt_field=q", "--set",
               "data.answer_field=a", "--set", "model.max_seq_len=16") == 0
    return d


def test_jsonl_task_trains_sweeps_generates_and_analyzes(jsonl_run, capsys):
    d, run = jsonl_run, jsonl_run / "run"
    saved = json.loads((run / "checkpoint" / "tokenizer.json").read_text())
    assert saved == {"kind": "char", "chars": ">abcdefgh"}  # the training file's characters
    cfg = ckpt.load_config(run)
    assert cfg.model.vocab_size == 11  # model.vocab_size=0 became the task's: 9 characters + pad + end
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9)) and "acc" in rows[3] and all(r["reg"] > 0 for r in rows)
    # The hash split: disjoint prompts, and the same split in every run.
    task = task_of_checkpoint(cfg, run)
    assert not set(task.train[0]) & set(task.test[0]) and 0 < len(task.test[0]) < 50
    assert task.test == JsonlTask(str(d / "rows.jsonl"), "q", "a", seed=cfg.data.test_seed).test
    capsys.readouterr()
    assert cli("sweep", run, "--depths", "1:6", "--no-progress") == 0
    sw = json.loads((run / "sweep.json").read_text())
    assert sw["depths"] == list(range(1, 7)) and sw["n"] == min(12, len(task.test[0])) and sw["task"] == "jsonl"
    # what decides the held-out rows (a hash split of the file: not addition's seeded draw of test_size problems)
    assert sw["data"] == (f"held-out rows of {d / 'rows.jsonl'} (a hash split, data.test_fraction="
                          f"{cfg.data.test_fraction}, seed {cfg.data.test_seed})")
    assert cli("sweep", run, "--n", "300", "--out", d / "n.json", "--no-progress") == 2
    assert (f"error: --n 300: there are only {len(task.test[0])} problems in the held-out rows of "
            f"{d / 'rows.jsonl'} (a hash split, data.test_fraction={cfg.data.test_fraction}, seed "
            f"{cfg.data.test_seed})") in capsys.readouterr().err
    assert len(sw["ce"]) == 6
    # A file of one's own test rows, with the configured field names.
    (d / "mine.jsonl").write_text(json.dumps({"q": "abc>", "a": "cba"}) + "\n")
    assert cli("sweep", run, "--data", d / "mine.jsonl", "--out", d / "mine.json", "--no-progress") == 0
    assert json.loads((d / "mine.json").read_text())["n"] == 1
    assert cli("generate", run, "abc>", "hag>") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2].startswith("abc> ") and out[-1].startswith("hag> ")
    assert cli("generate", run, "abZ>") == 2
    assert "['Z']" in capsys.readouterr().err
    assert cli("analyze", run, "--depths", "1:4", "--n", "8", "--spectral-n", "2", "--iters", "20", "--no-plot",
               "--no-progress") == 0
    assert json.loads((run / "dynamics.json").read_text())["n"] == 8


def test_a_jsonl_data_file_names_the_row_it_cannot_score(jsonl_run, capsys):
    run = jsonl_run / "run"
    f = jsonl_run / "mine.jsonl"
    f.write_text(json.dumps({"q": "ab>", "a": "ba"}) + "\n" + json.dumps({"q": "a" * 20 + ">", "a": "b"}) + "\n")
    capsys.readouterr()
    assert cli("sweep", run, "--data", f, "--out", jsonl_run / "x.json", "--no-progress") == 2
    assert f"{f}:2: the prompt and answer need 22 positions" in capsys.readouterr().err
    f.write_text(json.dumps({"q": "ab>", "a": "bz!"}) + "\n")
    assert cli("sweep", run, "--data", f, "--out", jsonl_run / "x.json", "--no-progress") == 2
    assert f"{f}:1: character(s)" in capsys.readouterr().err


def test_one_pass_sweep_equals_greedy_decoding_on_a_jsonl_task(jsonl_run):
    """The teacher-forced equivalence for answers of any length: sweep's exact match at depth d is the greedy
    answer at depth d being exactly the gold."""
    run = jsonl_run / "run"
    model, cfg = ckpt.load_model(run)
    with torch.no_grad():  # a sharper model, so that answers vary (the 8-step model says one thing)
        model.tok_emb.weight.mul_(8)
    task = task_of_checkpoint(cfg, run)
    prompts, answers = task.test
    batch = task.held_out(len(prompts))
    res = sweep(model, batch, [1, 2, 3])
    for i, d in enumerate([1, 2, 3]):
        outs = generate(model, [task.tok.encode(p) for p in prompts], d, 8, task.eos_id, max_len=16)
        want = [task.tok.decode(o) == a and fin for o, a, fin in zip(outs, answers, outs.finished, strict=True)]
        assert res.correct[i].tolist() == want


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("text")
    rng = random.Random(0)
    (d / "corpus").mkdir()
    (d / "corpus" / "a.txt").write_text("\n".join(" ".join(rng.choices(WORDS, k=10)) + "." for _ in range(150)))
    (d / "corpus" / "b").write_text("\n".join(" ".join(rng.choices(WORDS, k=8)) + "!" for _ in range(80)))
    (d / "corpus" / "b.dat").write_bytes(b"\xff\x00binary index, not text")  # skipped: not a text file
    assert cli("train", "--config", "text-stars", "--out", d / "run", "--no-progress", *TINY,
               "--set", f"data.path={d / 'corpus'}", "--set", "data.window=16", "--set", "model.max_seq_len=16") == 0
    return d


def test_text_task_perplexity_per_depth_matches_a_direct_computation(text_run, capsys):
    run = text_run / "run"
    cfg = ckpt.load_config(run)
    task = task_of_checkpoint(cfg, run)
    assert task.scored_by == "perplexity" and task.vocab_size == cfg.model.vocab_size
    capsys.readouterr()
    assert cli("sweep", run, "--depths", "1:5", "--n", "6", "--no-progress") == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("ppl")
    sw = json.loads((run / "sweep.json").read_text())
    model, _ = ckpt.load_model(run)
    batch = task.held_out(6)
    assert batch.mask.all() and (batch.targets[:, :-1] == batch.input_ids[:, 1:]).all()  # every position scored
    with torch.no_grad():
        for d in (1, 3, 5):
            logits = model(batch.input_ids, d)
            ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1).double(), batch.targets.flatten())
            assert sw["ce"][d - 1] == pytest.approx(ce.item(), rel=1e-6)
            assert sw["ppl"][d - 1] == pytest.approx(math.exp(ce.item()), rel=1e-6)
    assert cli("sweep", run, "--depths", "1:3", "--exit-tol", "0.1", "--out", text_run / "x.json", "--no-progress") == 2
    assert "an exit rule is scored by exact match" in capsys.readouterr().err
    assert cli("generate", run, "the quick", "--loops", "2") == 0
    assert capsys.readouterr().out.startswith("the quick ")
    # A perplexity sweep is drawn as perplexity (not as an accuracy it lacks); mixing it with exact match is refused.
    assert cli("plot", run / "sweep.json", "--out", text_run / "ppl.png") == 0
    assert (text_run / "ppl.png").read_bytes()[:4] == b"\x89PNG"
    acc = text_run / "acc.json"
    acc.write_text(json.dumps({"depths": [1, 2], "accuracy": [0.5, 0.75], "n": 4}))
    capsys.readouterr()
    assert cli("plot", run / "sweep.json", acc, "--out", text_run / "mixed.png") == 2
    assert "cannot overlay perplexity sweeps" in capsys.readouterr().err and not (text_run / "mixed.png").exists()
    # a perplexity per character beside one per BPE piece read as one unit (sweep.json did not say which)
    assert json.loads((run / "sweep.json").read_text())["token"] == "char"
    (text_run / "bpe.json").write_text(json.dumps({**json.loads((run / "sweep.json").read_text()),
                                                   "token": "bpe:0123456789ab", "label": "bpe run"}))
    assert cli("plot", run / "sweep.json", text_run / "bpe.json", "--out", text_run / "units.png") == 2
    assert "cannot overlay perplexities per token of different tokenizers (run: char; bpe run: bpe:0123456789ab)" \
        in capsys.readouterr().err and not (text_run / "units.png").exists()
    assert cli("analyze", run, "--depths", "1:3", "--n", "4", "--spectral-n", "0", "--no-plot", "--no-progress") == 0
    dyn = json.loads((run / "dynamics.json").read_text())  # a text's score is its perplexity, per depth
    assert dyn["scored_by"] == "perplexity"
    # ... the sweep's perplexity (every token once), on a file of 3 windows and a 5-token tail: a mean of
    # per-window means would weigh the short tail like a full window
    text = text_run / "score.txt"
    text.write_text(" ".join(WORDS)[: 3 * 16 + 6])
    assert not task.load_eval(str(text), None).mask.all()
    assert cli("sweep", run, "--depths", "1:3", "--data", text, "--out", text_run / "all.json", "--no-progress") == 0
    assert cli("analyze", run, "--depths", "1:3", "--data", text, "--spectral-n", "0", "--pca-n", "0", "--no-plot",
               "--no-progress", "--out", text_run / "all") == 0
    sw_all = json.loads((text_run / "all.json").read_text())
    dyn = json.loads((text_run / "all" / "dynamics.json").read_text())
    assert sw_all["n"] == dyn["n"] == 4
    assert dyn["ppl"] == pytest.approx(sw_all["ppl"], rel=1e-9)


def test_a_text_runs_generations_and_figures_say_what_they_are(text_run, capsys, monkeypatch):
    """A text model's continuation printed its newlines raw (its answer spread over lines, the next prompt's line
    unattributable): each prompt gets one line, control characters escaped. The dynamics figure titled a text
    window's every-token entropy "on answer positions"."""
    from looplm import plots
    from looplm.cli import one_line

    run = text_run / "run"
    assert one_line("a\nb\r\\c é") == "a\\nb\\r\\\\c é"
    capsys.readouterr()
    assert cli("generate", run, "the quick", "a dog", "--loops", "2") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("the quick ") and lines[1].startswith("a dog ")
    titles = []
    monkeypatch.setattr(plots, "_save", lambda fig, out, *a, **k: titles.extend(ax.get_title() for ax in fig.axes))
    assert cli("analyze", run, "--depths", "1:2", "--n", "2", "--spectral-n", "0", "--pca-n", "0", "--no-plot",
               "--no-progress", "--out", text_run / "titled") == 0
    plots.plot_dynamics(json.loads((text_run / "titled" / "dynamics.json").read_text()), text_run / "d.png")
    assert "Next-token entropy (every token)" in titles and not any("answer" in t for t in titles)


def test_a_text_file_is_read_byte_for_byte(tmp_path):
    """CRLF and lone CR are text too: universal newlines would score another text than the file's."""
    from looplm.tasks.text import read_text

    (tmp_path / "t.txt").write_bytes(b"line one\r\nline two\rthree\n")
    assert read_text(tmp_path / "t.txt") == "line one\r\nline two\rthree\n"


def test_text_held_out_tail_is_never_trained_on(tmp_path):
    text = "".join(chr(97 + i % 26) for i in range(4000))
    (tmp_path / "t.txt").write_text(text)
    cfg = load_config("text-stars", [f"data.path={tmp_path / 't.txt'}", "data.window=8", "model.max_seq_len=8"])
    from looplm.tasks import make_task

    task = make_task(cfg)
    assert len(task.train_ids) + len(task.test_ids) == 4000 and len(task.test_ids) == 200
    g = torch.Generator().manual_seed(0)
    for _ in range(50):  # no training window reaches past the training part
        b = task.train_batch(16, g)
        assert b.input_ids.shape == (16, 8)
    # 199 next-token targets in the tail: 24 whole windows of 8 and one of 7, padded (no token left unscored)
    ho = task.held_out(100)
    assert ho.input_ids.shape == (25, 8) and int((ho.targets != IGNORE).sum()) == 199
    assert int(ho.mask[-1].sum()) == 7 and (ho.targets[-1, 7:] == IGNORE).all()
    assert torch.equal(ho.targets[ho.targets != IGNORE], task.test_ids[1:])  # every next token, in order, once
    assert task.held_out(24).input_ids.shape == (24, 8)  # fewer windows asked: whole ones only


def test_a_text_file_is_scored_to_its_last_token(text_run, capsys):
    """`sweep --data FILE` on a text run scores every next token of the file (the tail after the last whole
    window too), records how many, and gives the perplexity of a direct computation over the same windows."""
    run = text_run / "run"
    model, cfg = ckpt.load_model(run)
    task = task_of_checkpoint(cfg, run)
    text = (text_run / "corpus" / "a.txt").read_text()[:60]  # 3 windows of 16 and 11 more targets
    f = text_run / "short.txt"
    f.write_text(text)
    assert cli("sweep", run, "--data", f, "--depths", "1,3", "--out", text_run / "short.json", "--no-progress") == 0
    sw = json.loads((text_run / "short.json").read_text())
    ids = torch.tensor(task.tok.encode(text))
    assert sw["tokens"] == len(ids) - 1 == 59 and sw["n"] == 4
    with torch.no_grad():
        for k, d in enumerate((1, 3)):
            nll = 0.0
            for s in range(0, len(ids) - 1, 16):  # each window its own context, as the sweep's
                x, y = ids[s : min(s + 16, len(ids) - 1)], ids[s + 1 : min(s + 17, len(ids))]
                nll += torch.nn.functional.cross_entropy(model(x[None], d)[0].double(), y, reduction="sum").item()
            assert sw["ce"][k] == pytest.approx(nll / 59, rel=1e-6)
    capsys.readouterr()


@pytest.mark.parametrize("name", ["chain", "parity"])
def test_size_graded_tasks_sweep_by_size_and_depth(name, tmp_path, capsys):
    sizes = {"chain": "1:6", "parity": "6:12"}[name]
    assert cli("train", "--config", f"{name}-stars", "--out", tmp_path / "run", "--no-progress", *TINY,
               "--set", "model.max_seq_len=" + {"chain": "60", "parity": "32"}[name]) == 0
    capsys.readouterr()
    assert cli("sweep", tmp_path / "run", "--sizes", sizes, "--depths", "1:6", "--n", "10", "--no-progress") == 0
    out = capsys.readouterr().out
    sw = json.loads((tmp_path / "run" / "sweep.json").read_text())
    lo, hi = (int(x) for x in sizes.split(":"))
    assert sw["sizes"] == list(range(lo, hi + 1)) and len(sw["accuracy_by_size"]) == hi - lo + 1
    assert all(len(r) == 6 for r in sw["accuracy_by_size"]) and f"size {hi}" in out
    assert (tmp_path / "run" / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    # Each size's problems are held out: none of them can be drawn in training.
    cfg = ckpt.load_config(tmp_path / "run")
    task = task_of_checkpoint(cfg, tmp_path / "run")
    test_prompts = {task.tok.decode(r[:int(m.sum())].tolist()) for s in range(cfg.data.min_size, cfg.data.max_size + 1)
                    for r, m in zip(task.sized_batch(s, 20, strict=False).input_ids,
                                    task.sized_batch(s, 20, strict=False).mask, strict=True)}
    b = task.train_batch(400, torch.Generator().manual_seed(1))
    train_prompts = {task.tok.decode(r[:int(m.sum())].tolist()) for r, m in zip(b.input_ids, b.mask, strict=True)}
    prompt = {p.split("=")[0] if name == "parity" else p.rsplit("=", 1)[0] for p in test_prompts}
    assert not {p.split("=")[0] if name == "parity" else p.rsplit("=", 1)[0] for p in train_prompts} & prompt
    # Problems are distinct: parity of 6 bits has 64 strings, about a tenth held out. More than there are is
    # refused (drawn with replacement, 1,000 would score those few again and again and report 1,000); without
    # --n the sweep takes all there are and records how many.
    if name == "parity":
        few = task.sized_batch(6, 1000, strict=False)
        rows = {tuple(r.tolist()) for r in few.input_ids}
        assert len(rows) == len(few) < 64
        assert cli("sweep", tmp_path / "run", "--sizes", "6", "--n", "1000", "--out", tmp_path / "p.json",
                   "--no-progress") == 2
        assert f"only {len(few)} distinct" in capsys.readouterr().err and not (tmp_path / "p.json").exists()
        assert cli("sweep", tmp_path / "run", "--sizes", "6:7", "--out", tmp_path / "p.json", "--depths", "1",
                   "--no-progress") == 0
        res = json.loads((tmp_path / "p.json").read_text())
        assert res["n_by_size"][0] == len(few) and res["n"] == sum(res["n_by_size"])
        # the top-level curve (what `plot` draws) is over every size, weighted by its problems
        want = sum(a[0] * k for a, k in zip(res["accuracy_by_size"], res["n_by_size"], strict=True)) / res["n"]
        assert res["accuracy"][0] == pytest.approx(want)
        assert f"size 6 (n={len(few)})" in capsys.readouterr().out  # the table says a size has fewer problems
        # an exit rule is scored on one set of problems, not per size: the combination is refused, not ignored
        assert cli("sweep", tmp_path / "run", "--sizes", "6:7", "--exit-tol", "0.1", "--out", tmp_path / "x.json",
                   "--no-progress") == 2
        assert "exit rule" in capsys.readouterr().err and not (tmp_path / "x.json").exists()
        # the JSON under its heatmap's name: refused before the sweep, whatever --force says
        assert cli("sweep", tmp_path / "run", "--sizes", "6:7", "--out", tmp_path / "x.png", "--force",
                   "--no-progress") == 2
        assert "sweep writes its result as JSON" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
    # A size past the model's positions is refused with the numbers.
    big = {"chain": "8", "parity": "40"}[name]
    assert cli("sweep", tmp_path / "run", "--sizes", big, "--out", tmp_path / "b.json", "--no-progress") == 2
    assert "positions" in capsys.readouterr().err
    assert cli("analyze", tmp_path / "run", "--depths", "1:3", "--n", "4", "--spectral-n", "0", "--no-plot",
               "--no-progress") == 0


def test_characters_a_vocabulary_lacks_are_refused_not_dropped(tmp_path):
    """The char vocabulary covers the whole file, so the held-out tail's rare characters are scored; a text with
    characters the model's vocabulary lacks is refused (dropping them would score another text than the file's).
    A JSONL task's vocabulary covers its held-out rows too, so a character only they use cannot stop a run at
    its first evaluation."""
    from looplm.tasks import make_task

    text = "".join(chr(97 + i % 7) for i in range(3000)) + "xyz" * 20  # x, y, z only in the held-out tail
    (tmp_path / "t.txt").write_text(text)
    cfg = load_config("text-stars", [f"data.path={tmp_path / 't.txt'}", "data.window=8", "model.max_seq_len=8"])
    task = make_task(cfg)
    assert {"x", "y", "z"} <= set(task.tok.stoi) and len(task.train_ids) + len(task.test_ids) == len(text)
    (tmp_path / "other.txt").write_text("abcab#c" * 10 + "é")
    with pytest.raises(ValueError, match=r"11 occurrences of 2 characters the model's vocabulary lacks \('#', 'é'\)"):
        task.load_eval(str(tmp_path / "other.txt"), None)
    rows = [{"prompt": f"{i}+", "answer": str(i)} for i in range(40)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "test.jsonl").write_text(json.dumps({"prompt": "7*", "answer": "7"}) + "\n")
    jt = JsonlTask(str(tmp_path / "train.jsonl"), test_path=str(tmp_path / "test.jsonl"))
    assert "*" in jt.tok.stoi and len(jt.held_out(4)) == 1


def test_a_size_graded_split_holds_test_size_problems_where_the_sizes_allow():
    """The held-out split is data.test_size problems, as addition's: a size with fewer distinct held-out problems
    than its share gives all it has and the others take the rest; a count the split reports (a refusal's "at most
    N") is one it gives, with no problem twice. (It gave each size n / sizes, so asking for the count a refusal
    named was refused again with a smaller one, and --n above test_size was scored under test_size's name.)"""
    def prompts(b):
        return {tuple(r[m].tolist()) for r, m in zip(b.input_ids, b.mask, strict=True)}

    small = ParityTask(6, 10, 40, 1234, 32)  # sizes 6..10 hold 11, 19, 26, 55 and 100 held-out problems
    assert len(small.held_out(40)) == len(small.held_out(1000)) == 40 and len(small.held_out(7)) == 7
    assert len(prompts(small.held_out(40))) == 40
    whole = ParityTask(6, 10, 1000, 1234, 32)
    every = sum(len(whole.sized_batch(s, 1000, strict=False)) for s in range(6, 11))
    assert every == 211 and len(whole.held_out(1000)) == every and len(prompts(whole.held_out(every))) == every


def test_a_size_graded_data_file_is_checked_row_by_row(tmp_path):
    """A parity or chain --data row names its file:line when it cannot be scored, and a gold answer that is not
    the prompt's (its parity, the end of its chain) is refused: it would have been scored as given."""
    f = tmp_path / "p.jsonl"
    rows = {"ok": '{"prompt": "0110=", "answer": "0"}', "char": '{"prompt": "0120=", "answer": "1"}',
            "wrong": '{"prompt": "0111=", "answer": "0"}', "long": '{"prompt": "%s=", "answer": "0"}' % ("01" * 20)}
    parity = ParityTask(6, 8, 10, 0, 16)
    for bad, msg in (("char", "outside the vocabulary"), ("wrong", "answer '0' is wrong: '0111=' gives '1'"),
                     ("long", "need 42 positions but the model has max_seq_len=16")):
        f.write_text(rows["ok"] + "\n" + rows[bad] + "\n")
        with pytest.raises(ValueError, match=f"^{f}:2: .*" + msg.replace("(", r"\(").replace(")", r"\)")):
            parity.load_eval(str(f), None)
    f.write_text(rows["ok"] + "\n")
    assert len(parity.load_eval(str(f), None)) == 1
    f.write_text('{"prompt": "a=1;b=a;c=2;d=c;?b=", "answer": "2"}\n')
    with pytest.raises(ValueError, match="answer '2' is wrong: 'a=1;b=a;c=2;d=c;\\?b=' gives '1'"):
        ChainTask(1, 4, 10, 0, 64).load_eval(str(f), None)
    # a fact that is not `x=y`, or a letter bound twice, is no chain problem (both were scored, the junk skipped and
    # the last binding taken)
    for prompt in ("a=1;junk;?a=", "a=1;a=2;?a=", "a=1;bc=a;?a=", "a=1;b=;?a=", "a=1;?5="):
        f.write_text(json.dumps({"prompt": prompt, "answer": "1"}) + "\n")
        with pytest.raises(ValueError, match="is not a chain problem"):
            ChainTask(1, 4, 10, 0, 64).load_eval(str(f), None)


def test_special_token_names_in_text_are_text():
    """A corpus or prompt that writes "<eos>" or "<pad>" means those characters: a BPE tokenizer matched them as
    the end and padding tokens (training on ends in mid-text; decoding dropped them), as char and byte ones never
    did."""
    from looplm.tasks.tokenizers import EOS, PAD, BpeTokenizer, ByteTokenizer, from_json

    text = "the cat sat. <eos> a dog ran. <pad> ok "
    bpe = BpeTokenizer.train([text * 50], 300)
    for tok in (bpe, from_json(bpe.to_json()), ByteTokenizer()):
        ids = tok.encode(text * 3)
        assert EOS not in ids and PAD not in ids and tok.decode(ids) == text * 3


def test_task_problems_are_what_they_say():
    rng = random.Random(0)
    for _ in range(50):
        p, a = ChainTask(1, 4, 10, 0).problem(rng, 5)
        facts = dict(f.split("=") for f in p[:-3].rstrip(";").split(";"))
        q = p[-2]
        while not facts[q].isdigit():  # follow the chain
            q = facts[q]
        assert facts[q] == a and len(facts) == 12
        assert sum(v.isdigit() for v in facts.values()) == 2  # two roots: the digit alone does not answer
        bits, par = ParityTask(6, 8, 10, 0).problem(rng, 9)
        assert len(bits) == 10 and int(par) == bits.count("1") % 2


def test_jsonl_rows_may_hold_unicode_line_separators(tmp_path):
    """U+2028 is valid inside a JSON string; splitting the file on it (str.splitlines) broke such rows."""
    from looplm.tasks.jsonl import read_pairs

    f = tmp_path / "r.jsonl"
    f.write_text(json.dumps({"prompt": "ab\u2028?", "answer": "ba"}, ensure_ascii=False) + "\n"
                 + json.dumps({"prompt": "cd?", "answer": "dc"}) + "\r\n")
    assert read_pairs(f, "prompt", "answer") == (["ab\u2028?", "cd?"], ["ba", "dc"])
    # a byte-order mark before the first record (as Windows editors save UTF-8) is not part of it
    f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    assert read_pairs(f, "prompt", "answer") == (["ab\u2028?", "cd?"], ["ba", "dc"])


def test_fine_tuning_keeps_the_vocabulary_its_weights_were_trained_with(tmp_path):
    """train.init_from a jsonl run: the new data is encoded with the saved tokenizer (a vocabulary rebuilt from
    data lacking one character would shift every later id to another character, silently); data with a
    character outside it is refused before anything is written."""
    from looplm.config import ConfigError
    from looplm.train import train

    rows = [{"prompt": f"{i}*2=", "answer": str(2 * i)} for i in range(60)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r).replace("7", "8") + "\n" for r in rows))
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r).replace("7", "a") + "\n" for r in rows))
    sets = ["model.d_model=32", "model.d_ff=64", "model.n_heads=2", "train.steps=2", "train.batch_size=8",
            "train.eval_every=0", "loops.max_loops=4", "model.max_seq_len=16", "train.threads=1"]
    a = train(load_config("jsonl-stars", [*sets, f"data.path={tmp_path / 'a.jsonl'}"]), tmp_path / "A",
              progress=False)
    b = train(load_config("jsonl-stars", [*sets, f"data.path={tmp_path / 'b.jsonl'}", f"train.init_from={a}"]),
              tmp_path / "B", progress=False)
    tok = "checkpoint/tokenizer.json"
    assert (b / tok).read_text() == (a / tok).read_text() and "7" in json.loads((b / tok).read_text())["chars"]
    with pytest.raises(ConfigError, match=r"character\(s\) 'a' are not in the vocabulary of the model this run"):
        train(load_config("jsonl-stars", [*sets, f"data.path={tmp_path / 'c.jsonl'}", f"train.init_from={a}"]),
              tmp_path / "C", progress=False)
    assert not (tmp_path / "C").exists()


def test_init_from_a_run_with_another_vocabulary_is_refused(tmp_path, capsys):
    """Addition's alphabet is fixed ("0123456789+="): a run trained on the same problems as jsonl rows has the
    characters in another order ("+0123456789="), so its weights would read every token as another character."""
    rng = random.Random(0)
    pairs = [(rng.randint(1000, 9999), rng.randint(1000, 9999)) for _ in range(60)]
    rows = [{"prompt": f"{a}+{b}=", "answer": str(a + b)[::-1]} for a, b in pairs]
    (tmp_path / "add.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli("train", "--config", "jsonl-stars", "--out", tmp_path / "j", "--no-progress", *TINY,
               "--set", f"data.path={tmp_path / 'add.jsonl'}", "--set", "model.vocab_size=14") == 0
    capsys.readouterr()
    assert cli("train", "--config", "addition-prenorm-stars", "--out", tmp_path / "a", "--no-progress", *TINY,
               "--set", f"train.init_from={tmp_path / 'j'}", "--set", "model.max_seq_len=16") == 2
    err = capsys.readouterr().err
    assert "trained with another vocabulary (char '+0123456789=') than the task's (char '0123456789+=')" in err
    assert not (tmp_path / "a").exists()


def test_changed_data_files_are_found_on_resume_and_before_a_held_out_score(tmp_path, capsys):
    """The checkpoint records a digest of the rows it was trained on (data.json, in its manifest). A resume on other
    rows, or a held-out sweep whose split would come from other rows (an edited file, or a relative data.path read
    from another directory), is refused; a sweep of a file of one's own, and generation, need no training data."""
    rows = reverse_rows(80)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "run"
    args = ["--config", "jsonl-stars", "--out", run, "--no-progress", "--set", f"data.path={data}",
            "--set", "data.prompt_field=q", "--set", "data.answer_field=a", "--set", "model.max_seq_len=16"]
    assert cli("train", *args, *TINY) == 0
    assert "data.json" in json.loads((run / "checkpoint" / "manifest.json").read_text())["files"]
    assert cli("sweep", run, "--depths", "1:2", "--out", tmp_path / "s1.json", "--no-progress") == 0
    data.write_text("".join(json.dumps(r) + "\n" for r in rows[:70]))  # ten rows fewer: another split
    capsys.readouterr()
    longer = [a.replace("train.steps=8", "train.steps=12") for a in TINY]
    assert cli("train", *args, *longer, "--resume") == 2
    assert "no longer holds the data" in capsys.readouterr().err
    assert cli("sweep", run, "--depths", "1:2", "--out", tmp_path / "s2.json", "--no-progress") == 2
    assert "held-out split would not be the one training held out" in capsys.readouterr().err
    mine = tmp_path / "mine.jsonl"
    mine.write_text("".join(json.dumps(r) + "\n" for r in rows[:5]))
    assert cli("sweep", run, "--data", mine, "--depths", "1:2", "--out", tmp_path / "s3.json", "--no-progress") == 0
    assert cli("generate", run, rows[0]["q"]) == 0
    assert not (tmp_path / "s2.json").exists()
    data.unlink()  # the training file gone: a file of one's own is still scored, and generation still runs
    assert cli("sweep", run, "--data", mine, "--depths", "1:2", "--out", tmp_path / "s4.json", "--no-progress") == 0
    assert json.loads((tmp_path / "s4.json").read_text())["accuracy"] == \
        json.loads((tmp_path / "s3.json").read_text())["accuracy"]
    assert cli("generate", run, rows[0]["q"]) == 0
    assert cli("sweep", run, "--depths", "1:2", "--out", tmp_path / "s5.json", "--no-progress") == 2


def test_a_relative_data_path_read_from_elsewhere_says_where_it_was_read(tmp_path, capsys, monkeypatch):
    """A run trained with data.path=d.jsonl, swept from another directory: the message says the path is relative
    to where the run was trained (it said the file "does not exist", though it does, there)."""
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reverse_rows(80)))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    assert cli("train", "--config", "jsonl-stars", "--out", "run", "--no-progress", *TINY, "--set",
               "data.path=d.jsonl", "--set", "data.prompt_field=q", "--set", "data.answer_field=a", "--set",
               "model.max_seq_len=16") == 0
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert cli("sweep", "../run", "--depths", "1:2", "--out", "s.json", "--no-progress") == 2
    err, want = capsys.readouterr().err, f"error: data.path d.jsonl does not exist in {tmp_path / 'elsewhere'}: it "
    assert err == want + ("was moved or deleted, or the run was trained in another directory (a relative data path is "
                          "read from the working directory); restore it, or score a file of your own with --data\n")


def test_jsonl_rows_are_checked_whole_before_training(tmp_path, capsys):
    """A row too long for the positions, a test file that shares prompts with the training file, and a lone
    surrogate are refused when the task is built, with file:line, before anything is written."""
    rows = reverse_rows(60)
    base = ["--config", "jsonl-stars", "--no-progress", *TINY, "--set", "data.prompt_field=q",
            "--set", "data.answer_field=a", "--set", "model.max_seq_len=16"]
    long_rows = rows + [{"q": "a" * 20 + ">", "a": "b"}]
    (tmp_path / "long.jsonl").write_text("".join(json.dumps(r) + "\n" for r in long_rows))
    assert cli("train", *base, "--out", tmp_path / "r1", "--set", f"data.path={tmp_path / 'long.jsonl'}") == 2
    assert f"{tmp_path / 'long.jsonl'}:61: the prompt and answer need 22 positions but model.max_seq_len=16" \
        in capsys.readouterr().err
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:50]))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[45:]))
    assert cli("train", *base, "--out", tmp_path / "r2", "--set", f"data.path={tmp_path / 'train.jsonl'}",
               "--set", f"data.test_path={tmp_path / 'test.jsonl'}") == 2
    shared = sum(r["q"] in {x["q"] for x in rows[:50]} for r in rows[45:])
    assert f"data.test_path: {shared} of its 15 prompts are also training prompts" in capsys.readouterr().err
    (tmp_path / "sur.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"q": "a\\ud800>", "a": "b"}\n')
    assert cli("train", *base, "--out", tmp_path / "r3", "--set", f"data.path={tmp_path / 'sur.jsonl'}") == 2
    assert f"{tmp_path / 'sur.jsonl'}:61: field 'q' holds a lone surrogate" in capsys.readouterr().err
    assert not any((tmp_path / r).exists() for r in ("r1", "r2", "r3"))


def test_a_corpus_folder_reads_its_text_files_once_and_nothing_hidden(tmp_path):
    from looplm.tasks.text import read_text

    d = tmp_path / "corpus"
    (d / ".ipynb_checkpoints").mkdir(parents=True)
    (d / ".git").mkdir()
    (d / "sub").mkdir()
    (d / "a.txt").write_text("alpha")
    (d / ".ipynb_checkpoints" / "a-checkpoint.txt").write_text("alpha copy")
    (d / ".git" / "description").write_text("git text")
    (d / "B.TXT").write_text("BETA")
    (d / "sub" / "c.rst").write_text("gamma")
    (d / "index.dat").write_bytes(b"\xff\x00")
    (tmp_path / "shared.txt").write_text("delta")
    (d / "d.txt").symlink_to(tmp_path / "shared.txt")  # data kept elsewhere, linked in: read (it was skipped)
    (d / "z.txt").symlink_to(d / "a.txt")  # a second path to a.txt: not read twice
    (d / "y.txt").hardlink_to(d / "B.TXT")  # nor a hard link (it was: the corpus grew by a copy)
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "e.md").write_text("epsilon")
    (d / "linked").symlink_to(tmp_path / "more")  # a folder linked in: read (it was skipped)
    (d / "sub" / "up").symlink_to(d)  # a link back up: no cycle, nothing twice
    (d / "sub" / "w.txt").write_bytes(b"\xef\xbb\xbfomega")  # a byte-order mark is not text (it was a token)
    assert read_text(d) == "BETA\nalpha\ndelta\nepsilon\ngamma\nomega"
    # given directly, such a file was read as text (a .jsonl's braces and quotes became the vocabulary)
    for name, data in (("rows.jsonl", b'{"a": 1}\n'), ("packed.txt", b"\x1f\x8b\x08\x00")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=f"data file .*{name} holds data in a format the text task does not"):
            read_text(tmp_path / name)
    (d / "gone.txt").symlink_to(tmp_path / "unmounted" / "g.txt")  # data that is gone: refused, not left out
    with pytest.raises(FileNotFoundError, match="gone.txt is a symlink to .*, which does not exist"):
        read_text(d)
    (d / "gone.txt").unlink()
    # a corpus kept mostly compressed (or as records) trained on its plain-text part alone, without a word
    for name in ("more.txt.gz", "table.csv", "rows.jsonl", "old.tar", "meta.json", "x.7z", "b.br", "c.Z",
                 "corpus.part1"):
        (d / "sub" / name).write_bytes(b"\x1f\x8b\x08")
        with pytest.raises(ValueError, match=rf"holds data files looplm does not read \(sub/{name}\)"):
            read_text(d)
        (d / "sub" / name).unlink()
    assert read_text(d) == "BETA\nalpha\ndelta\nepsilon\ngamma\nomega"
    # an uncompressed tar (valid UTF-8 when its members are) was read as text, headers and NUL padding included
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        member = tarfile.TarInfo("a.txt")
        member.size = 5
        tar.addfile(member, io.BytesIO(b"hello"))
    for where in (tmp_path / "corpus.txt", d / "sub" / "shard-00001"):
        where.write_bytes(buf.getvalue())
        with pytest.raises(ValueError, match=rf"does not read \((sub/)?{where.name}\)|{where.name} holds data in a"):
            read_text(where if where.parent == tmp_path else d)
        where.unlink()


def test_text_training_evaluates_perplexity_not_exact_match(text_run, tmp_path, capsys):
    """A window is never exactly right: training-time evaluations of a text task log held-out CE and perplexity,
    and train.stop_at_acc is refused for it."""
    run = tmp_path / "run"
    flags = ["--config", "text-stars", "--no-progress", *TINY, "--set", f"data.path={text_run / 'corpus'}",
             "--set", "data.window=16", "--set", "model.max_seq_len=16"]
    assert cli("train", "--out", run, *flags) == 0
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if "eval_ce" in x]
    assert [r["step"] for r in evals] == [4, 8] and all("acc" not in r for r in evals)
    assert all(r["eval_ppl"] == pytest.approx(math.exp(r["eval_ce"])) and r["eval_tokens"] > 0 for r in evals)
    capsys.readouterr()
    assert cli("train", "--out", tmp_path / "r2", *flags, "--set", "train.stop_at_acc=0.5") == 2
    assert "train.stop_at_acc: a text task is scored by perplexity" in capsys.readouterr().err
