"""A switch of the HF API is a bool: a string is a true value to Python, so `use_weighted_exit="false"` averaged the
loops' logits and `output_loop_logits="no"` returned them, without a word."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from .hf_fixtures import tiny_ouro  # noqa: E402


def test_a_string_for_a_switch_is_refused_naming_it():
    from looplm.hf.configuration_ouro import OuroConfig

    m = tiny_ouro(320)
    x = torch.tensor([[5, 6, 7, 8]])
    plain = m.generate(x, max_new_tokens=4, do_sample=False, use_weighted_exit=False)
    assert torch.equal(plain, m.generate(x, max_new_tokens=4, do_sample=False))
    with pytest.raises(ValueError, match="use_weighted_exit must be True or False, got 'false'"):
        m.generate(x, max_new_tokens=4, do_sample=False, use_weighted_exit="false")
    for name, value in (("output_loop_logits", "no"), ("use_cache", "no"), ("return_dict", "false"),
                        ("output_hidden_states", 1)):
        with pytest.raises(ValueError, match=f"{name} must be True or False"):
            m(x, **{name: value})
    assert m(x, output_loop_logits=False).loop_logits is None and len(m(x, output_loop_logits=True).loop_logits) == 4
    with pytest.raises(ValueError, match=r"use_cache must be True or False \(or None\), got 'false'"):
        OuroConfig(use_cache="false")  # a hand-edited config.json
    with pytest.raises(ValueError, match="use_sliding_window must be True or False \\(or None\\), got 'no'"):
        OuroConfig(use_sliding_window="no")


def test_a_config_switch_written_null_is_read_as_before():
    """config.json's `"use_sliding_window": null` (or `"use_cache": null`) loaded as false before the switches were
    checked; the check refused it ("must be True or False, got None"), a config that had always loaded."""
    from looplm.hf.configuration_ouro import OuroConfig

    cfg = OuroConfig(use_sliding_window=None, use_cache=None, sliding_window=8)
    assert cfg.use_sliding_window is False and cfg.sliding_window is None and not cfg.use_cache


def test_a_looplm_exports_switches_too(tmp_path):
    from looplm.hf.looplm_hf import LooplmConfig, LooplmForCausalLM

    m = LooplmForCausalLM(LooplmConfig(vocab_size=16, d_model=16, n_heads=2, d_ff=32, max_seq_len=8))
    x = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="output_loop_logits must be True or False, got 'no'"):
        m(x, output_loop_logits="no")
    assert m(x, output_loop_logits=False).loop_logits is None


def test_replace_and_split_digits_are_switches_too(tmp_path):
    """eval_depths(replace="no") and plot_depths(replace="no") wrote over an earlier result ("no" is a true value),
    and train_chat_tokenizer(split_digits="false") split digits anyway."""
    from looplm.hf.lm_eval_depths import eval_depths, plot_depths
    from looplm.hf.tokenizer import train_chat_tokenizer

    (tmp_path / "eval_lm.json").write_text('{"precious": 1}\n')
    with pytest.raises(ValueError, match="replace must be True or False, got 'no'"):
        eval_depths(str(tmp_path / "no-model"), ["t"], [1], out=tmp_path, replace="no")
    (tmp_path / "keep.png").write_bytes(b"KEEP")
    rows = [{"loops": n, "metrics": {"t": {"acc": 0.5}}} for n in (1, 2)]
    with pytest.raises(ValueError, match="replace must be True or False, got 'no'"):
        plot_depths(rows, tmp_path / "keep.png", replace="no")
    assert (tmp_path / "eval_lm.json").read_text() == '{"precious": 1}\n'
    assert (tmp_path / "keep.png").read_bytes() == b"KEEP"
    with pytest.raises(ValueError, match="split_digits must be True or False, got 'false'"):
        train_chat_tokenizer(["12345 abc"], 300, split_digits="false")
