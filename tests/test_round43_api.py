"""Round 43 (API, probe n41): load_weights names the caller's model's differing settings in one line; embed refuses
ids that are no (B, T) int tensor; a penalty refuses a step_fn that is no function; LoopedTransformer.step and
readout refuse a ctx that embed did not return; sample_loops re-validates its LoopsConfig and checks the generator;
log_spaced and trajectory_pca refuse odd input; encode takes a str; generate's use_cache is a bool."""

from __future__ import annotations

import copy
import dataclasses
import re

import numpy as np
import pytest
import torch

from looplm import checkpoint as ckpt
from looplm.config import ConfigError
from looplm.dynamics import log_spaced, trajectory_pca
from looplm.generate import generate
from looplm.looped import run_loop
from looplm.loops import sample_loops
from looplm.model import LoopedTransformer
from looplm.regularizers import fixed_point_residual, hutchinson, jsrr, jsrr_release, power_penalty
from looplm.tasks.tokenizers import BpeTokenizer, ByteTokenizer, CharTokenizer
from looplm.train import train

from .conftest import tiny_config, tiny_model_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("r43") / "run"
    train(tiny_config(train=dict(steps=1, eval_every=0), reg=dict(rho_every=0)), out, progress=False)
    return out


def test_load_weights_into_a_model_built_with_other_settings_names_them_in_one_line(run):
    """It said the checkpoint's model.safetensors "does not match config.json", then ~40 lines of torch's size
    mismatches: the checkpoint was whole, the caller's model was built with another d_model."""
    saved = ckpt.load_config(run).model
    other = dataclasses.replace(saved, d_model=48, d_ff=96)
    with pytest.raises(ckpt.CheckpointError) as e:
        ckpt.load_weights(run, LoopedTransformer(other))
    msg = str(e.value)
    assert "\n" not in msg and "size mismatch" not in msg
    assert re.match(r"^the model passed is built with other settings than \S+/config.json records \(d_model 48 vs "
                    r"32, d_ff 96 vs 64: model vs checkpoint\), so its weights do not fit: build it from the "
                    r"checkpoint's config with looplm.checkpoint.load_model\(path\)", msg), msg
    ckpt.load_weights(run, LoopedTransformer(saved))  # the right one loads


class Sub(LoopedTransformer):
    """A subclass: config.json does not describe it, so its tensors say what differs."""


def test_load_weights_into_a_module_of_another_shape_names_its_first_tensors(run):
    other = dataclasses.replace(ckpt.load_config(run).model, d_model=48)
    with pytest.raises(ckpt.CheckpointError) as e:
        ckpt.load_weights(run, Sub(other))
    msg = str(e.value)
    assert "\n" not in msg
    assert re.search(r"model.safetensors does not fit the state dict of Sub: tok_emb.weight \[16, 32\] in the file vs "
                     r"\[16, 48\] in the model; .*\(and \d+ more\); build the module as the run that saved it did "
                     r"\(its config.json\)$", msg), msg


@pytest.fixture(scope="module")
def model():
    return LoopedTransformer(tiny_model_config()).eval()


IDS = torch.tensor([[1, 2, 3], [4, 5, 6]])


@pytest.mark.parametrize("ids, error, match", [
    (IDS.float(), TypeError, r"integer token ids \(int64 or int32\), got a torch.float32 tensor"),
    (IDS.bool(), TypeError, r"got a torch.bool tensor"),
    (IDS.to(torch.uint8), TypeError, r"got a torch.uint8 tensor"),
    ([[1, 2]], TypeError, r"got a list"),
    (IDS[0], ValueError, r"a \(B, T\) tensor of token ids, got shape \(3,\) \(one sequence: input_ids\[None\]\)"),
    (IDS[None], ValueError, r"got shape \(1, 2, 3\)"),
    (IDS.to("meta"), ValueError, r"meta device"),
])
def test_embed_refuses_ids_that_are_no_b_t_integer_tensor(model, ids, error, match):
    """floats and uint8 were torch's embedding dtype error, bools passed the range check, 1-D and 3-D ids a tuple
    unpack, meta ids looplm's own range check's `.item()` error."""
    with pytest.raises(error, match=match):
        model(ids, 2)
    assert model(IDS.int(), 2).shape == (2, 3, 16)


@pytest.mark.parametrize("penalty", [jsrr, jsrr_release, power_penalty, hutchinson, fixed_point_residual])
def test_a_penalty_refuses_a_step_fn_that_is_no_function(penalty):
    with pytest.raises(TypeError, match=r"^step_fn must be a function h -> Phi\(h\) returning a tensor shaped like "
                                        r"h, got int$"):
        penalty(5, torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="the step function must return a state of h's shape"):  # kept
        penalty(lambda x: (x, x), torch.randn(2, 3, 4))


def test_run_loop_and_readout_refuse_a_ctx_embed_did_not_return(model):
    """'NoneType' object has no attribute 'e'."""
    h = torch.zeros(2, 3, 32)
    for call in (lambda: run_loop(model, h, None, 2), lambda: model.readout(h, {"e": None})):
        with pytest.raises(TypeError, match=r"^ctx must be the ctx that model.embed returned \(h, ctx = "
                                            r"model.embed\(input_ids\)\), got (NoneType|dict)$"):
            call()
    h0, ctx = model.embed(IDS)
    assert run_loop(model, h0, ctx, 2).shape == h0.shape


def _loops(sampler="lognormal", **kw):
    c = copy.deepcopy(tiny_config(loops=dict(sampler=sampler)).loops)
    for k, v in kw.items():
        setattr(c, k, v)
    return c


@pytest.mark.parametrize("cfg, match", [
    (_loops(max_loops=0), r"loops.min_loops: min_loops=1 exceeds max_loops=0"),
    (_loops(mu=float("nan")), r"loops.mu must be a finite number, got nan"),
    (_loops(sigma=-1.0), r"loops.sigma: must be > 0, got -1.0"),
    (_loops("poisson", rate=-1.0), r"loops.rate: must be > 0, got -1.0"),
])
def test_sample_loops_revalidates_a_loops_config_edited_after_construction(cfg, match):
    """A math domain error, NaN to int, or counts drawn as if sigma were 1 / from a negative rate, where fit
    refuses the same values."""
    with pytest.raises(ConfigError, match=match):
        sample_loops(cfg, torch.Generator().manual_seed(0), 10**6)


def test_sample_loops_checks_its_arguments_types():
    with pytest.raises(TypeError, match=r"^gen must be a torch.Generator \(torch.Generator\(\).manual_seed\(seed\)\), "
                                        r"got int$"):
        sample_loops(_loops(), 0, 10**6)
    with pytest.raises(TypeError, match=r"^cfg must be a LoopsConfig \(a Config's .loops\), got dict$"):
        sample_loops({"sampler": "fixed"}, torch.Generator(), 0)
    assert 1 <= sample_loops(_loops(), torch.Generator().manual_seed(0), 10**6) <= 6


@pytest.mark.parametrize("args, match", [
    ((0, 5, 3), r"^lo must be an integer >= 1, got 0$"),
    ((5, 1, 3), r"^hi must be >= lo, got lo=5, hi=1$"),
    ((1, 5, 0), r"^count must be an integer >= 1, got 0$"),
    ((1.5, 5, 3), r"^lo must be an integer >= 1, got 1.5$"),
])
def test_log_spaced_refuses_odd_ranges(args, match):
    """lo=0 was a math domain error, a reversed range swapped, count 0 gave both ends."""
    with pytest.raises(ValueError, match=match):
        log_spaced(*args)
    assert log_spaced(1, 5, 1) == [1, 5] and log_spaced(3, 3, 4) == [3]


def test_trajectory_pca_refuses_non_finite_states():
    with pytest.raises(ValueError, match=r"^trajectory_pca needs finite states; this trajectory holds NaN or inf$"):
        trajectory_pca(torch.full((3, 4, 5), float("nan")))


@pytest.mark.parametrize("tok", [CharTokenizer("0123456789+="), ByteTokenizer(),
                                 BpeTokenizer.train(["12 + 34 = 46"] * 20, 300)], ids=lambda t: type(t).__name__)
@pytest.mark.parametrize("given", [b"12", 5, [1, 2]])
def test_encode_takes_a_str(tok, given):
    """CharTokenizer: "'<=' not supported between instances of 'str' and 'int'" for bytes, "'int' object is not
    iterable" for 5."""
    with pytest.raises(TypeError, match=rf"^encode takes a str, got {type(given).__name__} "):
        tok.encode(given)
    assert tok.decode(tok.encode("12")) == "12"


def test_generate_refuses_a_use_cache_that_is_no_bool(model):
    """use_cache="no" is truthy: it decoded with the cache (a module of one's own was then refused for it)."""
    with pytest.raises(TypeError, match=r"^use_cache must be True or False, got 'no'$"):
        generate(model, [[1, 2]], 2, 3, eos_id=1, use_cache="no")
    assert generate(model, [[1, 2]], 2, 3, eos_id=1, use_cache=True) is not None


def test_addition_problems_and_batches_are_checked_where_they_are_made():
    """1.7 was cut to 1 ("1+3=" encoded without a word), [] was max() of nothing, a gen of 5 torch's randint
    overloads, and int32 or float targets failed inside torch's cross-entropy."""
    from looplm import AdditionTask, Batch

    task = AdditionTask(digits=2)
    with pytest.raises(TypeError, match="problems are pairs of integers, got 1.7 and 3"):
        task.encode_problems([1.7], [3])
    with pytest.raises(ValueError, match="no problems to encode"):
        task.encode_problems([], [])
    with pytest.raises(TypeError, match="gen must be a torch.Generator, got int"):
        task.train_batch(2, 5)
    b = task.held_out(4)
    assert len(task.encode_problems(np.array([12]), np.array([3]))) == 1  # numpy integers still read
    with pytest.raises(TypeError, match="its targets int64, got targets torch.int32"):
        Batch(b.input_ids, b.targets.int(), b.mask)
    with pytest.raises(TypeError, match="got input_ids torch.float32"):
        Batch(b.input_ids.float(), b.targets, b.mask)


def test_a_bad_mplbackend_does_not_stop_the_figures():
    """MPLBACKEND=nonsense failed matplotlib's import with its own line ("Key backend: 'nonsense' is not a valid
    value"), naming no variable, though the figures are drawn on Agg whatever it says."""
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import looplm.plots, matplotlib; print(matplotlib.get_backend())"],
                          env={**os.environ, "MPLBACKEND": "nonsense"}, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip().lower() == "agg", done.stderr
