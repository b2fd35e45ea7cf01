"""Round 34's fixes: a preset name given as a Path that names a directory, perturbation_recovery's overflow and a
mapping for eps, plot's duplicate check by the file itself (a hard link), a resume in another precision than the
checkpoint's, and the damaged-checkpoint hint's wording from Python."""

import shutil
from pathlib import Path

import pytest
import torch

from looplm import checkpoint as ckpt
from looplm.config import ConfigError, load_config
from looplm.dynamics import perturbation_recovery
from looplm.model import LoopedTransformer
from looplm.plots import plot_inputs
from looplm.tasks.addition import AdditionTask
from looplm.train import fit

from .conftest import tiny_config, tiny_model_config


def test_a_preset_name_as_a_path_to_a_directory_says_to_pass_the_string(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "addition-stars").mkdir()  # a run named after its preset
    with pytest.raises(ConfigError, match=r"directory; give a YAML file or a preset name; for the preset, pass the "
                                          r"string 'addition-stars'$"):
        load_config(Path("addition-stars"))
    assert load_config("addition-stars").model.d_model  # the string is the preset
    (tmp_path / "mine").mkdir()  # no preset of that name: no hint
    with pytest.raises(ConfigError, match=r"config mine is a directory; give a YAML file or a preset name$"):
        load_config(Path("mine"))


def test_perturbation_recovery_refuses_overflow_and_a_mapping_for_eps():
    torch.manual_seed(0)
    m = LoopedTransformer(tiny_model_config(max_seq_len=16)).eval()
    b = AdditionTask(2).test_batch(4, seed=3)
    with pytest.raises(ValueError, match=r"^eps=1e\+30: the disturbed states at depth 3 overflow .*give a smaller eps"):
        perturbation_recovery(m, b, 2, [0.1, 1e30], [1])  # its distances were NaN in a "JSON-ready" result
    with pytest.raises(ValueError, match=r"^eps must be a list, got \{0.1: 1\}"):
        perturbation_recovery(m, b, 2, {0.1: 1}, [1])  # ran with the dict's keys
    with torch.no_grad():
        m.tok_emb.weight.mul_(1e36)  # the model's own loop overflows: the model is blamed, as diagnose does
    with pytest.raises(ValueError, match=r"^the model's (states|readout logits) at depth 3 are"):
        perturbation_recovery(m, b, 2, [0.1], [1])


def test_plot_refuses_a_result_given_twice_through_a_hard_link(tmp_path):
    doc = '{"depths": [1, 2], "accuracy": [0.5, 0.75], "state_norm": [1.0, 1.5], "n": 4}'
    (tmp_path / "d.json").write_text(doc)
    (tmp_path / "hl.json").hardlink_to(tmp_path / "d.json")
    with pytest.raises(ValueError, match=r"hl.json is given twice \(as .*d.json and as .*hl.json\)"):
        plot_inputs([str(tmp_path / "d.json"), str(tmp_path / "hl.json")], tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()
    plot_inputs([str(tmp_path / "d.json")], tmp_path / "p.png")  # (the file alone is drawn)
    assert (tmp_path / "p.png").exists()


@pytest.fixture(scope="module")
def f64_run(tmp_path_factory):
    """A run fit trained with a float64 module, with an older checkpoint in checkpoints/."""
    cfg = tiny_config(train=dict(steps=2, checkpoint_every=1, keep_checkpoints=3, eval_every=0), reg=dict(rho_every=0))
    out = tmp_path_factory.mktemp("f64") / "run"
    torch.manual_seed(0)
    fit(cfg, out, model=LoopedTransformer(cfg.model).double(), progress=False)
    return cfg, out


def test_a_resume_in_another_precision_than_the_checkpoints_is_refused(f64_run, tmp_path):
    """It resumed in float32 with no word, its later checkpoints float32: the run changed precision mid-run."""
    cfg, run = f64_run
    out = tmp_path / "run"
    shutil.copytree(run, out)
    cfg3 = tiny_config(train=dict(steps=3, checkpoint_every=1, keep_checkpoints=3, eval_every=0), reg=dict(rho_every=0))
    with pytest.raises(ConfigError, match=r"^resume=True would continue the run in float32 \(the one fit builds\), "
                                          r"but .* holds float64 weights: its precision would change mid-run; pass "
                                          r"the module in that precision: fit\(cfg, out, resume=True, model=Looped"
                                          r"Transformer\(cfg.model\).to\(torch.float64\)\), or start a new run$"):
        fit(cfg3, out, resume=True, progress=False)
    with pytest.raises(ConfigError, match=r"in float32 \(the module's\).*\(module.to\(torch.float64\)\)"):
        fit(cfg3, out, resume=True, model=LoopedTransformer(cfg.model), progress=False)
    fit(cfg3, out, resume=True, model=LoopedTransformer(cfg.model).double(), progress=False)
    assert ckpt.load_state(out)["step"] == 3


def test_the_damaged_checkpoint_hint_names_fits_resume_from_python(f64_run, tmp_path):
    cfg, run = f64_run
    out = tmp_path / "run"
    shutil.copytree(run, out)
    w = out / "checkpoint" / ckpt.WEIGHTS
    w.write_bytes(w.read_bytes()[:-1] + bytes([w.read_bytes()[-1] ^ 1]))
    for call in (lambda: ckpt.load_weights(out, LoopedTransformer(cfg.model)),  # was "--resume continues ..."
                 lambda: fit(cfg.with_overrides([f"train.init_from={out}"]), tmp_path / "ft", progress=False)):
        with pytest.raises(ckpt.CheckpointError, match=r"Older checkpoints: .*\(load one directly; resume=True "
                                                       r"continues from the newest whole one\)$"):
            call()
