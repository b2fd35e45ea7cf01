"""Round 46: the HF models (Ouro, the looplm export) honour or refuse what they are handed. Packed batches described
by cu_seq_lens_q/k or seq_idx (DataCollatorWithFlattening without position_ids) ran as one causal sequence, and any
other unknown keyword was dropped by **kwargs; Ouro took the exit-weighted average beside an exit_threshold, failed
inside its attention setup with a static cache, recorded attn_implementation="eager" while running SDPA and ignored
a num_loops config key; the export sent attn_implementation="sdpa" to transformers' "request support" message;
short labels were blamed on logits_to_keep; convert_checkpoint named CLI flags to a Python caller."""

import pytest
import torch

pytest.importorskip("transformers")

from transformers import AutoConfig, AutoModelForCausalLM, DataCollatorWithFlattening  # noqa: E402

from looplm.hf import LooplmConfig, LooplmForCausalLM, register  # noqa: E402
from looplm.hf.configuration_ouro import OuroConfig  # noqa: E402

from .conftest import tiny_config  # noqa: E402
from .hf_fixtures import tiny_ouro  # noqa: E402

A, B = [5, 9, 11, 3, 7, 20, 8], [4, 30, 6, 12]


@pytest.fixture(scope="module")
def ouro():
    return tiny_ouro(64).double().eval()


@pytest.fixture(scope="module")
def export():
    torch.manual_seed(0)
    cfg = tiny_config(loops=dict(num_loops=2))
    return LooplmForCausalLM(LooplmConfig.from_model_config(cfg.model, num_loops=2)).eval()


def _packed(**kw):
    return DataCollatorWithFlattening(**kw)([{"input_ids": A, "labels": A}, {"input_ids": B, "labels": B}])


@pytest.mark.parametrize("kw", [dict(return_position_ids=False, return_flash_attn_kwargs=True),
                                dict(return_position_ids=False, return_seq_idx=True),
                                dict(return_position_ids=True, return_seq_idx=True, return_flash_attn_kwargs=True)])
def test_ouro_reads_packed_boundaries_as_separate_sequences(ouro, kw):
    batch = _packed(**kw)
    assert "position_ids" not in batch or kw["return_position_ids"]
    with torch.no_grad():
        for n in (1, 3):
            got = ouro(**batch, num_loops=n)
            torch.testing.assert_close(got.logits[0, :len(A)], ouro(torch.tensor([A]), num_loops=n).logits[0])
            torch.testing.assert_close(got.logits[0, len(A):], ouro(torch.tensor([B]), num_loops=n).logits[0])
            # the same loss as the packed batch described by restarting position_ids (round 43)
            want = ouro(**_packed(return_position_ids=True), num_loops=n).loss
            torch.testing.assert_close(got.loss, want)


def test_ouro_refuses_packed_boundaries_it_cannot_read(ouro):
    batch = _packed(return_position_ids=False, return_flash_attn_kwargs=True)
    ids, cu = batch["input_ids"], batch["cu_seq_lens_q"]
    with pytest.raises(ValueError, match="position_ids do not restart where cu_seq_lens_q/cu_seq_lens_k say"):
        ouro(ids, cu_seq_lens_q=cu, cu_seq_lens_k=cu, position_ids=torch.arange(ids.shape[1]))
    with pytest.raises(ValueError, match="cumulative sequence lengths .* for one flattened row"):
        ouro(ids.expand(2, -1), cu_seq_lens_q=cu, cu_seq_lens_k=cu)
    with pytest.raises(ValueError, match="cumulative sequence lengths"):
        ouro(ids, cu_seq_lens_q=cu, cu_seq_lens_k=torch.tensor([0, 3, ids.shape[1]]))
    with pytest.raises(ValueError, match="seq_idx of shape \\(5,\\) does not fit 1 rows of 11 tokens"):
        ouro(ids, seq_idx=torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="no KV cache and no padding"):
        ouro(ids, attention_mask=torch.tensor([[0] + [1] * 10]), seq_idx=torch.tensor([[0] * 7 + [1] * 4]))


def test_unknown_forward_arguments_are_refused_by_name(ouro, export):
    ids = torch.tensor([A])
    for model, name in ((ouro, "OuroForCausalLM"), (ouro.model, "OuroModel"), (export, "LooplmForCausalLM")):
        with pytest.raises(TypeError, match=f"{name}.forward\\(\\) got unexpected keyword argument\\(s\\) foo, "
                                            "token_mask"):
            model(ids[:, :5] % 14, foo=1, token_mask=None)
        model(ids[:, :5] % 14, cache_position=torch.arange(5))  # transformers' own, not needed: accepted
    # generate() hands the forwards only what they read
    assert ouro.generate(ids, max_new_tokens=2, do_sample=False).shape == (1, 9)
    assert export.generate(ids[:, :3] % 14, max_new_tokens=2, do_sample=False).shape == (1, 5)


def test_export_refuses_packed_boundaries(export):
    batch = _packed(return_position_ids=False, return_flash_attn_kwargs=True)
    ids = batch["input_ids"] % 14
    for kw in ({k: batch[k] for k in ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")},
               {"seq_idx": torch.tensor([[0] * 7 + [1] * 4])}):
        with pytest.raises(ValueError, match=r"one sequence a row .*packed sequences \((cu_seq_lens|seq_idx)"):
            export(ids, **kw)


def test_ouro_refuses_the_weighted_exit_beside_a_threshold(ouro):
    ids = torch.tensor([A])
    with pytest.raises(ValueError, match="use_weighted_exit=True and exit_threshold are two exit rules"):
        ouro(ids, exit_threshold=0.5, use_weighted_exit=True)
    with pytest.raises(ValueError, match="two exit rules"):
        ouro.generate(ids, max_new_tokens=2, exit_threshold=0.5, use_weighted_exit=True)
    ouro(ids, use_weighted_exit=True)  # with the config's own threshold (no call's): the average, as before


def test_ouro_refuses_a_static_cache(ouro):
    from transformers import GenerationConfig

    ids = torch.tensor([A])
    for kind in ("static", "offloaded_static"):
        with pytest.raises(ValueError, match=f"cache_implementation='{kind}' cannot hold Ouro's looped KV cache"):
            ouro.generate(ids, max_new_tokens=2, cache_implementation=kind)
    with pytest.raises(ValueError, match="cache_implementation='static'"):
        ouro.generate(ids, generation_config=GenerationConfig(max_new_tokens=2, cache_implementation="static"))
    with pytest.raises(TypeError, match="attention_mask must be a \\(batch, length\\) tensor"):
        ouro(ids, attention_mask={"full_attention": None})
    assert ouro.generate(ids, max_new_tokens=2, cache_implementation="dynamic").shape == (1, 9)


def test_attn_implementation_is_sdpa_or_refused_in_looplms_words(ouro, export, tmp_path):
    register()
    for model, name in ((ouro, "OuroForCausalLM"), (export, "LooplmForCausalLM")):
        path = tmp_path / name
        model.save_pretrained(path)
        assert AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa").config._attn_implementation \
            == "sdpa"
        assert AutoModelForCausalLM.from_pretrained(path).config._attn_implementation == "sdpa"
        with pytest.raises(ValueError, match=f"{name} always runs its attention in torch's "
                                             "scaled_dot_product_attention: attn_implementation='eager'"):
            AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager")


def test_ouro_reads_num_loops_as_total_ut_steps(ouro, tmp_path):
    register()
    ouro.save_pretrained(tmp_path)
    ids = torch.tensor([A])
    want = ouro(ids, num_loops=2).logits
    m = AutoModelForCausalLM.from_pretrained(tmp_path, num_loops=2, dtype=torch.float64).eval()
    assert m.config.total_ut_steps == 2
    torch.testing.assert_close(m(ids).logits, want)
    assert AutoConfig.from_pretrained(tmp_path, num_loops=2).total_ut_steps == 2
    assert OuroConfig(num_loops=3).total_ut_steps == 3 and OuroConfig().total_ut_steps == 4
    with pytest.raises(ValueError, match="num_loops=2 and total_ut_steps=3 disagree"):
        OuroConfig(num_loops=2, total_ut_steps=3)


def test_labels_of_another_shape_are_said_to_be_so(ouro, export):
    for model, ids in ((ouro, torch.tensor([A, A])), (export, torch.tensor([A, A]) % 14)):
        with pytest.raises(ValueError, match=r"labels of shape \(2, 3\) must have the input's shape \(2, 7\)"):
            model(ids, labels=ids[:, :3])
        with pytest.raises(ValueError, match=r"logits_to_keep=0"):
            model(ids, labels=ids, logits_to_keep=2)


def test_convert_checkpoint_names_its_argument_to_a_python_caller(tmp_path):
    from looplm.errors import UserError
    from looplm.hf.looplm_hf import check_new_model_dir

    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match=r"^out .* exists and is not empty; convert_checkpoint writes a new model"):
        check_new_model_dir(tmp_path)


def test_one_segment_of_token_type_ids_is_read_as_none_and_two_are_refused(ouro, export):
    """A WordPiece tokenizer's output holds token_type_ids, so model(**tok(text)) passes them: one segment (all
    zeros) is what a causal LM reads anyway; two segments would need segment embeddings the models lack."""
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        for model in (ouro, export):
            assert torch.equal(model(ids).logits, model(ids, token_type_ids=torch.zeros_like(ids)).logits)
            with pytest.raises(TypeError, match="segment"):
                model(ids, token_type_ids=torch.tensor([[0, 0, 1, 1]]))
