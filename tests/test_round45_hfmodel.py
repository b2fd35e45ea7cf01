"""Round 45: the HF models honour or refuse transformers' forward arguments, never drop them. The export
(LooplmForCausalLM) took `**kwargs` and returned hidden_states=None for output_hidden_states=True, and ran packed
position_ids (DataCollatorWithFlattening) at 0..T-1; Ouro ignored config.output_hidden_states, and both returned
attentions=None for output_attentions=True; Ouro ran packed rows with causal attention across the
sequences. An --out inside a --data folder named it "the --data file"."""

import pytest
import torch

pytest.importorskip("transformers")

from looplm.cli import data_inputs, main  # noqa: E402
from looplm.hf import LooplmConfig, LooplmForCausalLM  # noqa: E402

from .conftest import tiny_config  # noqa: E402
from .hf_fixtures import math_problems, save_tiny_base, tiny_chat_tokenizer, tiny_ouro, write_jsonl  # noqa: E402


@pytest.fixture(scope="module")
def export():
    torch.manual_seed(0)
    cfg = tiny_config(loops=dict(num_loops=2))
    return LooplmForCausalLM(LooplmConfig.from_model_config(cfg.model, num_loops=2)).eval()


def test_export_accepts_only_its_own_positions(export):
    ids = torch.randint(2, 14, (2, 6))
    want = export(ids).logits
    # the default positions, in any of transformers' shapes, are the model's own: same logits
    for pos in (torch.arange(6), torch.arange(6)[None], torch.arange(6).expand(2, 6)):
        torch.testing.assert_close(export(ids, position_ids=pos).logits, want)
    # a right-padded row's pads get other positions from transformers (cumsum - 1, filled): never read, accepted
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    torch.testing.assert_close(export(ids, attention_mask=mask, position_ids=pos).logits[1, :4],
                               export(ids[1:, :4]).logits[0])
    # packed sequences (positions restarting inside a row) ran at 0..T-1, attending across sequences
    with pytest.raises(ValueError, match=r"positions 0, 1, \.\.\., T-1 .*packed sequences.*DataCollatorWithFlattening"):
        export(ids, position_ids=torch.tensor([[0, 1, 2, 0, 1, 2]] * 2))
    with pytest.raises(ValueError, match=r"position_ids of shape \(5,\) do not fit input_ids of shape \(2, 6\)"):
        export(ids, position_ids=torch.arange(5))
    with pytest.raises(ValueError, match="takes input_ids, not inputs_embeds"):
        export(ids, inputs_embeds=torch.zeros(2, 6, export.config.d_model))


def test_export_refuses_hidden_states_and_attentions(export):
    ids = torch.randint(2, 14, (1, 5))
    with pytest.raises(ValueError, match=r"output_loop_logits=True, or run the loop yourself with model\.embed"):
        export(ids, output_hidden_states=True)
    with pytest.raises(ValueError, match="returns no attention weights"):
        export(ids, output_attentions=True)
    assert export(ids, output_hidden_states=False, output_attentions=False).logits.shape[:2] == (1, 5)
    # the config's setting is read as transformers models read it (the call's None: the config's)
    export.config.output_hidden_states = True
    try:
        with pytest.raises(ValueError, match="returns no hidden_states"):
            export(ids)
        assert export(ids, output_hidden_states=False).logits is not None
    finally:
        export.config.output_hidden_states = False
    # generate() handed them to forward (prepare_inputs_for_generation dropped them): refused there too
    with pytest.raises(ValueError, match="returns no hidden_states"):
        export.generate(ids, max_new_tokens=2, do_sample=False, output_hidden_states=True,
                        return_dict_in_generate=True)


def test_ouro_reads_the_configs_hidden_states_and_refuses_attentions():
    m = tiny_ouro(64).eval()
    ids = torch.randint(0, 64, (1, 5))
    assert m(ids).hidden_states is None
    m.config.output_hidden_states = True
    assert len(m(ids).hidden_states) == m.config.total_ut_steps  # one per loop, as with the argument
    assert m(ids, output_hidden_states=False).hidden_states is None
    m.config.output_hidden_states = False
    assert len(m(ids, output_hidden_states=True).hidden_states) == m.config.total_ut_steps
    with pytest.raises(ValueError, match="Ouro returns no attention weights.*drop output_attentions=True"):
        m(ids, output_attentions=True)
    with pytest.raises(ValueError, match="Ouro returns no attention weights"):
        m.model(ids, output_attentions=True)
    with pytest.raises(ValueError, match="Ouro returns no attention weights"):
        m.generate(ids, max_new_tokens=2, do_sample=False, output_attentions=True, return_dict_in_generate=True)
    g = m.generate(ids, max_new_tokens=2, do_sample=False, output_hidden_states=True, return_dict_in_generate=True)
    assert len(g.hidden_states) == 2 and len(g.hidden_states[0]) == m.config.total_ut_steps


def test_an_out_inside_a_data_folder_names_a_folder(tmp_path, capsys):
    folder = tmp_path / "hs"
    folder.mkdir()
    write_jsonl(math_problems(3), folder / "train.jsonl")
    assert data_inputs(tiny_config(), str(folder))[folder] == "the --data folder"
    assert data_inputs(tiny_config(), str(folder / "train.jsonl"))[folder / "train.jsonl"] == "the --data file"
    tok = tiny_chat_tokenizer()
    d = save_tiny_base(tmp_path / "base", tok)
    capsys.readouterr()
    assert main(["analyze", str(d), "--data", str(folder), "--out", str(folder / "data"), "--depths", "1",
                 "--no-plot", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"would write into the --data folder ({folder})" in err, err
    assert not (folder / "data").exists()


def test_ouro_attends_within_each_packed_sequence():
    """Packed rows (positions restarting inside a row, DataCollatorWithFlattening) got their positions but plain
    causal attention across the sequences: a Trainer with packing trained on a silently wrong loss."""
    from transformers import DataCollatorWithFlattening

    m = tiny_ouro(64).double().eval()
    seqs = [[5, 6, 7], [8, 9, 10, 11], [12, 13]]
    batch = DataCollatorWithFlattening()([{"input_ids": s} for s in seqs])
    alone = [m(torch.tensor([s])).logits[0] for s in seqs]
    for use_cache in (False, True):  # an eval forward makes an (empty) cache: packing holds there too
        out = m(**batch, use_cache=use_cache)
        torch.testing.assert_close(out.logits[0], torch.cat(alone), rtol=1e-12, atol=1e-12)
    # the loss is the mean over the packed targets, as over each sequence's targets run alone
    ce = torch.nn.functional.cross_entropy
    want = sum(ce(lg[:-1], torch.tensor(s[1:]), reduction="sum") for lg, s in zip(alone, seqs, strict=True)) / 6
    torch.testing.assert_close(out.loss, want.float())  # (the loss is computed in float32)
    # one packing per row; a one-dimensional position_ids and an all-ones attention mask read the same way
    ids, pos = batch["input_ids"], batch["position_ids"]
    two = m(torch.cat([ids, ids.flip(-1)]), position_ids=torch.cat([pos, torch.arange(9)[None]])).logits
    torch.testing.assert_close(two[0], torch.cat(alone), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(two[1], m(ids.flip(-1)).logits[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m(ids, attention_mask=torch.ones_like(ids), position_ids=pos[0]).logits[0],
                               torch.cat(alone), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"position_ids of shape \(1, 8\) do not fit 1 rows of 9 tokens"):
        m(ids, position_ids=pos[:, :8])
