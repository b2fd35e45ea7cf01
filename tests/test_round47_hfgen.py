"""Round 47: the HF looped models' generation and loading settings. use_weighted_exit / exit_dtype in a generation
config were ignored on Ouro (last-loop logits without a word) and taken silently on the export;
from_pretrained(path, num_loops=2.5 / True / None, or a disagreeing num_loops + total_ut_steps) skipped the config's
checks; generate(**tok(text)) with a WordPiece tokenizer's token_type_ids was refused by transformers; a StaticCache
object failed blaming attention_mask in generate() and was swapped for a DynamicCache in the forward; a stray
num_loops in config.json was refused without naming the file and key; Ouro's set_attn_implementation("eager") was
taken without a word."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig, StaticCache  # noqa: E402

from looplm.hf import LooplmConfig, LooplmForCausalLM, register  # noqa: E402

from .conftest import tiny_config  # noqa: E402
from .hf_fixtures import tiny_ouro  # noqa: E402

IDS = torch.tensor([[5, 6, 7, 8]])
GEN = dict(max_new_tokens=3, do_sample=False, eos_token_id=None, pad_token_id=0)


@pytest.fixture(scope="module")
def ouro():
    return tiny_ouro(64).eval()


@pytest.fixture(scope="module")
def export():
    torch.manual_seed(0)
    cfg = tiny_config(loops=dict(num_loops=2))
    return LooplmForCausalLM(LooplmConfig.from_model_config(cfg.model, num_loops=2)).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory, ouro, export):
    register()
    root = tmp_path_factory.mktemp("r47")
    ouro.save_pretrained(root / "ouro")
    export.save_pretrained(root / "export")
    return root


@pytest.mark.parametrize("key, value", [("use_weighted_exit", True), ("exit_dtype", "float32")])
def test_ouro_generation_config_exit_rule_is_honoured(ouro, key, value):
    want = ouro.generate(IDS, **{key: value}, **GEN)
    got = ouro.generate(IDS, generation_config=GenerationConfig(**{key: value}, **GEN))
    assert torch.equal(got, want)
    ouro.generation_config.use_weighted_exit = True  # the model's own generation config (generation_config.json)
    try:
        assert torch.equal(ouro.generate(IDS, **GEN), ouro.generate(IDS, use_weighted_exit=True, **GEN))
        with pytest.raises(ValueError, match="two exit rules"):  # beside a call's exit_threshold: refused, not one
            ouro.generate(IDS, exit_threshold=0.5, **GEN)
    finally:
        del ouro.generation_config.use_weighted_exit


def test_ouro_weighted_exit_changes_this_generation(ouro):
    # (the test above would pass vacuously if the weighted exit never changed a token of this model)
    assert not torch.equal(ouro.generate(IDS, use_weighted_exit=True, **GEN), ouro.generate(IDS, **GEN))


@pytest.mark.parametrize("key, value", [("use_weighted_exit", True), ("exit_dtype", "float32")])
def test_export_refuses_generation_config_exit_rule_as_the_call(export, key, value):
    with pytest.raises(ValueError, match=key):
        export.generate(IDS, **{key: value}, **GEN)
    with pytest.raises(ValueError, match=key):
        export.generate(IDS, generation_config=GenerationConfig(**{key: value}, **GEN))
    export.generate(IDS, generation_config=GenerationConfig(use_weighted_exit=False, **GEN))  # the default: taken


@pytest.mark.parametrize("name", ["ouro", "export"])
@pytest.mark.parametrize("kw, match", [(dict(num_loops=2.5), "num_loops must be an integer >= 1, got 2.5"),
                                       (dict(num_loops=True), "num_loops must be an integer >= 1, got True")])
def test_from_pretrained_checks_loop_count(saved, name, kw, match):
    with pytest.raises(ValueError, match=match):
        AutoModelForCausalLM.from_pretrained(saved / name, **kw)


def test_from_pretrained_ouro_loop_pair_and_total_ut_steps(saved):
    with pytest.raises(ValueError, match="total_ut_steps must be an integer >= 1, got 2.5"):
        AutoModelForCausalLM.from_pretrained(saved / "ouro", total_ut_steps=2.5)
    for load in (AutoModelForCausalLM.from_pretrained, AutoConfig.from_pretrained):
        with pytest.raises(ValueError, match="num_loops=2 and total_ut_steps=3 disagree"):
            load(saved / "ouro", num_loops=2, total_ut_steps=3)
    assert AutoConfig.from_pretrained(saved / "ouro", num_loops=2, total_ut_steps=2).total_ut_steps == 2


@pytest.mark.parametrize("name, default", [("ouro", 4), ("export", 2)])
def test_from_pretrained_num_loops_none_is_the_configs_own(saved, name, default):
    m = AutoModelForCausalLM.from_pretrained(saved / name, num_loops=None)
    assert m.config.num_loops == default
    with torch.no_grad():
        assert torch.equal(m(IDS).logits, m(IDS, num_loops=default).logits)


def test_forward_checks_a_loop_count_set_on_the_config(ouro):
    ouro.config.total_ut_steps = 2.5
    try:
        with pytest.raises(ValueError, match="got 2.5"):
            ouro(IDS)
    finally:
        ouro.config.total_ut_steps = 4


@pytest.mark.parametrize("name", ["ouro", "export"])
def test_generate_takes_one_segment_of_token_type_ids(ouro, export, name):
    m = {"ouro": ouro, "export": export}[name]
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    want = m.generate(ids, **GEN)
    assert torch.equal(m.generate(ids, token_type_ids=torch.zeros_like(ids), **GEN), want)
    with pytest.raises(TypeError, match="token_type_ids of more than one segment"):
        m.generate(ids, token_type_ids=torch.tensor([[0, 0, 1, 1]] * 2), **GEN)
    with torch.no_grad():  # a list or numpy array of zeros is one segment too
        for types in ([[0] * 4] * 2, np.zeros((2, 4), dtype=int)):
            assert torch.equal(m(ids, token_type_ids=types).logits, m(ids).logits)


def test_ouro_refuses_a_static_cache_object(ouro):
    with pytest.raises(ValueError, match="past_key_values=StaticCache.*cannot hold Ouro's looped KV cache"):
        ouro.generate(IDS, past_key_values=StaticCache(config=ouro.config, max_cache_len=32), **GEN)
    with pytest.raises(ValueError, match="past_key_values=StaticCache.*cannot hold Ouro's looped KV cache"):
        ouro(IDS, past_key_values=StaticCache(config=ouro.config, max_cache_len=32), use_cache=True)


def test_stray_num_loops_in_config_json_names_the_file_and_key(saved, tmp_path):
    import shutil

    shutil.copytree(saved / "ouro", tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["num_loops"] = 2
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="delete \"num_loops\" from config.json"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "m")


def test_ouro_set_attn_implementation_refuses_eager(ouro):
    with pytest.raises(ValueError, match="attn_implementation='eager' cannot apply"):
        ouro.set_attn_implementation("eager")
    ouro.set_attn_implementation("sdpa")
