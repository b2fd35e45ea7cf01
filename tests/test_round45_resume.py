"""Round 45, resume: settings that do not change the weights (reg.rho_every, the held-out split's data.test_size and
data.test_seed, a random sampler's loops.num_loops) may change on a resume, and say so; those that do change the
training stay refused. A fine-tune's chat template file named otherwise, or moved with the same text, is the same
template. A train.init_from that starts with ~ says that no shell expanded it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from looplm import checkpoint as ckpt
from looplm import fit, load_config
from looplm.cli import main
from looplm.config import Config
from looplm.errors import ConfigError
from tests.hf_fixtures import math_problems, save_tiny_base, tiny_chat_tokenizer, write_jsonl

TINY = {"model.d_model": 32, "model.d_ff": 64, "model.n_heads": 2, "train.batch_size": 8, "train.eval_every": 0,
        "data.test_size": 16, "loops.max_loops": 4, "model.max_seq_len": 16, "reg.rho_every": 0, "train.threads": 1,
        "train.checkpoint_every": 1, "train.keep_checkpoints": 3, "reg.start_step": 0}


def add_cfg(steps: int, preset: str = "addition-prenorm-stars", **more) -> Config:
    sets = {**TINY, "train.steps": steps, **more}
    return load_config(preset, [f"{k}={v}" for k, v in sets.items()])


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = (load_file(str(r / "checkpoint" / ckpt.WEIGHTS)) for r in (a, b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_evaluation_settings_and_the_rho_monitor_may_change_on_a_resume_and_the_weights_are_the_same(tmp_path,
                                                                                                     capsys):
    """They were refused as changes of the run, though runs differing only in them end with the same weights."""
    whole = fit(add_cfg(4), tmp_path / "whole", progress=False)
    cut = tmp_path / "cut"
    fit(add_cfg(2), cut, progress=False)
    capsys.readouterr()
    changed = {"reg.rho_every": 1, "data.test_size": 32, "data.test_seed": 7, "loops.num_loops": 3,
               "train.eval_every": 1}
    fit(add_cfg(4, **changed), cut, resume=True, progress=False)
    out = capsys.readouterr().out
    for line in ("reg.rho_every: checkpoint 0 vs requested 1", "data.test_size: checkpoint 16 vs requested 32",
                 "data.test_seed: checkpoint 1234 vs requested 7", "loops.num_loops: checkpoint 8 vs requested 3"):
        assert f"{line} (does not change the training)" in out
    assert "steps: checkpoint 2 vs requested 4" in out
    assert same_weights(whole, cut)  # bitwise, as said
    assert ckpt.load_config(cut / "checkpoint").loops.num_loops == 3  # (generate's default depth now)


@pytest.mark.parametrize("preset, sets, key", [
    ("addition-prenorm-stars", {"loops.sampler": "fixed"}, "loops.num_loops"),  # the depth trained
    ("addition-prenorm-stars", {"loops.curriculum_steps": 3}, "loops.num_loops"),  # trained first
    ("addition-prenorm-stars", {"train.stop_at_acc": 0.99, "train.eval_every": 1}, "loops.num_loops"),  # ends it
    ("addition-prenorm-stars", {}, "loops.max_loops"),  # the sampler's range: trained
])
def test_a_loop_setting_that_changes_the_training_is_still_refused(tmp_path, preset, sets, key):
    run = tmp_path / "run"
    fit(add_cfg(1, preset, **sets), run, progress=False)
    new = {"loops.num_loops": 3, "loops.max_loops": 3}[key]
    with pytest.raises(ConfigError, match=f"would change the run in .*{key}: checkpoint"):
        fit(add_cfg(2, preset, **{**sets, key: new}), run, resume=True, progress=False)
    assert ckpt.saved_step(run / "checkpoint") == 1


def test_a_jsonl_hash_split_seed_is_refused_and_its_test_size_is_not(tmp_path):
    """A jsonl run without data.test_path holds out rows by a hash seeded with data.test_seed: another seed trains
    on other rows."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(f'{{"prompt": "{a}*{b}=", "answer": "{a * b}"}}\n' for a in range(10) for b in range(10)))
    run = tmp_path / "run"
    fit(add_cfg(1, "jsonl-stars", **{"data.path": rows}), run, progress=False)
    with pytest.raises(ConfigError, match="data.test_seed: checkpoint"):
        fit(add_cfg(2, "jsonl-stars", **{"data.path": rows, "data.test_seed": 5}), run, resume=True, progress=False)
    fit(add_cfg(2, "jsonl-stars", **{"data.path": rows, "data.test_size": 4}), run, resume=True, progress=False)
    assert ckpt.saved_step(run / "checkpoint") == 2


def test_a_tilde_init_from_says_no_shell_expanded_it(tmp_path, monkeypatch, capsys):
    """`train.init_from=~/run` said "does not exist" (and `~x/run` "~x is no home folder"), where every other path
    says the ~ was not expanded."""
    monkeypatch.chdir(tmp_path)
    for path in ("~/run", "~nobody_looplm/run"):
        argv = ["train", "--config", "addition-prenorm-stars", "--out", "o", "--no-progress",
                "--set", f"train.init_from={path}"]
        for k, v in {**TINY, "train.steps": 1}.items():
            argv += ["--set", f"{k}={v}"]
        assert main(argv) == 2
        assert capsys.readouterr().err.strip() == (f"error: train.init_from={path} starts with ~, which is not "
                                                   "expanded here (no shell did it); give the full path")
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return save_tiny_base(tmp_path_factory.mktemp("base") / "ouro-tiny", tiny_chat_tokenizer())


def ft_cfg(base: str, data: str, steps: int, template: str) -> Config:
    t = dict(steps=steps, batch_size=4, lr=3e-3, log_every=1, checkpoint_every=1, threads=1)
    return Config.from_dict({"model": {"name_or_path": base},
                             "data": {"source": data, "max_length": 256, "chat_template": template}, "train": t})


def test_a_finetune_resumes_with_its_template_file_spelled_otherwise_or_moved(base_dir, tmp_path, monkeypatch):
    """`./gen.jinja` for the absolute path, and a copy of the file after the original was moved, were refused as
    changes of the run; a template of other text still is."""
    from looplm.hf.chat import CHATML_TEMPLATE

    data = str(write_jsonl(math_problems(12), tmp_path / "math.jsonl"))
    (tmp_path / "gen.jinja").write_text(CHATML_TEMPLATE)
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "r"
    fit(ft_cfg(str(base_dir), data, 1, str(tmp_path / "gen.jinja")), run, progress=False)
    fit(ft_cfg(str(base_dir), data, 2, "./gen.jinja"), run, resume=True, progress=False)
    (tmp_path / "gen.jinja").rename(tmp_path / "gen.moved")
    (tmp_path / "copy.jinja").write_text("\ufeff" + CHATML_TEMPLATE)  # (a BOM is no part of a template)
    fit(ft_cfg(str(base_dir), data, 3, str(tmp_path / "copy.jinja")), run, resume=True, progress=False)
    assert ckpt.saved_step(run / "checkpoint") == 3
    (tmp_path / "other.jinja").write_text(CHATML_TEMPLATE.replace("<|im_start|>", "<|im_start|> "))
    with pytest.raises(ConfigError, match="data.chat_template: checkpoint"):
        fit(ft_cfg(str(base_dir), data, 4, str(tmp_path / "other.jinja")), run, resume=True, progress=False)
    with pytest.raises(ConfigError, match="data.chat_template: checkpoint"):  # a name is compared as given
        fit(ft_cfg(str(base_dir), data, 4, "chatml"), run, resume=True, progress=False)
    assert ckpt.saved_step(run / "checkpoint") == 3


def test_a_sweep_or_analyze_of_the_runs_own_training_data_says_so(tmp_path, capsys, monkeypatch):
    """`sweep RUN --data <its data.path>` scored training rows as if held out, without a word."""
    monkeypatch.chdir(tmp_path)
    rows = "".join(f'{{"prompt": "{a}*{b}=", "answer": "{a * b}"}}\n' for a in range(10) for b in range(10))
    (tmp_path / "rows.jsonl").write_text(rows)
    (tmp_path / "own.jsonl").write_text("".join(rows.splitlines(True)[:5]))
    fit(add_cfg(1, "jsonl-stars", **{"data.path": "rows.jsonl"}), tmp_path / "j", progress=False)
    for cmd, data, said in (("sweep", str(tmp_path / "rows.jsonl"), "is"), ("analyze", "./rows.jsonl", "is"),
                            ("sweep", "own.jsonl", None)):
        capsys.readouterr()
        extra = ["--depths", "1,2"] if cmd == "sweep" else ["--depths", "1,2", "--spectral-depths", "1"]
        out = f"{cmd}-{len(data)}.json" if cmd == "sweep" else "an"
        assert main([cmd, "j", *extra, "--data", data, "--out", out, "--no-progress"]) == 0
        note = f"note: --data {data} {said} the run's training data (data.path=rows.jsonl): this scores problems"
        assert (note in capsys.readouterr().out) == (said is not None)
    (tmp_path / "corp").mkdir()
    (tmp_path / "corp" / "a.txt").write_text("the quick brown fox jumps over the lazy dog. " * 40)
    fit(add_cfg(1, "text-stars", **{"data.path": "corp", "data.window": 8}), tmp_path / "t", progress=False)
    capsys.readouterr()
    assert main(["sweep", "t", "--depths", "1", "--data", "corp/a.txt", "--out", "t.json", "--no-progress"]) == 0
    assert "note: --data corp/a.txt lies in the run's training data (data.path=corp)" in capsys.readouterr().out
