"""lm-eval at any loop count (looplm.hf.lm_eval_adapter) on a tiny Ouro model and local tasks."""

import functools
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("lm_eval")
pytest.importorskip("accelerate")

import lm_eval  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from looplm.cli import main as cli  # noqa: E402
from looplm.hf.lm_eval_adapter import LoopedLM  # noqa: E402

from .hf_fixtures import (  # noqa: E402
    math_problems,
    name_templates,
    tiny_chat_tokenizer,
    tiny_ouro,
    write_jsonl,
    write_lm_eval_tasks,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("lmeval")
    tok = tiny_chat_tokenizer()
    tiny_ouro(len(tok), max_position_embeddings=256).save_pretrained(d / "model")
    tok.save_pretrained(d / "model")
    tasks = write_lm_eval_tasks(d / "tasks", write_jsonl(math_problems(5), d / "math.jsonl"), max_gen_toks=6)
    return d, tasks


def task_variant(tasks: Path, task: str, folder: Path, name: str, *changes: tuple[str, str]) -> None:
    """A copy of fixture task `task` as task `name` in `folder` (with its scoring module), its YAML text changed
    by each (old, new) of `changes`."""
    folder.mkdir(exist_ok=True)
    yaml = (tasks / f"{task}.yaml").read_text().replace(f"task: {task}", f"task: {name}")
    for old, new in changes:
        yaml = yaml.replace(old, new)
    (folder / f"{name}.yaml").write_text(yaml)
    for f in tasks.glob("*.py"):
        (folder / f.name).write_text(f.read_text())


def test_model_args_the_looplm_model_cannot_honour_are_refused(setup, tmp_path, capsys):
    """A LoRA adapter, a GGUF file or a misspelt num_loops was dropped without a word (looplm loads the model
    itself), and num_loops=2.5 ran 2 loops; each is refused before the model loads. lm-eval's own command line
    through `python -m looplm.hf.lm_eval_adapter` says a refusal in one `error:` line."""
    import os
    import subprocess
    import sys

    from looplm.errors import UserError

    d, (_, mc_task) = setup
    for bad, msg in ((dict(peft="/nope"), "peft: looplm loads the model itself"),
                     (dict(gguf_file="m.gguf"), "gguf_file"), (dict(num_loop=3), "num_loop: not a setting"),
                     (dict(num_loops=2.5), "num_loops must be an integer"), (dict(num_loops="2.9"), "integer"),
                     (dict(num_loops=0), "num_loops must be >= 1")):
        with pytest.raises(UserError, match=msg):
            LoopedLM(pretrained=str(d / "nonexistent"), device="cpu", **bad)  # refused before any load
    assert LoopedLM(pretrained=str(d / "model"), device="cpu", num_loops="3", peft=None).num_loops == 3
    # backend=seq2seq scored continuations against the wrong positions; a tokenizer larger than the embedding
    # failed with an IndexError inside the first request; a missing tokenizer folder got a hub repo-id message
    tiny_chat_tokenizer(vocab_size=600).save_pretrained(tmp_path / "tok600")
    for bad, msg in ((dict(backend="seq2seq"), "backend=seq2seq: the looplm model is a causal LM"),
                     (dict(tokenizer=str(tmp_path / "tok600")), r"has 542 tokens but the model's embedding has \d+"),
                     (dict(tokenizer=str(tmp_path / "none")), "none: no such tokenizer folder")):
        with pytest.raises(UserError, match=msg):
            LoopedLM(pretrained=str(d / "model"), device="cpu", **bad)
    # a device torch cannot use was its traceback (cuda on a machine without it runs on the CPU, as lm-eval's hf)
    for device in ("mps", "CPU", "meta"):
        with pytest.raises(UserError, match=f"unknown device '{device}'"):
            LoopedLM(pretrained=str(d / "model"), device=device)
    # device= or batch_size= in model_args beside lm-eval's own (its command line always passes both): one line
    with pytest.raises(UserError, match="model_args device=cpu: lm-eval's command line passes device itself"):
        LoopedLM.create_from_arg_string(f"pretrained={d / 'model'},device=cpu", {"device": "cuda:0", "batch_size": 1})
    with pytest.raises(UserError, match="model_args num_loops given twice"):  # lm-eval's parser kept the last
        LoopedLM.create_from_arg_string(f"pretrained={d / 'model'},num_loops=2,num_loops=8", {})
    # a task whose data file is empty (write_split(n_test=0)), holds only blank lines (datasets' own wording, naming
    # neither task nor file) or is not JSON Lines: one line, not datasets' traceback
    for name, text in (("empty", ""), ("blank", "  \n\t\n")):
        (tmp_path / "et").mkdir(exist_ok=True)
        (tmp_path / "et" / f"{name}.jsonl").write_text(text)
        task_variant(d / "tasks", mc_task, tmp_path / "et", f"et_{name}",
                     (str(d / "math.jsonl"), str(tmp_path / "et" / f"{name}.jsonl")))
    for name in ("empty", "blank"):
        capsys.readouterr()
        assert cli(["eval-lm", str(d / "model"), "--tasks", f"et_{name}", "--include-path", str(tmp_path / "et"),
                    "--depths", "1", "--device", "cpu", "--out", str(tmp_path / "ev-empty")]) == 2
        assert [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")] == [
            f"error: et_{name}: a task's data cannot be read (it holds no records); check its data files"]
    # a generation budget past the user's own max_length names that, not the model's positions
    gen_task = setup[1][0]
    lm = LoopedLM(pretrained=str(d / "model"), device="cpu", max_length=4)
    with pytest.raises(UserError, match="does not fit model_args max_length=4"):
        lm_eval.simple_evaluate(model=lm, tasks=[gen_task], limit=1, log_samples=False, bootstrap_iters=0,
                                task_manager=TaskManager(include_path=str(d / "tasks"), include_defaults=False))
    # lm-eval's own command line: remote code; a task whose data file is empty (datasets' traceback before); a
    # model_args key given twice (the last one was taken)
    model = f"pretrained={d / 'model'}"
    (tmp_path / "c.yaml").write_text(f"model_args:\n  pretrained: {d / 'model'}\n  num_loops: 1\n")
    (tmp_path / "c2.yaml").write_text(f"model: looplm\nmodel_args: pretrained={d / 'model'},num_loops=2,num_loops=8\n")
    for args, task, tasks, msg in ((["--model_args", f"{model},trust_remote_code=True"], mc_task, d / "tasks",
                                    "trust_remote_code=True is not supported"),
                                   (["--model_args", model], "et_empty", tmp_path / "et",
                                    "--tasks: a task's data cannot be read"),
                                   # lm-eval's parser merges model_args into a dict, keeping the last of a key:
                                   # in one value, in a JSON object, across an abbreviated option and a JSON one
                                   (["--model_args", f"{model},num_loops=2,num_loops=3"], mc_task, d / "tasks",
                                    "model_args num_loops given twice"),
                                   (["--model_ar", f"{model},num_loops=2", "-a", '{"num_loops": 3}'], mc_task,
                                    d / "tasks", "model_args num_loops given twice"),
                                   # a --config file's model_args were dropped whole beside --model_args
                                   (["--config", str(tmp_path / "c.yaml"), "--model_args", model], mc_task,
                                    d / "tasks", "model_args given both in --config"),
                                   (["--model_args", "num_loops=2"], mc_task, d / "tasks",  # a TypeError
                                    "model_args has no pretrained=..."),
                                   # a key twice in a --config file's model_args string: lm-eval kept the last
                                   (["--config", str(tmp_path / "c2.yaml")], mc_task, d / "tasks",
                                    "model_args num_loops given twice")):
        r = subprocess.run([sys.executable, "-m", "looplm.hf.lm_eval_adapter", "run", "--model", "looplm", *args,
                            "--tasks", task, "--include_path", str(tasks), "--device", "cpu"],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path,
                           env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
        assert r.returncode == 2 and "Traceback" not in r.stderr and len(errors) == 1, r.stderr[-2000:]
        assert msg in errors[0]


def test_num_loops_reaches_every_forward_and_generate_call(setup):
    d, (gen_task, mc_task) = setup
    lm = LoopedLM(pretrained=str(d / "model"), num_loops=3, device="cpu", dtype="float32", batch_size=2)
    seen = []
    fwd = lm.model.forward

    @functools.wraps(fwd)  # generate() checks its kwargs against forward's signature
    def spy(*a, **k):
        seen.append(k.get("num_loops"))
        return fwd(*a, **k)

    lm.model.forward = spy
    tm = TaskManager(include_path=str(d / "tasks"), include_defaults=False)
    res = lm_eval.simple_evaluate(model=lm, tasks=[gen_task, mc_task], limit=2, task_manager=tm, log_samples=False,
                                  bootstrap_iters=0)
    assert seen and set(seen) == {3}  # log-likelihood calls and every generate() step
    assert 0.0 <= res["results"][mc_task]["acc,none"] <= 1.0
    assert 0.0 <= res["results"][gen_task]["exact_match,none"] <= 1.0
    # Loop count changes the scores the harness sees: log-likelihoods at 1 and 4 loops differ.
    req = [("Question: 2+2?\nAnswer:", " 4")]
    lm.model.forward = fwd
    lls = []
    for n in (1, 4):
        lm.num_loops = n
        lls.append(lm.loglikelihood([type("R", (), {"args": r})() for r in req])[0][0])
    assert lls[0] != pytest.approx(lls[1])


def test_registered_name_and_model_args_and_the_eval_lm_command(setup, tmp_path, capsys):
    d, (_, mc_task) = setup
    tm = TaskManager(include_path=str(d / "tasks"), include_defaults=False)
    res = lm_eval.simple_evaluate(model="looplm", model_args=f"pretrained={d / 'model'},num_loops=2,device=cpu,"
                                  "dtype=float32", tasks=[mc_task], limit=2, task_manager=tm, log_samples=False,
                                  bootstrap_iters=0)
    assert "acc,none" in res["results"][mc_task]
    capsys.readouterr()
    assert cli(["eval-lm", str(d / "model"), "--tasks", mc_task, "--depths", "1,3", "--include-path",
                str(d / "tasks"), "--limit", "2", "--device", "cpu", "--out", str(tmp_path / "cli")]) == 0
    assert "| 3 |" in capsys.readouterr().out
    assert (tmp_path / "cli" / "eval_lm.md").is_file()
    counts = json.loads((tmp_path / "cli" / "eval_lm.json").read_text())["n_samples"][mc_task]
    assert counts["effective"] == 2 < counts["original"]
    # the folder the task came from (a local task may bear a built-in task's name, gsm8k): not recorded before
    assert json.loads((tmp_path / "cli" / "eval_lm.json").read_text())["include_path"] == str((d / "tasks").resolve())
    # A --limit above the task's size scores the whole task: recorded as what was scored, and said.
    # (a task named twice runs once, and is recorded once)
    assert cli(["eval-lm", str(d / "model"), "--tasks", f"{mc_task},{mc_task}", "--depths", "1", "--include-path",
                str(d / "tasks"), "--limit", "100000", "--device", "cpu", "--out", str(tmp_path / "all")]) == 0
    assert "--limit 100,000 is more examples than a task holds" in capsys.readouterr().out
    assert json.loads((tmp_path / "all" / "eval_lm.json").read_text())["tasks"] == [mc_task]
    counts = json.loads((tmp_path / "all" / "eval_lm.json").read_text())["n_samples"][mc_task]
    assert counts["effective"] == counts["original"] < 100000
    assert cli(["eval-lm", str(d / "model"), "--tasks", mc_task, "--depths", "0"]) == 2


def test_a_loop_count_that_cannot_fit_is_refused_before_it_runs(setup, tmp_path, capsys, monkeypatch):
    """The exit rule (asked for here) keeps every loop's state: a million loops is refused with the size, not
    run into the OOM killer (the check reads the machine's free memory, here set to 1 GiB)."""
    from looplm import memory

    d, (_, mc_task) = setup
    monkeypatch.setattr(memory, "available_bytes", lambda: 2**30)
    capsys.readouterr()
    assert cli(["eval-lm", str(d / "model"), "--tasks", mc_task, "--depths", "1000000", "--include-path",
                str(d / "tasks"), "--limit", "2", "--device", "cpu", "--exit-threshold", "1",
                "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    # lm-eval's progress bar is still open when the error ends the run: the line may follow it
    lines = [ln[ln.index("error:"):] for ln in err.replace("\r", "\n").splitlines() if "error:" in ln]
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("error: not enough memory: 1,000,000 loops on ") and "1.0 GiB are free" in lines[0]
    assert not (tmp_path / "e").exists()



def test_the_figure_keeps_metrics_that_are_not_fractions_off_the_percent_axis(tmp_path, monkeypatch):
    """Perplexity (or BLEU on 0-100) on a 0-100 % axis would fall off the figure unseen: such metrics stay in the
    table only, and the title names them."""
    from looplm import plots
    from looplm.hf.lm_eval_depths import plot_depths

    seen = {}

    def spy(curves, path, title, **kw):
        seen.update(labels=[c["label"] for c in curves], title=title, kw=kw)
        return path

    monkeypatch.setattr(plots, "plot_accuracy", spy)
    rows = [{"loops": d, "metrics": {"t": {"acc,none": 0.5, "word_perplexity,none": 1e6 * d}}} for d in (1, 2)]
    plot_depths(rows, tmp_path / "x.png", title="m")
    assert seen["labels"] == ["t acc,none"] and "not drawn, not fractions: t word_perplexity,none" in seen["title"]
    assert seen["kw"]["shading_note"] is False  # nothing is shaded: no training loop range here
    # no metric at all is a fraction: the figure is drawn empty (its title says why), without a Python warning
    import warnings

    monkeypatch.undo()
    rows = [{"loops": d, "metrics": {"t": {"word_perplexity,none": 1e6 * d}}} for d in (1, 2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_depths(rows, tmp_path / "y.png", title="m")
    assert (tmp_path / "y.png").read_bytes()[:4] == b"\x89PNG"


def test_num_loops_must_be_a_whole_number(setup):
    """A forward given 2.5 loops refuses it (int() would run 2), and so does True (1 loop)."""
    d, _ = setup
    from looplm.hf.finetune import load_pretrained

    model = load_pretrained(str(d / "model"))
    ids = torch.tensor([[3, 4, 5]])
    assert model(ids, num_loops=2).logits.shape[1] == 3
    for bad in (2.5, True, "3"):
        with pytest.raises(ValueError, match="num_loops must be an integer"):
            model(ids, num_loops=bad)


def test_a_model_name_that_is_neither_a_folder_nor_reachable_is_one_line(tmp_path):
    """A mistyped local path is tried on the hub; offline that is one line, not a screen of retries. (Offline is
    set for the process: huggingface_hub reads HF_HUB_OFFLINE when it is imported.)"""
    import os
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "looplm", "eval-lm", "bas", "--tasks", "x", "--out", str(tmp_path / "e")],
                       cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                       timeout=120)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1, r.stderr
    assert err[0].startswith("error: bas is neither a local model directory nor a hub model")


def test_a_hub_host_without_an_address_turns_the_hub_offline(monkeypatch):
    """huggingface_hub retries a failed name lookup with back-off (about 25 s) before its cache fallback: when
    the hub's host has no address, looplm goes offline at once (the cache is still read); when it resolves,
    nothing changes."""
    import socket

    import huggingface_hub.constants as hub

    from looplm.hf.data import quiet_hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    datasets_config = pytest.importorskip("datasets.config")
    monkeypatch.setattr(datasets_config, "HF_HUB_OFFLINE", datasets_config.HF_HUB_OFFLINE)  # restored after
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [("resolved",)])
    with quiet_hub():
        assert hub.HF_HUB_OFFLINE is False

    def no_address(*a, **k):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_address)
    with quiet_hub():
        assert hub.HF_HUB_OFFLINE is True


def test_the_shots_recorded_are_the_shots_each_task_used(setup, tmp_path, capsys):
    """A task whose YAML fixes its shots (num_fewshot: 0) does not take --num-fewshot: the run says so, and
    eval_lm.json records what each task used beside what was asked."""
    d, (_, mc_task) = setup
    capsys.readouterr()
    assert cli(["eval-lm", str(d / "model"), "--tasks", mc_task, "--depths", "1", "--include-path", str(d / "tasks"),
                "--limit", "2", "--num-fewshot", "2", "--device", "cpu", "--out", str(tmp_path / "e")]) == 0
    assert f"--num-fewshot 2 was not used by {mc_task} (0 shots, set by the task)" in capsys.readouterr().out
    res = json.loads((tmp_path / "e" / "eval_lm.json").read_text())
    assert res["num_fewshot"] == 2 and res["num_fewshot_used"] == {mc_task: 0}


def test_a_broken_chat_template_is_one_line(setup, tmp_path, capsys):
    """The model's chat template is its own code (Jinja, sandboxed): one that does not parse is the model's fault,
    said in one line, not a traceback."""
    import shutil

    from looplm.errors import UserError

    d, (gen_task, _) = setup
    m = shutil.copytree(d / "model", tmp_path / "m")
    (m / "chat_template.jinja").write_text("{% for m in messages %}")
    capsys.readouterr()
    assert cli(["eval-lm", str(m), "--tasks", gen_task, "--depths", "1", "--include-path", str(d / "tasks"),
                "--limit", "1", "--apply-chat-template", "--device", "cpu", "--out", str(tmp_path / "e")]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error: " in ln]
    assert len(errors) == 1 and "its chat template cannot be used (TemplateSyntaxError" in errors[0]
    assert not (tmp_path / "e").exists()
    # named templates (tokenizer_config.json's list) and none called default: transformers' advice to pass a name,
    # which eval-lm has no option for; said before any task is read, with what works (the eval-lm run and the
    # adapter's own chat template call)
    (m / "chat_template.jinja").write_text((d / "model" / "chat_template.jinja").read_text())
    name_templates(m)
    assert cli(["eval-lm", str(m), "--tasks", gen_task, "--depths", "1", "--include-path", str(d / "tasks"),
                "--limit", "1", "--apply-chat-template", "--device", "cpu", "--out", str(tmp_path / "e")]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error: " in ln]
    assert len(errors) == 1 and 'named chat templates (rag, tool_use) and none called "default"' in errors[0]
    with pytest.raises(UserError, match="write the one to use to chat_template.jinja"):
        LoopedLM(pretrained=str(m), device="cpu").apply_chat_template([{"role": "user", "content": "hi"}])
    # a task's own template that fails on its data is the task's, not the model's (it blamed the chat template)
    task_variant(d / "tasks", gen_task, tmp_path / "t", "t_bad", ("{{question}}", "{{nosuchfield}}"))
    assert cli(["eval-lm", str(d / "model"), "--tasks", "t_bad", "--depths", "1", "--include-path", str(tmp_path / "t"),
                "--limit", "1", "--device", "cpu", "--out", str(tmp_path / "e")]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error: " in ln]
    assert errors == ["error: t_bad: a task's prompt template fails on its data (UndefinedError: 'nosuchfield' is "
                      "undefined); check the task's doc_to_text, doc_to_target and doc_to_choice against its data "
                      "fields"]


def test_each_row_runs_its_loops_unless_an_exit_rule_is_asked_for(setup, tmp_path, capsys):
    """A config's early_exit_threshold is set aside: each row runs exactly its loop count (in bf16, or with
    saturated gates, the rule ends tokens early even at 1.0, so deep rows were one early exit under many
    labels). The run says so; --exit-threshold scores the rule instead, recorded with its dtype. Threshold 0
    exits every token at loop 1, so its rows are all the 1-loop row."""
    import shutil

    d, (_, mc_task) = setup
    m = shutil.copytree(d / "model", tmp_path / "m")
    conf = json.loads((m / "config.json").read_text())
    conf["early_exit_threshold"] = 0.0
    (m / "config.json").write_text(json.dumps(conf))
    args = ["--tasks", mc_task, "--depths", "1,4", "--include-path", str(d / "tasks"), "--limit", "4",
            "--device", "cpu", "--dtype", "float32"]

    def rows(out):
        res = json.loads((out / "eval_lm.json").read_text())
        return [r["metrics"] for r in res["rows"]], res["settings"]

    capsys.readouterr()
    assert cli(["eval-lm", str(d / "model"), *args, "--out", str(tmp_path / "base")]) == 0
    assert cli(["eval-lm", str(m), *args, "--out", str(tmp_path / "plain")]) == 0
    assert "note: the model's config.json sets early_exit_threshold=0.0; every row ran exactly its loop count" in \
        capsys.readouterr().out
    base, plain = rows(tmp_path / "base"), rows(tmp_path / "plain")
    assert plain[0] == base[0] and base[0][0] != base[0][1]  # the loops matter, and both ran them
    assert plain[1]["early_exit_threshold"] is None and plain[1]["exit_dtype"] is None
    assert cli(["eval-lm", str(d / "model"), *args, "--exit-threshold", "0", "--exit-dtype", "float32",
                "--out", str(tmp_path / "exit")]) == 0
    assert "note: early exit at threshold 0.0 (exit rule in float32)" in capsys.readouterr().out
    ex = rows(tmp_path / "exit")
    assert ex[0][0] == ex[0][1] == base[0][0]  # every token read loop 1
    assert ex[1]["early_exit_threshold"] == 0.0 and ex[1]["exit_dtype"] == "float32"
    assert cli(["eval-lm", str(d / "model"), *args, "--exit-dtype", "float32", "--out", str(tmp_path / "x")]) == 2
    assert "--exit-dtype is the dtype of an exit rule" in capsys.readouterr().err


def test_eval_depths_checks_its_arguments(setup, tmp_path):
    """The Python API took depths=[] (an IndexError), a task name as a string (read letter by letter),
    batch_size=0, a repeated depth (scored twice) and depth 0 (blamed on model_args), as the command line does not."""
    from looplm.hf.lm_eval_depths import eval_depths

    d, (_, mc_task) = setup
    good = dict(tasks=[mc_task], depths=[1], limit=1, batch_size=1)
    for bad, msg in ((dict(depths=[]), "no depths to evaluate"), (dict(depths=[2, 2]), "distinct"),
                     (dict(depths=[0]), ">= 1"), (dict(tasks=mc_task), "tasks must be a list"),
                     (dict(tasks=[mc_task, mc_task]), "distinct"), (dict(batch_size=0), "batch_size must be"),
                     (dict(batch_size=True), "batch_size must be"), (dict(limit=0), "limit must be"),
                     (dict(limit=1.5), "limit must be"), (dict(num_fewshot=-1), "num_fewshot must be")):
        with pytest.raises(ValueError, match=msg):
            eval_depths(str(d / "model"), **{**good, **bad}, out=tmp_path / "e", include_path=str(d / "tasks"),
                        device="cpu")
    assert not (tmp_path / "e").exists()


def test_eval_lm_writes_its_three_files_whole_or_not_at_all(setup, tmp_path, monkeypatch):
    """eval-lm stopped between its files (Ctrl-C after eval_lm.json and .md, before the figure) left those two, so
    the rerun was refused; with --force it left the new JSON beside the earlier figure."""
    import looplm.hf.lm_eval_depths as adapter
    from looplm.hf.lm_eval_depths import eval_depths

    d, (_, mc_task) = setup
    args = dict(tasks=[mc_task], depths=[1], limit=1, batch_size=1, include_path=str(d / "tasks"), device="cpu")
    earlier = tmp_path / "earlier"
    eval_depths(str(d / "model"), out=earlier, **args)
    before = {f.name: f.read_bytes() for f in earlier.iterdir()}

    def stopped(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(adapter, "plot_depths", stopped)
    for out, replace in ((tmp_path / "new" / "e", False), (earlier, True)):
        with pytest.raises(KeyboardInterrupt):
            eval_depths(str(d / "model"), out=out, replace=replace, **args)
    assert not (tmp_path / "new").exists()
    assert {f.name: f.read_bytes() for f in earlier.iterdir()} == before


def test_eval_lm_says_in_one_line_what_is_wrong_with_a_task_or_an_argument(setup, tmp_path, capsys):
    """A multiple-choice task whose doc_to_target is past its choices, or a continuation longer than the model's
    positions, was lm-eval's traceback; eval_depths(device="cuda") without CUDA ran on the CPU in bfloat16 and
    recorded "cuda"; model_kwargs beside eval_depths' own arguments was a TypeError."""
    from looplm.errors import UserError
    from looplm.hf.lm_eval_adapter import LoopedLM
    from looplm.hf.lm_eval_depths import eval_depths

    d, (_, mc_task) = setup
    task_variant(d / "tasks", mc_task, tmp_path / "t", "t_far", ("doc_to_target: 0", "doc_to_target: 5"))
    capsys.readouterr()
    assert cli(["eval-lm", str(d / "model"), "--tasks", "t_far", "--depths", "1", "--include-path", str(tmp_path / "t"),
                "--limit", "1", "--device", "cpu", "--out", str(tmp_path / "e")]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error: " in ln]
    assert len(errors) == 1 and errors[0].startswith(
        "error: t_far: lm-eval cannot load the task or build its requests from its YAML and data (IndexError: list "
        "index")
    lm = LoopedLM(pretrained=str(d / "model"), device="cpu", max_length=3)
    with pytest.raises(UserError, match=r"of \d+ tokens does not fit model_args max_length=3"):
        lm.loglikelihood([type("R", (), {"args": ("Question: 1+1\nAnswer:", " 2 and some more words")})()])
    common = dict(tasks=[mc_task], depths=[1], include_path=str(d / "tasks"), limit=1)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available on this machine"):
            eval_depths(str(d / "model"), out=tmp_path / "c", device="cuda", **common)
    with pytest.raises(ValueError, match="model_kwargs num_loops: eval_depths sets it itself; give depths="):
        eval_depths(str(d / "model"), out=tmp_path / "c", device="cpu", model_kwargs={"num_loops": 3}, **common)
    assert not (tmp_path / "c").exists()


def test_eval_lm_refuses_a_file_name_as_its_folder_and_a_broken_function(setup, tmp_path, capsys):
    """`eval-lm --out results.json` made a folder of that name (analyze refuses it); a task whose !function names
    a module that cannot be imported was lm-eval's traceback; eval_depths took a tuple of tasks (lm-eval then
    failed) and a numpy limit (the JSON write failed after all the work), and apply_chat_template="false"."""
    import numpy as np

    from looplm.hf.lm_eval_depths import eval_depths

    d, (gen_task, mc_task) = setup
    capsys.readouterr()
    assert cli(["eval-lm", str(d / "model"), "--tasks", mc_task, "--include-path", str(d / "tasks"), "--depths", "1",
                "--device", "cpu", "--out", str(tmp_path / "results.json")]) == 2
    assert "eval-lm writes a folder" in capsys.readouterr().err and not (tmp_path / "results.json").exists()
    task_variant(d / "tasks", gen_task, tmp_path / "t", "t_fn", ("!function ", "!function nosuchmodule_"))
    assert cli(["eval-lm", str(d / "model"), "--tasks", "t_fn", "--include-path", str(tmp_path / "t"), "--depths",
                "1", "--device", "cpu", "--out", str(tmp_path / "e")]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error: " in ln]
    assert len(errors) == 1 and "t_fn: lm-eval cannot load the task" in errors[0] and "ImportError" in errors[0]
    res = eval_depths(str(d / "model"), (mc_task,), [1], tmp_path / "np", include_path=str(d / "tasks"),
                      limit=np.int64(2), device="cpu")
    assert res["tasks"] == [mc_task] and json.loads((tmp_path / "np" / "eval_lm.json").read_text())["limit"] == 2
    with pytest.raises(ValueError, match="apply_chat_template must be True or False"):
        eval_depths(str(d / "model"), [mc_task], [1], tmp_path / "s", include_path=str(d / "tasks"), limit=1,
                    device="cpu", apply_chat_template="false")


def test_few_shots_past_the_documents_a_config_in_any_spelling_and_an_earlier_result_are_said_first(
        setup, tmp_path, capsys):
    """--num-fewshot above a task's documents was blamed on the task's YAML; `-C=FILE` (argparse reads it as
    `-C FILE`) and abbreviations of --config went unseen, so the file's model_args were dropped beside
    --model_args; eval_depths(replace=False) over an earlier result ran every depth, then named a --force the
    Python API does not have."""
    from looplm.errors import UserError
    from looplm.hf.lm_eval_adapter import _config_has_model_args
    from looplm.hf.lm_eval_depths import eval_depths

    d, (_, mc_task) = setup
    task_variant(d / "tasks", mc_task, tmp_path / "t", "t_shots", ("num_fewshot: 0\n", ""))
    capsys.readouterr()
    assert cli(["eval-lm", str(d / "model"), "--tasks", "t_shots", "--include-path", str(tmp_path / "t"), "--depths",
                "1", "--limit", "1", "--num-fewshot", "20", "--device", "cpu", "--out", str(tmp_path / "e")]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error: " in ln]
    assert errors == ["error: t_shots: the few-shot count asks for more examples than the task has documents to "
                      "draw them from; lower --num-fewshot (num_fewshot)"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model_args: pretrained={d / 'model'},num_loops=1\n")
    for spelling in (["-C=" + str(cfg)], ["-C" + str(cfg)], ["--confi", str(cfg)], ["--config=" + str(cfg)]):
        assert _config_has_model_args(["run", *spelling, "--model_args", "num_loops=3"]) == str(cfg)
    assert _config_has_model_args(["run", "--model_args", "num_loops=3"]) is None
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "eval_lm.json").write_text("{}\n")
    with pytest.raises(UserError, match=r"eval_lm.json already exists \(an earlier result\); pass replace=True"):
        eval_depths(str(tmp_path / "no-model"), [mc_task], [1], tmp_path / "old", replace=False)
    assert (tmp_path / "old" / "eval_lm.json").read_text() == "{}\n"


def test_a_rolling_score_is_the_same_at_every_batch_size(setup):
    """lm-eval's logits cache ran two requests with equal inputs once and read the shorter continuation from the
    longer one's first positions: the rolling windows of repeated text (a short position table makes them
    common) scored one thing at batch size 1 and another at 8."""
    from looplm.errors import UserError

    d, _ = setup
    docs = [type("R", (), {"args": ("12+34=46" * k,)})() for k in (1, 2, 3, 5)]
    one, eight = (LoopedLM(pretrained=str(d / "model"), device="cpu", max_length=16, batch_size=b)
                  .loglikelihood_rolling(docs, disable_tqdm=True) for b in (1, 8))
    assert one == pytest.approx(eight, rel=1e-5, abs=1e-4)
    with pytest.raises(UserError, match="logits_cache=True: lm-eval's logits cache"):
        LoopedLM(pretrained=str(d / "model"), device="cpu", logits_cache="true")


def test_one_run_scores_every_task_at_one_depth(setup):
    """Without num_loops in model_args, generate() took a generation config's num_loops while the log-likelihood
    forward took the model config's: generation and log-likelihood tasks of one run at two depths."""
    d, _ = setup
    lm = LoopedLM(pretrained=str(d / "model"), device="cpu")
    lm.model.generation_config.num_loops = 1
    assert lm._loop_kwargs()["num_loops"] == lm.model.config.total_ut_steps != 1


def test_a_generation_configs_exit_rule_and_gen_kwargs_loops_are_not_used_apart(setup):
    """A generation config's exit_threshold reached generate() alone: generation tasks ran Ouro's early exit
    while log-likelihood tasks (and eval-lm's note) ran every loop. A task's or --gen_kwargs' num_loops was
    overwritten by the model_args depth without a word."""
    from looplm.errors import UserError

    d, _ = setup
    lm = LoopedLM(pretrained=str(d / "model"), device="cpu", num_loops=4)
    lm.model.config.early_exit_threshold = None  # as eval-lm runs it: every loop
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    every_loop = lm._model_generate(ids, 14, [], do_sample=False)
    lm.model.generation_config.exit_threshold = 0.0  # a saved preference: every token exits at loop 1
    assert torch.equal(lm._model_generate(ids, 14, [], do_sample=False), every_loop)
    exits = lm.model.generate(ids, max_length=14, do_sample=False, num_loops=4)  # generate() itself honours it
    assert not torch.equal(exits, every_loop)  # (so the rule matters here)
    for key, value in (("num_loops", 1), ("exit_threshold", 0.5), ("exit_dtype", "float32"),
                       ("use_weighted_exit", True)):  # (the last changed generation's readout alone)
        with pytest.raises(UserError, match=f"gen_kwargs {key}={value}: the looplm model runs every request"):
            lm._model_generate(ids, 14, [], do_sample=False, **{key: value})


def test_max_gen_toks_with_no_generation_task_is_said_and_not_recorded(setup, tmp_path, capsys):
    """--max-gen-toks beside log-likelihood tasks only changed nothing, yet eval_lm.json recorded it among the
    settings that change the numbers, without a word."""
    d, (_, mc_task) = setup
    capsys.readouterr()
    assert cli(["eval-lm", str(d / "model"), "--tasks", mc_task, "--depths", "1", "--include-path", str(d / "tasks"),
                "--limit", "2", "--device", "cpu", "--max-gen-toks", "5", "--out", str(tmp_path / "e")]) == 0
    assert f"note: --max-gen-toks 5 was not used: {mc_task} generate no text" in capsys.readouterr().out
    assert json.loads((tmp_path / "e" / "eval_lm.json").read_text())["settings"]["max_gen_toks"] is None


def test_dtype_and_length_model_args_are_checked_before_the_load(setup):
    """softmax_dtype=bogus (and mixed_precision_dtype) was lm-eval's AttributeError traceback ("module 'torch' has
    no attribute 'bogus'"); max_length=0 silently meant the model's own length, and -3 was refused only when
    scoring, after the load, as "-3.0". Each is one line now, checked as dtype is."""
    from looplm.errors import UserError

    d, _ = setup
    for bad, msg in ((dict(softmax_dtype="bogus"), "softmax_dtype must be one of float32, bfloat16, float16, got "
                                                   "'bogus'"),
                     (dict(mixed_precision_dtype="fp8"), "mixed_precision_dtype must be one of"),
                     (dict(softmax_dtype="auto"), "softmax_dtype must be one of"),
                     (dict(dtype="bogus"), "dtype must be auto or one of"),
                     (dict(max_length=0), "max_length must be a whole number of tokens >= 1 .*, got 0$"),
                     (dict(max_length=-3.0), "got -3$"), (dict(max_length=2.5), "got 2.5$"),
                     (dict(max_length=True), "got True$")):
        with pytest.raises(UserError, match=msg):
            LoopedLM(pretrained=str(d / "nonexistent"), device="cpu", **bad)  # refused before any load
    assert LoopedLM(pretrained=str(d / "model"), device="cpu", softmax_dtype="float32").softmax_dtype == torch.float32
