"""Round 46, fit: a float16 module is refused up front (AdamW's eps underflows there: every weight was NaN after
step 1, blamed on the loss and the weights); fit under torch.no_grad() trains, and under torch.inference_mode() is
refused with a message that says so (spectral_norm too); a resume may change reg.impl (float rounding only); a
fine-tune trained with the tokenizer's own template resumes with that template written into the config."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from looplm import LoopedTransformer, fit
from looplm import checkpoint as ckpt
from looplm.errors import ConfigError
from looplm.spectra import spectral_norm, spectral_radius
from tests.hf_fixtures import math_problems, save_tiny_base, tiny_chat_tokenizer, write_jsonl
from tests.test_round45_resume import add_cfg, ft_cfg  # (reg.start_step=0: the penalty trains from step 1)


def test_a_float16_module_is_refused_before_training_and_bfloat16_trains(tmp_path):
    """AdamW's eps (1e-8) is 0 in float16: step 1 wrote NaN into every weight, and the run ended refusing to write
    a checkpoint of non-finite weights (or a module of one's own, blaming the weights at the final evaluation)."""
    cfg = add_cfg(2)
    with pytest.raises(TypeError, match=r"float16 parameters .*AdamW's eps .*model\.float\(\).*train\.bf16"):
        fit(cfg, tmp_path / "h", model=LoopedTransformer(cfg.model).half(), progress=False)
    assert not (tmp_path / "h").exists()
    run = fit(cfg, tmp_path / "b", model=LoopedTransformer(cfg.model).bfloat16(), progress=False)
    weights = load_file(str(run / "checkpoint" / ckpt.WEIGHTS))
    assert all(w.dtype == torch.bfloat16 and torch.isfinite(w).all() for w in weights.values())


def test_a_float16_default_dtype_is_refused_too(tmp_path):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    try:
        with pytest.raises(TypeError, match="torch's default dtype is float16"):
            fit(add_cfg(1), tmp_path / "h", progress=False)
    finally:
        torch.set_default_dtype(previous)
    assert not (tmp_path / "h").exists()


def test_fit_trains_under_no_grad_and_refuses_inference_mode_clearly(tmp_path):
    """Both were torch's "element 0 of tensors does not require grad and does not have a grad_fn"."""
    with torch.no_grad():
        fit(add_cfg(2), tmp_path / "ng", progress=False)
        assert not torch.is_grad_enabled()  # the caller's mode comes back
    assert ckpt.saved_step(tmp_path / "ng" / "checkpoint") == 2
    with torch.inference_mode(), pytest.raises(ValueError, match=r"outside torch\.inference_mode\(\)"):
        fit(add_cfg(2), tmp_path / "im", progress=False)
    assert not (tmp_path / "im").exists()


def test_spectral_norm_under_inference_mode_says_it_needs_autograd():
    w = torch.randn(8, 8, generator=torch.Generator().manual_seed(0)) * 0.3
    step = lambda h: torch.tanh(h @ w)  # noqa: E731
    h = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        sigma = spectral_norm(step, h, iters=30).raw
    with torch.inference_mode():
        with pytest.raises(ValueError, match=r"spectral_norm needs autograd .*outside torch\.inference_mode\(\)"):
            spectral_norm(step, h, iters=30)
        rho = spectral_radius(step, h.clone(), iters=30).raw  # (a JVP: forward mode works there)
    assert torch.isfinite(sigma).any() and torch.isfinite(rho).any()


def test_a_resume_may_change_reg_impl_which_changes_float_rounding_only(tmp_path, capsys):
    """config.py says the two give the same value and gradients; the resume refused the change of the run."""
    whole = fit(add_cfg(4, **{"reg.impl": "auto"}), tmp_path / "whole", progress=False)
    cut = tmp_path / "cut"
    fit(add_cfg(2, **{"reg.impl": "auto"}), cut, progress=False)
    capsys.readouterr()
    fit(add_cfg(4, **{"reg.impl": "autograd"}), cut, resume=True, progress=False)
    out = capsys.readouterr().out
    assert "reg.impl: checkpoint 'auto' vs requested 'autograd' (changes float rounding only)" in out
    a, b = (load_file(str(r / "checkpoint" / ckpt.WEIGHTS)) for r in (whole, cut))
    # (measured here: 2e-9 at most, in the attention key bias, whose gradient is round-off alone)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return save_tiny_base(tmp_path_factory.mktemp("base") / "ouro-tiny", tiny_chat_tokenizer())


def test_a_finetune_on_the_tokenizers_template_resumes_with_that_template_named(base_dir, tmp_path, capsys):
    """data.chat_template unset (the tokenizer's own) and then set to a file of that very text, or to `chatml`
    where the tokenizer's own is ChatML's text, was refused as a change of the run; a template of other text
    still is."""
    from looplm.hf.chat import CHATML_TEMPLATE

    assert (base_dir / "chat_template.jinja").read_text() == CHATML_TEMPLATE  # (the fixture's template)
    data = str(write_jsonl(math_problems(12), tmp_path / "math.jsonl"))
    run = tmp_path / "r"
    fit(ft_cfg(str(base_dir), data, 1, None), run, progress=False)
    (tmp_path / "own.jinja").write_text((base_dir / "chat_template.jinja").read_text())
    (tmp_path / "other.jinja").write_text(CHATML_TEMPLATE.replace("<|im_start|>", "<|im_start|> "))
    with pytest.raises(ConfigError, match="data.chat_template: checkpoint None vs requested"):
        fit(ft_cfg(str(base_dir), data, 2, str(tmp_path / "other.jinja")), run, resume=True, progress=False)
    capsys.readouterr()
    fit(ft_cfg(str(base_dir), data, 2, str(tmp_path / "own.jinja")), run, resume=True, progress=False)
    assert "data.chat_template: checkpoint None vs requested" in capsys.readouterr().out
    assert ckpt.saved_step(run / "checkpoint") == 2
    run2 = tmp_path / "r2"
    fit(ft_cfg(str(base_dir), data, 1, None), run2, progress=False)
    fit(ft_cfg(str(base_dir), data, 2, "chatml"), run2, resume=True, progress=False)
    assert ckpt.saved_step(run2 / "checkpoint") == 2


def test_a_float16_pretrained_model_is_finetuned_in_float32(base_dir, tmp_path):
    """(A guard: the fine-tune loads every model in float32, so a float16 checkpoint trains as AdamW needs.)"""
    from transformers import AutoModelForCausalLM

    import looplm.hf  # noqa: F401 (registers the Ouro classes)

    half = tmp_path / "half"
    AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float16).save_pretrained(half)
    tiny_chat_tokenizer().save_pretrained(half)
    data = str(write_jsonl(math_problems(12), tmp_path / "math.jsonl"))
    run = fit(ft_cfg(str(half), data, 2, None), tmp_path / "r", progress=False)
    weights = load_file(str(run / "checkpoint" / "model.safetensors"))
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in weights.values())
