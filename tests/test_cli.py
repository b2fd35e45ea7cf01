import json
import subprocess
import sys

import pytest

from looplm.cli import main


def run_cli(*args):
    return main(list(args))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    rc = run_cli("train", "--config", "addition-prenorm-stars", "--out", str(out), "--no-progress",
                 "--set", "train.steps=3", "--set", "reg.start_step=1", "--set", "model.d_model=32",
                 "--set", "model.d_ff=64", "--set", "train.batch_size=8", "--set", "data.test_size=20",
                 "--set", "train.eval_every=0", "--set", "loops.max_loops=5")
    assert rc == 0
    return out


def test_train_sweep_generate_plot(run_dir, tmp_path, capsys):
    assert run_cli("sweep", str(run_dir / "checkpoint"), "--depths", "1:6", "--n", "12", "--no-progress",
                   "--out", str(tmp_path / "s.json")) == 0
    sw = json.loads((tmp_path / "s.json").read_text())
    assert sw["depths"] == [1, 2, 3, 4, 5, 6] and sw["n"] == 12 and len(sw["accuracy"]) == 6
    assert sw["step"] == 3  # the checkpoint's step: a later resume leaves this result of an earlier one
    assert all(0.0 <= a <= 1.0 for a in sw["accuracy"])
    data = tmp_path / "d.jsonl"
    data.write_text('{"num1": 1234, "num2": 5678, "answer": 6912}\n{"num1": 2000, "num2": 3000, "answer": 5000}\n')
    assert run_cli("sweep", str(run_dir), "--data", str(data), "--depths", "2,4", "--no-progress") == 0
    assert json.loads((run_dir / "sweep.json").read_text())["n"] == 2
    capsys.readouterr()
    assert run_cli("generate", str(run_dir), "1234+5678=", "20+30=", "--loops", "3") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[1].startswith("1234+5678= ") and lines[2].startswith("20+30= ")
    assert lines[0].startswith("note: '20+30=' is not a 4-digit addition problem")  # (the model answers it anyway)
    assert run_cli("plot", str(tmp_path / "s.json"), str(run_dir), "--labels", "a", "b",
                   "--out", str(tmp_path / "acc.png")) == 0
    assert (tmp_path / "acc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, msg", [
    (["sweep", "{tmp}/missing"], "does not exist"),
    (["sweep", "{run}", "--depths", "9:2"], "reversed"),
    (["sweep", "{run}", "--depths", ""], "empty depth"),
    (["sweep", "{run}", "--data", "{tmp}/empty.jsonl"], "empty"),
    (["generate", "{run}", "12a4+1="], "outside the vocabulary"),
    (["generate", "{run}", "1+1=", "--loops", "0"], "argument --loops: must be >= 1"),
    (["train", "--config", "addition-prenorm-stars", "--out", "{tmp}/x", "--set", "model.bogus=1"], "model.bogus"),
    (["train", "--config", "addition-prenorm-stars", "--out", "{tmp}/x", "--set", "loops.num_loops=0"], ">= 1"),
    (["train", "--config", "addition-prenorm-stars", "--out", "{run}"], "--resume"),
    ([], "error: give a command: train, sweep, generate, demo, study, analyze, plot"),  # was "required: cmd"
    (["analyze", "{run}", "--tol", "5", "--no-progress", "--out", "{tmp}/x"],
     "argument --tol: must be a finite number > 0 and < 1, got 5"),
])
def test_bad_input_gives_one_clear_error(run_dir, tmp_path, capsys, args, msg):
    (tmp_path / "empty.jsonl").write_text("")
    args = [a.replace("{tmp}", str(tmp_path)).replace("{run}", str(run_dir)) for a in args]
    capsys.readouterr()
    assert run_cli(*args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and msg in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()  # nothing else happened


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "looplm", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("train", "sweep", "generate", "demo", "plot"):
        assert cmd in out.stdout


def test_demo_tiny(tmp_path, capsys):
    """Both stages, the sweep to 1000 loops, the dynamics and the two figures, on a tiny model."""
    assert run_cli("demo", "--out", str(tmp_path / "demo"), "--no-progress", "--n", "10", "--set", "train.steps=2",
                   "--set", "model.d_model=32", "--set", "model.d_ff=64", "--set", "data.test_size=10",
                   "--set", "train.batch_size=4", "--set", "train.eval_every=0", "--set", "train.stop_at_acc=0") == 0
    out = capsys.readouterr().out
    assert "minimum over depths 4..1000" in out and "at 1000 loops: step residual" in out
    sw = json.loads((tmp_path / "demo" / "sweep.json").read_text())
    assert sw["depths"][-1] == 1000 and len(sw["depths"]) == 110 and sw["n"] == 10
    dyn = json.loads((tmp_path / "demo" / "dynamics.json").read_text())
    assert dyn["depths"] == sw["depths"] and 1000 in dyn["spectral"]["depths"]
    assert dyn["step"] == sw["step"] == 2 and dyn["checkpoint"] == sw["checkpoint"] and dyn["data"] == sw["data"]
    for f in ("accuracy.png", "dynamics.png"):
        assert (tmp_path / "demo" / f).read_bytes()[:4] == b"\x89PNG"
    # stage 2 started from stage 1's weights, and each stage is a whole run
    assert ckpt_config(tmp_path / "demo" / "stage2").train.init_from == str(tmp_path / "demo" / "stage1")


def test_a_demo_keeps_a_result_that_appeared_while_it_trained_and_says_how_to_continue(tmp_path, monkeypatch,
                                                                                      capsys):
    """A sweep.json written into the demo's folder while its stages trained (`looplm sweep runs/demo/stage2 --out
    runs/demo/sweep.json`) was replaced without --force; and an interrupted demo said "continue with --resume",
    which `demo` does not take."""
    import looplm.demo as demo
    from looplm.train import Interrupted

    real_fit, out = demo.fit, tmp_path / "demo"

    def fit_then_a_user_sweep(cfg, where, **kw):
        run = real_fit(cfg, where, **kw)
        (out / "sweep.json").write_text('{"mine": true}\n')
        return run

    monkeypatch.setattr(demo, "fit", fit_then_a_user_sweep)
    tiny = ["--no-progress", "--n", "10", "--set", "train.steps=2", "--set", "model.d_model=32", "--set",
            "model.d_ff=64", "--set", "data.test_size=10", "--set", "train.batch_size=4", "--set", "train.eval_every=0",
            "--set", "train.stop_at_acc=0"]
    assert run_cli("demo", "--out", str(out), *tiny) == 2
    assert "appeared while this command ran" in capsys.readouterr().err
    assert (out / "sweep.json").read_text() == '{"mine": true}\n' and not (out / "dynamics.json").exists()

    def interrupted(cfg, where, **kw):
        raise Interrupted(f"interrupted: saved a checkpoint at step 3 in {where}/checkpoint", 130)

    monkeypatch.setattr(demo, "fit", interrupted)
    assert run_cli("demo", "--out", str(tmp_path / "d2"), *tiny) == 130
    err = capsys.readouterr().err.strip()
    assert err.endswith("; run the same `looplm demo` command again to continue") and "--resume" not in err


def test_analyze_force_leaves_figures_it_does_not_write_unless_an_analysis_drew_them(run_dir, tmp_path, capsys):
    """`analyze --no-plot --force` (or --pca-n 0) deleted a dynamics.png / trajectories.png of the user's own in a
    folder that held no earlier analysis; without --force it called them an earlier result."""
    for extra in (["--no-plot"], ["--no-plot", "--force"], ["--pca-n", "0", "--force"]):
        figs = tmp_path / "-".join(extra)
        figs.mkdir()
        for f in ("dynamics.png", "trajectories.png"):
            (figs / f).write_bytes(b"\x89PNG my figure")
        flags = ["--depths", "1:3", "--n", "4", "--spectral-n", "0", "--no-progress", "--out", str(figs)]
        assert run_cli("analyze", str(run_dir), *flags, *extra) == 0, extra
        kept = {p.name for p in figs.glob("*.png") if p.read_bytes() == b"\x89PNG my figure"}
        assert kept == ({"trajectories.png"} if "--pca-n" in extra else {"dynamics.png", "trajectories.png"}), extra
    # beside an earlier analysis, only the figures it drew are its own: a --no-plot one drew none, a --pca-n 0 one
    # no trajectories (both were removed by the next `--force`, whatever the record said)
    for first, ours in ((["--no-plot"], set()), (["--pca-n", "0"], {"dynamics.png"})):
        figs = tmp_path / ("after" + "".join(first))
        flags = ["--depths", "1:3", "--n", "4", "--spectral-n", "0", "--no-progress", "--out", str(figs)]
        assert run_cli("analyze", str(run_dir), *flags, *first) == 0
        for f in {"dynamics.png", "trajectories.png"} - ours:
            (figs / f).write_bytes(b"\x89PNG my figure")
        assert run_cli("analyze", str(run_dir), *flags, "--no-plot", "--force") == 0
        assert {p.name for p in figs.glob("*.png")} == {"dynamics.png", "trajectories.png"} - ours, first


def ckpt_config(run):
    from looplm import checkpoint as ckpt

    return ckpt.load_config(run)


def _untrained_addition_model():
    """(config, seeded untrained model, task) of a tiny addition model with 16 positions, to hand-set weights in."""
    import torch

    from looplm.config import load_config
    from looplm.model import LoopedTransformer
    from looplm.tasks import make_task

    cfg = load_config("addition-prenorm-stars", ["model.d_model=32", "model.d_ff=64", "model.n_heads=2",
                                                 "model.max_seq_len=16"])
    torch.manual_seed(0)
    return cfg, LoopedTransformer(cfg.model).eval(), make_task(cfg)


def test_cut_off_answers_are_marked(tmp_path, capsys):
    """An answer with no end token is marked as cut off, in the API (Generated.finished) and in the CLI. The
    model here can never emit EOS: its tied head row for EOS is a constant vector, and the final LayerNorm's
    output (weight 1, bias 0) sums to zero, so EOS's logit is exactly 0 while some other token's is positive."""
    import torch

    from looplm import checkpoint as ckpt
    from looplm.generate import generate, generate_cached

    cfg, model, task = _untrained_addition_model()
    with torch.no_grad():
        model.tok_emb.weight[task.eos_id] = 1.0
    ids = [task.tok.encode("123456+123456="), task.tok.encode("12+34=")]
    for outs in (generate(model, ids, 2, 16, task.eos_id, max_len=16),
                 generate_cached(model, ids, 2, 16, task.eos_id)[0]):
        assert outs.finished == [False, False]
        assert [len(o) for o in outs] == [2, 10]  # every position the model has, then it stops
    # With a budget of one token, a row is finished exactly when that token was EOS.
    model.tok_emb.weight.data[task.eos_id] = model.tok_emb.weight.data[task.tok.stoi["3"]] * 50
    outs = generate(model, ids, 2, 1, task.eos_id, max_len=16)
    assert outs.finished == [len(o) == 0 for o in outs]
    model.tok_emb.weight.data[task.eos_id] = 1.0
    ckpt.save(tmp_path / "run" / "checkpoint", model, cfg)
    capsys.readouterr()
    assert run_cli("generate", str(tmp_path / "run"), "123456+123456=") == 0
    assert capsys.readouterr().out.strip().endswith("[cut off: no end token within the model's 16 positions]")
    # --show-loops lists one count per forward pass, with or without the KV cache (a cut-off answer has no end
    # token step: 2 tokens, 2 counts)
    shown = []
    for flags in ([], ["--no-cache"]):
        assert run_cli("generate", str(tmp_path / "run"), "123456+123456=", "--show-loops", "--loops", "2",
                       *flags) == 0
        shown.append(capsys.readouterr().out.strip())
    assert shown[0] == shown[1] and shown[0].endswith("[loops per token: 2 2]"), shown


def test_generate_says_the_padding_tokens_the_model_wrote(tmp_path, capsys):
    """A padding token the model chooses has no text, but every later token read it: the printed answer says
    where it was (it used to print `7` for `<pad>7`, an answer the sweep scores wrong). The model here always
    chooses PAD: its final norm outputs the constant vector 1, and the tied head row of PAD is 10 (logit 10·D)
    while every other row is small and random."""
    import torch

    from looplm import checkpoint as ckpt

    cfg, model, task = _untrained_addition_model()
    with torch.no_grad():
        model.norm_f.weight.zero_()
        model.norm_f.bias.fill_(1.0)
        model.tok_emb.weight.mul_(0.1)
        model.tok_emb.weight[task.pad_id] = 10.0
    ckpt.save(tmp_path / "run" / "checkpoint", model, cfg)
    capsys.readouterr()
    for flags in ([], ["--no-cache"]):
        assert run_cli("generate", str(tmp_path / "run"), "12+34=", *flags) == 0
        out = capsys.readouterr().out.strip()
        assert "[the model wrote <pad> as output token(s) 1, 2, 3, 4, 5, 6, 7, 8, ... of 10;" in out, out


def test_results_name_a_checkpoint_the_same_way_in_every_command(run_dir, tmp_path):
    """A run, its checkpoint/ and a history checkpoint are labelled run, run and run/step-N by sweep and analyze
    alike (a plot's legend then tells history checkpoints apart)."""
    from looplm.checkpoint import run_label

    hist = tmp_path / "run" / "checkpoints" / "step-00000002"
    assert [run_label(p) for p in (run_dir, run_dir / "checkpoint", hist)] == ["run", "run", "run/step-00000002"]
    for k, target in enumerate((run_dir, run_dir / "checkpoint")):
        assert run_cli("sweep", str(target), "--depths", "1:2", "--n", "2", "--no-progress",
                       "--out", str(tmp_path / f"s{k}.json")) == 0
        assert run_cli("analyze", str(target), "--depths", "1:2", "--n", "2", "--spectral-n", "0", "--pca-n", "0",
                       "--no-plot", "--no-progress", "--out", str(tmp_path / f"a{k}")) == 0
        assert json.loads((tmp_path / f"s{k}.json").read_text())["label"] == run_dir.name
        assert json.loads((tmp_path / f"a{k}" / "dynamics.json").read_text())["label"] == run_dir.name


def test_generation_refuses_a_kv_cache_that_cannot_fit(run_dir, monkeypatch):
    """The cache holds K and V for every (loop, block): its size is known before decoding, and one that cannot
    fit is refused with the size it needs, instead of growing until the system kills the process."""
    from looplm import checkpoint as ckpt
    from looplm import memory
    from looplm.errors import UserError
    from looplm.generate import generate_cached

    model, cfg = ckpt.load_model(run_dir)
    prompts = [[5, 6, 7], [5, 6, 8], [9]]  # two of length 3 decode together
    m = cfg.model
    need = (m.n_prelude + m.n_coda + m.n_core * 1000) * 2 * m.max_seq_len * 2 * m.d_model * 4
    monkeypatch.setattr(memory, "available_bytes", lambda: need - 1)
    with pytest.raises(UserError, match=r"2 prompt\(s\) of up to \d+ positions with a KV cache for 1,000 loops"):
        generate_cached(model, prompts, 1000, 4, 1)
    monkeypatch.setattr(memory, "available_bytes", lambda: need)
    outs, _ = generate_cached(model, prompts, 1000, 1, 1)
    assert len(outs) == 3


def test_plot_text_is_verbatim_and_size_rows_are_labelled(run_dir, tmp_path):
    """A `$` in a label is a dollar sign (escaped, so it opens no formula) while matplotlib's own log-axis ticks
    (10^2) are still typeset; a heatmap of sizes 6, 8, 20 has one labelled row per size, the training box around
    the rows of the training sizes."""
    from looplm import plots

    assert run_cli("sweep", str(run_dir), "--depths", "1:2", "--n", "2", "--no-progress",
                   "--out", str(tmp_path / "s.json")) == 0
    assert run_cli("plot", str(tmp_path / "s.json"), "--labels", r"$\bad{$ costs $5", "--out",
                   str(tmp_path / "l.png")) == 0
    seen = {}
    real_save = plots._save

    def spy(fig, out, replace=True, tight=True):
        ax = fig.axes[0]
        fig.canvas.draw()  # the tick labels exist once drawn
        seen["yticks"] = [t.get_text() for t in ax.get_yticklabels()]
        seen["xticks_math"] = [t.get_parse_math() for t in ax.get_xticklabels() if "mathdefault" in t.get_text()]
        seen["ylim"] = ax.get_ylim()
        seen["box"] = [(p.get_y(), p.get_y() + p.get_height()) for p in ax.patches]
        seen["legend"] = [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []
        return real_save(fig, out, replace, tight)

    res = {"depths": [1, 2], "sizes": [6, 8, 20], "accuracy_by_size": [[1, 1], [0.5, 0.5], [0, 0]],
           "train_sizes": [6, 10], "label": "x"}
    plots._save = spy
    try:
        plots.plot_size_depth(res, tmp_path / "h.png")
        assert seen["yticks"] == ["6", "8", "20"] and seen["ylim"] == (0.5, 3.5)
        assert [min(b) for b in seen["box"]] == [0.5] and [max(b) for b in seen["box"]] == [2.5]  # rows of 6 and 8
        plots.plot_accuracy([{"depths": [1, 10, 100], "accuracy": [0.1, 0.5, 0.9], "label": "cost $5"}],
                            tmp_path / "a.png")
        assert seen["legend"] == [r"cost \$5"]  # drawn as "cost $5"
        assert seen["xticks_math"] and all(seen["xticks_math"])  # 10^0, 10^1, 10^2 typeset, not raw TeX
        # a label starting with "_" (a run folder named _baseline) keeps its legend entry
        plots.plot_accuracy([{"depths": [1, 2], "accuracy": [0.1, 0.5], "label": "_baseline"},
                             {"depths": [1, 2], "accuracy": [0.2, 0.6], "label": "stars"}], tmp_path / "u.png")
        assert seen["legend"] == ["\u200b_baseline", "stars"]
    finally:
        plots._save = real_save


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("after", [0.1, 0.2, 0.3, 0.45])
def test_ctrl_c_while_the_command_starts_is_one_line(tmp_path, after):
    """Ctrl-C while torch and numpy are still being imported (the first second or two): one line, exit 130, no
    traceback, and the command does not go on to run (numpy's import would turn the interrupt into an ImportError
    or swallow it, so the launcher only notes it until the imports are done)."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "looplm", "sweep", str(tmp_path / "none")],
                            stderr=subprocess.PIPE, text=True)
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip() == "error: interrupted", err


def test_earlier_results_survive_without_hard_links_and_after_a_kill(tmp_path, monkeypatch, capsys):
    """On a file system without hard links the earlier result is kept as a copy (not deleted); a command killed
    while replacing left its earlier result kept beside it, and the next command on those outputs puts it back."""
    from looplm import outputs
    from looplm.checkpoint import write_result

    js = tmp_path / "dynamics.json"
    js.write_text("earlier")

    def no_links(*a, **k):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(outputs.os, "link", no_links)
    with pytest.raises(KeyboardInterrupt), outputs.all_or_nothing([js]):
        write_result(js, lambda f: f.write_text("new"), replace=True)
        raise KeyboardInterrupt
    assert js.read_text() == "earlier" and [p.name for p in tmp_path.iterdir()] == ["dynamics.json"]
    monkeypatch.undo()
    # a kill: the new file is in place and the earlier one kept beside it, never cleaned up
    (tmp_path / ".dynamics.json.kept-0000dead").write_text("earlier")
    js.write_text("half")
    with outputs.all_or_nothing([js]):
        assert js.read_text() == "earlier"  # back before this command writes anything
    assert "was being replaced by a command that was killed" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["dynamics.json"]


def test_the_public_names_are_what_they_say_whatever_was_imported_first():
    """`looplm.train` and `looplm.generate` name both functions and modules: importing the modules (as the CLI
    does) must not turn the public functions into modules."""
    import importlib

    import looplm
    import looplm.cli  # noqa: F401  (imports looplm.train and looplm.generate)
    from looplm import fit, generate, train

    assert callable(train) and train is fit and callable(generate)
    assert looplm.train is fit and looplm.generate is generate
    assert importlib.import_module("looplm.train").fit is fit


def test_an_error_on_a_terminal_starts_on_a_cleared_line(monkeypatch):
    """A progress bar (lm-eval's) can leave the cursor at the end of its line: on a terminal the error line clears
    it first, so `error:` starts the line; in a file or a pipe the line is written as it is."""
    import io

    from looplm.errors import UserError, guarded

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    def fail() -> None:
        raise UserError("bad input")

    for stream, want in ((Terminal(), "\r\033[Kerror: bad input\n"), (io.StringIO(), "error: bad input\n")):
        stream.write("eval 3/10 |###")
        monkeypatch.setattr("sys.stderr", stream)
        assert guarded(fail) == 2
        assert stream.getvalue() == "eval 3/10 |###" + want


def test_an_error_in_a_log_starts_after_an_open_progress_bar(monkeypatch):
    """In a log file a tqdm bar's refreshes end without a newline: an error raised while one is open starts a new
    line, and is the last line (the bar is closed, not left to refresh when collected); with no bar open, no blank
    line is added."""
    import gc
    import io

    from tqdm import tqdm

    from looplm.errors import UserError, guarded

    def fail_inside_a_bar() -> None:  # a bar updated by hand, as lm-eval's request bars are: no loop closes it
        bar = tqdm(total=10, file=log, mininterval=0)
        bar.update(3)
        raise UserError("bad input")

    def fail() -> None:
        raise UserError("bad input")

    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    assert guarded(fail_inside_a_bar) == 2
    gc.collect()  # the bar, freed with the traceback, would refresh once more were it still open
    *_, bar, error, end = log.getvalue().split("\n")
    assert (error, end) == ("error: bad input", "") and "3/10" in bar.split("\r")[-1]
    log2 = io.StringIO()
    monkeypatch.setattr("sys.stderr", log2)
    assert guarded(fail) == 2 and log2.getvalue() == "error: bad input\n"


def test_generation_reads_the_end_token_predicted_at_the_last_position():
    """Training scores `prompt answer <eos>` with the end token predicted at the last position when the answer
    fills the positions, so generation reads that prediction too (an answer that fitted exactly was marked as cut
    off). Both decoders, and `generate` with no max_len (the model's positions), equal a plain reference: one
    full forward per token on 300 random prompts, with an end token made likely enough that some rows end at
    exactly the last position."""
    import torch

    from looplm.config import load_config
    from looplm.generate import generate, generate_cached
    from looplm.model import LoopedTransformer

    L, V, EOS = 8, 14, 1
    cfg = load_config("addition-prenorm-stars", [f"model.vocab_size={V}", "model.d_model=32", "model.d_ff=64",
                                                 "model.n_heads=2", f"model.max_seq_len={L}"])
    torch.manual_seed(0)
    model = LoopedTransformer(cfg.model).eval()
    with torch.no_grad():
        model.tok_emb.weight[EOS] = model.tok_emb.weight[2:].mean(0) * 8

    def reference(p: list[int]) -> tuple[list[int], bool]:
        seq, out = list(p), []
        while True:
            with torch.no_grad():
                t = int(model(torch.tensor([seq]), 2)[0, -1].argmax())
            if t == EOS:
                return out, True
            if len(seq) == L:
                return out, False
            seq.append(t)
            out.append(t)

    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(2, V, (int(torch.randint(1, L, (1,), generator=g)),), generator=g).tolist()
               for _ in range(300)]
    want = [reference(p) for p in prompts]
    ends_at_last = sum(f and len(p) + len(o) == L for p, (o, f) in zip(prompts, want, strict=True))
    assert ends_at_last >= 5 and sum(not f for _, f in want) >= 5  # both kinds of row are tested
    for outs in (generate(model, prompts, 2, L, EOS, max_len=L), generate(model, prompts, 2, L, EOS),
                 generate_cached(model, prompts, 2, L, EOS)[0]):
        assert list(outs) == [o for o, _ in want] and outs.finished == [f for _, f in want]
    # a max_len below the positions holds with the cache too (it was ignored there)
    short = [p for p in prompts if len(p) < 5]
    plain = generate(model, short, 2, L, EOS, max_len=5)
    cached = generate(model, short, 2, L, EOS, max_len=5, use_cache=True)
    assert list(cached) == list(plain) and cached.finished == plain.finished
    assert all(len(p) + len(o) <= 5 for p, o in zip(short, cached, strict=True))


def test_a_resume_says_the_results_in_the_run_score_an_earlier_step(tmp_path, capsys):
    """sweep.json and dynamics.json record the step they scored; a resume that trains on says they are of an
    earlier checkpoint (they stay: they are results, and the user may want them)."""
    tiny = ["--set", "model.d_model=32", "--set", "model.d_ff=64", "--set", "model.n_heads=2", "--set",
            "train.batch_size=8", "--set", "train.eval_every=0", "--set", "data.test_size=16", "--set",
            "model.max_seq_len=16", "--set", "loops.max_loops=4", "--set", "reg.rho_every=0"]
    run = tmp_path / "run"
    assert run_cli("train", "--config", "addition-prenorm-stars", "--out", str(run), "--no-progress",
                   "--set", "train.steps=2", *tiny) == 0
    assert run_cli("sweep", str(run), "--depths", "1:2", "--no-progress") == 0
    assert run_cli("analyze", str(run), "--depths", "1:2", "--spectral-n", "0", "--pca-n", "0", "--no-plot",
                   "--no-progress") == 0
    assert json.loads((run / "sweep.json").read_text())["step"] == 2
    assert json.loads((run / "dynamics.json").read_text())["step"] == 2
    dyn = json.loads((run / "dynamics.json").read_text())  # as an analysis of a history checkpoint records it
    (run / "dynamics.json").write_text(json.dumps({**dyn, "step": 1}))
    capsys.readouterr()
    assert run_cli("train", "--config", "addition-prenorm-stars", "--out", str(run), "--no-progress", "--resume",
                   "--set", "train.steps=3", *tiny) == 0
    # by step: "earlier weights" was wrong for a resume from the history, behind the results (step 2 vs 1)
    assert (f"note: sweep.json (step 2) and dynamics.json (step 1) in {run} score other weights than this run "
            "will have (it resumes from step 2 and trains on); rerun them with --force") in capsys.readouterr().out


def test_a_result_replaced_with_force_keeps_no_figure_of_the_earlier_one(run_dir, tmp_path, capsys):
    """A figure the new result does not draw (analyze --no-plot after a plotted analysis, a sweep without --sizes
    after one with, a plot of sweeps only after one of dynamics) would sit beside it, showing another result:
    without --force it is refused like the outputs, with --force it goes."""
    a = tmp_path / "a"
    flags = ["--depths", "1:3", "--n", "4", "--spectral-n", "0", "--no-progress", "--out", str(a)]
    assert run_cli("analyze", str(run_dir), *flags, "--pca-n", "2") == 0
    assert {p.name for p in a.iterdir()} == {"dynamics.json", "dynamics.png", "trajectories.png"}
    capsys.readouterr()
    assert run_cli("analyze", str(run_dir), *flags, "--no-plot") == 2
    assert "already exists" in capsys.readouterr().err
    assert run_cli("analyze", str(run_dir), *flags, "--no-plot", "--force") == 0
    assert {p.name for p in a.iterdir()} == {"dynamics.json"}
    # plot: a sweep alone after sweep + dynamics
    s = tmp_path / "s.json"
    assert run_cli("sweep", str(run_dir), "--depths", "1:3", "--n", "4", "--no-progress", "--out", str(s)) == 0
    assert run_cli("analyze", str(run_dir), *flags, "--force") == 0
    assert run_cli("plot", str(s), str(a / "dynamics.json"), "--out", str(tmp_path / "f.png")) == 0
    assert (tmp_path / "f-dynamics.png").exists()
    mine = tmp_path / "f-dynamics-annotated.png"  # the user's own file: a name plot never writes
    mine.write_bytes(b"notes")
    assert run_cli("plot", str(s), "--out", str(tmp_path / "f.png"), "--force") == 0
    assert not (tmp_path / "f-dynamics.png").exists() and not (tmp_path / "f-trajectories.png").exists()
    assert mine.read_bytes() == b"notes"
    # sweep: the .png beside a JSON is removed only as the heatmap of an earlier --sizes sweep at that path
    (tmp_path / "s.png").write_bytes(b"\x89PNG the user's own figure")
    assert run_cli("sweep", str(run_dir), "--depths", "1:3", "--n", "4", "--no-progress", "--out", str(s),
                   "--force") == 0
    assert (tmp_path / "s.png").read_bytes() == b"\x89PNG the user's own figure"
    s.write_text(json.dumps({**json.loads(s.read_text()), "sizes": [6, 8],  # as an earlier --sizes sweep wrote
                             "accuracy_by_size": [[0.0] * 3] * 2}))
    assert run_cli("sweep", str(run_dir), "--depths", "1:3", "--n", "4", "--no-progress", "--out", str(s),
                   "--force") == 0
    assert not (tmp_path / "s.png").exists()


def test_a_signal_after_the_command_finished_ends_with_its_status(tmp_path):
    """Once a command has returned (its results written), the interpreter's teardown can take a second; a
    SIGTERM then ended the process as 143 with no word, for a finished command. A real process, signalled from
    inside its own teardown (a module global's finalizer), exits with the command's status."""
    import subprocess

    script = tmp_path / "late.py"
    script.write_text(
        "import os, signal, sys, time\n"
        "SIGS = (signal.SIGTERM, signal.SIGINT)\n"
        "class Late:\n"
        "    # runs in the teardown, after main() returned (module globals may be gone by then: bound here)\n"
        "    def __del__(self, kill=os.kill, pid=os.getpid(), sleep=time.sleep, sigs=SIGS):\n"
        "        for sig in sigs:\n"
        "            kill(pid, sig)\n"
        "        sleep(0.2)\n"
        "late = Late()\n"
        f"sys.argv = ['looplm', 'sweep', {str(tmp_path / 'missing')!r}]\n"
        "from looplm.launch import main\n"
        "sys.exit(main())\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("error:") == 1 and "Traceback" not in done.stderr


def test_sigterm_inside_a_weakref_callback_still_stops_the_command(tmp_path):
    """A SIGTERM that landed while Python ran a weakref callback (matplotlib frees figures through them, so `plot`
    hit it 6 times in 8) raised inside the callback: Python printed "Exception ignored" with a traceback, dropped
    it, and the command ran on to exit 0. The signal is now taken once the callback has returned."""
    script = tmp_path / "late.py"
    script.write_text(
        "import os, signal, sys, time, weakref\n"
        "from looplm.cli import run_command\n"
        "ns = {}\n"  # a callback whose code lives in a file named weakref.py, as the standard library's do
        "exec(compile('import os, signal\\ndef cb(ref):\\n    os.kill(os.getpid(), signal.SIGTERM)\\n'\n"
        "             '    for _ in range(1000):\\n        pass\\n', '/lib/weakref.py', 'exec'), ns)\n"
        "class K:\n    pass\n"
        "def body():\n"
        "    k = K()\n"
        "    r = weakref.ref(k, ns['cb'])\n"
        "    del k\n"  # the callback runs here, and the signal arrives inside it
        "    time.sleep(0.5)\n"  # the work goes on after the callback: the signal stops it there
        "    print('ran on')\n"
        "    return 0\n"
        "sys.exit(run_command(body))\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 143 and "ran on" not in done.stdout, (done.stdout, done.stderr)
    assert done.stderr.strip() == "error: terminated (SIGTERM)", done.stderr


def test_the_depth_table_prints_large_perplexities_whole():
    """Perplexities of 1000 or more were printed with one significant digit: 1499 as "1e+03", 1501 and 2499 both
    as "2e+03". They are whole numbers now, in columns as wide as the widest."""
    from looplm.cli import depth_table

    table = depth_table({"depths": [1, 2, 3, 4], "ppl": [1.5, 1499.4, 2499.0, 3.2e7]}, [1, 2, 3, 4], "ppl", "ppl")
    head, row = table.splitlines()
    assert row.split() == ["ppl", "1.500", "1499", "2499", "3.2e+07"] and len(head) == len(row)
    head, row = depth_table({"depths": [1, 1_000_000], "accuracy": [0.5, 0.25]}, [1, 1_000_000]).splitlines()
    assert len(head) == len(row) and head.index("1000000") + 7 == len(head)  # the widest loop count too
