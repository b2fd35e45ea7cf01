"""The native Ouro architecture (looplm.hf): published names and config, loops, cache, round trips, Φ."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from safetensors.torch import save_file  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

from looplm.hf import OuroConfig, OuroForCausalLM  # noqa: E402
from looplm.hf.modeling_ouro import exit_distribution, expected_parameter_names  # noqa: E402
from looplm.looped import phi  # noqa: E402
from looplm.model import twice_differentiable  # noqa: E402
from looplm.regularizers import jsrr, unit_probes  # noqa: E402

# Weight names of the published checkpoints (ByteDance/Ouro-1.4B, -2.6B and their -Thinking variants), as read
# from the public reference modeling code (OuroModel / OuroDecoderLayer / OuroForCausalLM attribute names) and
# cross-checked against a public HF <-> torchtitan state-dict mapping for Ouro. One decoder layer:
PUBLISHED_LAYER_WEIGHTS = [
    "input_layernorm.weight", "input_layernorm_2.weight", "mlp.down_proj.weight", "mlp.gate_proj.weight",
    "mlp.up_proj.weight", "post_attention_layernorm.weight", "post_attention_layernorm_2.weight",
    "self_attn.k_proj.weight", "self_attn.o_proj.weight", "self_attn.q_proj.weight", "self_attn.v_proj.weight",
]
PUBLISHED_TOP_WEIGHTS = ["lm_head.weight", "model.early_exit_gate.bias", "model.early_exit_gate.weight",
                         "model.embed_tokens.weight", "model.norm.weight"]


def tiny_config(**kw) -> OuroConfig:
    base = dict(vocab_size=48, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64, total_ut_steps=4, rope_theta=10000.0,
                bos_token_id=1, eos_token_id=2, pad_token_id=0)
    base.update(kw)
    return OuroConfig(**base)


def tiny_model(dtype=torch.float32, scale=0.0, **kw) -> OuroForCausalLM:
    torch.manual_seed(0)
    m = OuroForCausalLM(tiny_config(**kw)).to(dtype).eval()
    if scale:
        with torch.no_grad():  # move off the identity-ish init so loops and norms matter
            for p in m.parameters():
                p.add_(scale * torch.randn_like(p))
    return m


# --- an independent reading of the architecture, from the weights alone ------------------------------------
def reference_loop_logits(sd: dict, cfg: OuroConfig, ids: torch.Tensor, n_loops: int) -> list[torch.Tensor]:
    """Per-loop logits written out with explicit ops: sandwich RMSNorm layers, RoPE (rotate-half), causal
    softmax attention with grouped KV heads, SwiGLU; the final norm after every loop and feeding the next."""
    eps, H, KV, d = cfg.rms_norm_eps, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    B, T = ids.shape

    def rms(x, w):
        return w * (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]  # (T, d/2)
    cos, sin = torch.cat([ang.cos()] * 2, -1).to(sd["lm_head.weight"].dtype), \
        torch.cat([ang.sin()] * 2, -1).to(sd["lm_head.weight"].dtype)

    def rope(x):  # (B, heads, T, d)
        x1, x2 = x[..., : d // 2], x[..., d // 2 :]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    h = sd["model.embed_tokens.weight"][ids]
    out = []
    for _ in range(n_loops):
        for i in range(cfg.num_hidden_layers):
            p = lambda n, i=i: sd[f"model.layers.{i}.{n}"]  # noqa: E731
            x = rms(h, p("input_layernorm.weight"))
            q = (x @ p("self_attn.q_proj.weight").T).view(B, T, H, d).transpose(1, 2)
            k = (x @ p("self_attn.k_proj.weight").T).view(B, T, KV, d).transpose(1, 2)
            v = (x @ p("self_attn.v_proj.weight").T).view(B, T, KV, d).transpose(1, 2)
            q, k = rope(q), rope(k)
            k, v = k.repeat_interleave(H // KV, 1), v.repeat_interleave(H // KV, 1)
            att = (q @ k.transpose(-1, -2)) / d**0.5
            att = att.masked_fill(~causal, float("-inf")).softmax(-1)
            a = (att @ v).transpose(1, 2).reshape(B, T, H * d) @ p("self_attn.o_proj.weight").T
            h = h + rms(a, p("input_layernorm_2.weight"))
            x = rms(h, p("post_attention_layernorm.weight"))
            f = (torch.nn.functional.silu(x @ p("mlp.gate_proj.weight").T) * (x @ p("mlp.up_proj.weight").T)
                 ) @ p("mlp.down_proj.weight").T
            h = h + rms(f, p("post_attention_layernorm_2.weight"))
        h = rms(h, sd["model.norm.weight"])
        out.append(h @ sd["lm_head.weight"].T)
    return out


def test_weight_names_are_the_published_ones():
    m = tiny_model()
    names = sorted(m.state_dict())
    want = sorted(PUBLISHED_TOP_WEIGHTS + [f"model.layers.{i}.{n}" for i in range(2) for n in PUBLISHED_LAYER_WEIGHTS])
    assert names == want == expected_parameter_names(m.config)
    # Ouro is multi-head (16 kv heads of 128 for 2048): the k/v shapes follow num_key_value_heads here (2 of 4).
    assert m.model.layers[0].self_attn.k_proj.weight.shape == (2 * 4, 16)
    assert m.model.early_exit_gate.weight.shape == (1, 16) and m.lm_head.weight.shape == (48, 16)


def test_per_loop_logits_match_an_explicit_reference_loop():
    m = tiny_model(torch.float64, scale=0.2)
    ids = torch.randint(3, 48, (2, 6))
    ref = reference_loop_logits(m.state_dict(), m.config, ids, 4)
    out = m(ids, num_loops=4, output_loop_logits=True, use_cache=False)
    assert len(out.loop_logits) == 4
    for got, want in zip(out.loop_logits, ref, strict=True):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(out.logits, ref[-1])
    # A shallower call is the prefix of a deeper one; 1 loop and 4 loops differ.
    torch.testing.assert_close(m(ids, num_loops=2, use_cache=False).logits, ref[1])
    assert not torch.allclose(ref[0], ref[3], atol=1e-3)
    # The default loop count is config.total_ut_steps.
    torch.testing.assert_close(m(ids, use_cache=False).logits, ref[3])


def test_cached_and_uncached_greedy_generation_agree_at_every_loop_count():
    m = tiny_model(scale=0.1)
    ids = torch.randint(3, 48, (2, 5))
    for n in (1, 3):
        a = m.generate(ids, max_new_tokens=10, do_sample=False, use_cache=True, num_loops=n, eos_token_id=None)
        b = m.generate(ids, max_new_tokens=10, do_sample=False, use_cache=False, num_loops=n, eos_token_id=None)
        assert a.tolist() == b.tolist()
        # Cache slots: one per (loop, layer).
        out = m(ids, num_loops=n, use_cache=True)
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        assert len(cache.layers) == n * 2 and cache.get_seq_length() == 5
    # Incremental decoding by hand matches the full forward, and a cache cannot switch loop counts.
    out = m(ids[:, :4], num_loops=3, use_cache=True)
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    step = m(ids[:, 4:], num_loops=3, cache=cache, use_cache=True)
    torch.testing.assert_close(step.logits[:, -1], m(ids, num_loops=3, use_cache=False).logits[:, -1])
    with pytest.raises(ValueError, match="num_loops"):
        m(ids[:, 4:], num_loops=2, cache=cache, use_cache=True)


def test_left_padded_batch_generates_like_each_prompt_alone():
    m = tiny_model(scale=0.1)
    p1, p2 = [5, 9, 11, 7, 20], [13, 4]
    ids = torch.tensor([p1, [0, 0, 0] + p2])
    mask = torch.tensor([[1] * 5, [0, 0, 0, 1, 1]])
    batch = m.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, num_loops=2, eos_token_id=None,
                       pad_token_id=0)
    for row, p in zip(batch, (p1, p2), strict=True):
        alone = m.generate(torch.tensor([p]), max_new_tokens=6, do_sample=False, num_loops=2, eos_token_id=None)
        assert row[-6:].tolist() == alone[0, -6:].tolist()


def test_save_pretrained_round_trip_and_auto_classes(tmp_path):
    m = tiny_model(scale=0.1)
    m.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["model_type"] == "ouro" and cfg["total_ut_steps"] == 4 and cfg["architectures"] == ["OuroForCausalLM"]
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert isinstance(back, OuroForCausalLM)
    for k, v in m.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v)
    ids = torch.randint(3, 48, (1, 6))
    torch.testing.assert_close(back(ids, num_loops=3).logits, m(ids, num_loops=3).logits)


def test_loads_a_checkpoint_laid_out_like_the_published_ones_without_remote_code(tmp_path):
    """A directory shaped like the hub repo: config.json with the published fields (auto_map pointing at remote
    code, rope_scaling null, bf16 dtype, early_exit_threshold) and safetensors under the published names."""
    src = tiny_model(scale=0.1)
    d = tmp_path / "ouro"
    d.mkdir()
    c = {
        "architectures": ["OuroForCausalLM"], "auto_map": {
            "AutoConfig": "configuration_ouro.OuroConfig", "AutoModel": "modeling_ouro.OuroModel",
            "AutoModelForCausalLM": "modeling_ouro.OuroForCausalLM"},
        "attention_dropout": 0.0, "bos_token_id": 0, "eos_token_id": 0, "head_dim": 4, "hidden_act": "silu",
        "hidden_size": 16, "initializer_range": 0.02, "intermediate_size": 32, "max_position_embeddings": 64,
        "max_window_layers": 2, "model_type": "ouro", "num_attention_heads": 4, "num_hidden_layers": 2,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 10000.0,
        "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "total_ut_steps": 4,
        "early_exit_threshold": 1.0, "transformers_version": "4.55.0", "use_cache": True,
        "use_sliding_window": False, "vocab_size": 48,
    }
    (d / "config.json").write_text(json.dumps(c))
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(d / "model.safetensors"),
              metadata={"format": "pt"})
    conf = AutoConfig.from_pretrained(d)
    assert isinstance(conf, OuroConfig) and conf.total_ut_steps == 4 and conf.early_exit_threshold == 1.0
    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)  # no trust_remote_code
    assert isinstance(m, OuroForCausalLM)
    ids = torch.randint(3, 48, (2, 5))
    torch.testing.assert_close(m(ids).logits, src(ids).logits)


def test_early_exit_gate_distribution_and_threshold():
    m = tiny_model(scale=0.3)
    ids = torch.randint(3, 48, (2, 5))
    out = m(ids, num_loops=3, output_loop_logits=True, use_cache=False)
    p = out.exit_probs
    assert p.shape == (2, 5, 3) and torch.allclose(p.sum(-1), torch.ones(2, 5)) and (p >= 0).all()
    # threshold 0: every token exits after loop 1; above 1: nobody exits early.
    torch.testing.assert_close(m(ids, num_loops=3, exit_threshold=0.0).logits, out.loop_logits[0])
    torch.testing.assert_close(m(ids, num_loops=3, exit_threshold=1.5).logits, out.loop_logits[-1])
    for typo in ({"num_loop": 1}, {"loops": 1}):  # a misspelt loop count ran the default one without a word
        with pytest.raises(TypeError, match="the loop count is num_loops="):
            m(ids, **typo)
    # a negative threshold acted as 0 and NaN (never reached) as the last loop, in silence: both are refused
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="early_exit_threshold must be a finite number >= 0"):
            m(ids, num_loops=3, exit_threshold=bad)
        with pytest.raises(ValueError, match="early_exit_threshold must be a finite number >= 0"):
            OuroConfig(early_exit_threshold=bad)
    # a hand-edited total_ut_steps of 2.5 ran 2 loops, `true` 1, and "3" failed at the first call
    for bad in (2.5, True, "3", 0):
        with pytest.raises(ValueError, match="total_ut_steps must be an integer >= 1"):
            OuroConfig(total_ut_steps=bad)
    # a 0 was a ZeroDivisionError, an unknown activation a KeyError, 2.5 layers or a "32" a traceback in the model;
    # rope_theta <= 0, a negative eps or a linear factor 0 made every logit NaN (scored as 100% by a choice task)
    for kw, what in ((dict(num_key_value_heads=0), "num_key_value_heads must be an integer >= 1"),
                     (dict(num_hidden_layers=2.5), "num_hidden_layers must be an integer"),
                     (dict(hidden_size="32"), "hidden_size must be an integer"),
                     (dict(hidden_act="foo"), "hidden_act must name one of"),
                     (dict(rope_theta=0), "rope_theta must be a finite number > 0"),
                     (dict(rope_theta=-1.0), "rope_theta must be"), (dict(rms_norm_eps=-1.0), "rms_norm_eps must be"),
                     (dict(rope_scaling={"rope_type": "linear", "factor": 0}), "rope_scaling.factor must be"),
                     # head_dim 0 (given, or a width below the head count) divided by zero in the attention scale;
                     # a negative init std was torch's error at a fine-tune's init, a dropout of 1 zeroed every row
                     (dict(head_dim=0), "head_dim must be an integer >= 1"),
                     (dict(hidden_size=2, num_attention_heads=4, num_key_value_heads=4), "head_dim must be an"),
                     (dict(initializer_range=-1.0), "initializer_range must be a number in"),
                     (dict(attention_dropout=1.0), "attention_dropout must be a number in")):
        with pytest.raises(ValueError, match=what):
            OuroConfig(**kw)
    for kw in (dict(pad_token_id=48), dict(pad_token_id=-1), dict(eos_token_id=[0, 99])):  # vocabulary 48
        with pytest.raises(ValueError, match="must be null or a token id in"):  # 48: torch's assertion traceback;
            OuroConfig(vocab_size=48, **kw)  # -1: padding row 47, a real token whose embedding never trained
    for typo in ({"exit_at_step": 1}, {"total_ut_steps": 2}, {"depth": 2}, {"early_exit_threshold": 0.0},
                 {"weighted_exit": True}):  # the reference code's names, and the exit rule under other names
        with pytest.raises(TypeError, match="the loop count is num_loops="):
            m(ids, **typo)
    w = m(ids, num_loops=3, use_weighted_exit=True).logits
    torch.testing.assert_close(w, sum(lg * p[..., i : i + 1] for i, lg in enumerate(out.loop_logits)))
    g = torch.tensor([[[0.0, 100.0, -3.0]]])
    torch.testing.assert_close(exit_distribution(g), torch.tensor([[[0.5, 0.5, 0.0]]]), atol=1e-6, rtol=0)


def test_jsrr_through_phi_matches_the_explicit_jacobian():
    m = tiny_model(torch.float64, scale=0.3, hidden_size=8, num_attention_heads=2, num_key_value_heads=1,
                   intermediate_size=16)
    ids = torch.randint(3, 48, (2, 4))
    h0, ctx = m.embed(ids)
    step = phi(m, ctx)
    with torch.no_grad():
        h = step(step(h0))  # the state after 2 loops
    n = h[0].numel()
    with twice_differentiable():
        pen = jsrr(step, h, torch.Generator().manual_seed(1))
        v = unit_probes(h.shape, torch.Generator().manual_seed(1), h.device, h.dtype).reshape(2, n)
        J = torch.autograd.functional.jacobian(step, h, create_graph=True).reshape(2, n, 2, n)
        assert J[0, :, 1].abs().max() < 1e-12  # samples never interact inside Φ
        ref = torch.stack([J[i, :, i] @ v[i] for i in range(2)]).pow(2).sum(1).mean()
    torch.testing.assert_close(pen, ref)
    params = [m.model.layers[0].self_attn.q_proj.weight, m.model.layers[1].post_attention_layernorm_2.weight,
              m.model.norm.weight, m.model.layers[1].mlp.gate_proj.weight]
    for a, b in zip(torch.autograd.grad(pen, params, retain_graph=True), torch.autograd.grad(ref, params),
                    strict=True):
        torch.testing.assert_close(a, b)
    # Φ is exactly one loop of the model: loop states are iterates of phi.
    out = m.model(ids, num_loops=2, output_loop_states=True, use_cache=False)
    torch.testing.assert_close(out.loop_states[1], h)


def test_gradient_checkpointing_gives_the_same_gradients():
    m = tiny_model(scale=0.1).train()
    ids = torch.randint(3, 48, (2, 6))
    params = [p for n, p in m.named_parameters() if "early_exit_gate" not in n]  # the gate is unused by the loss
    loss = m(ids, labels=ids, num_loops=3).loss
    g0 = torch.autograd.grad(loss, params)
    m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert m.model.gradient_checkpointing
    loss2 = m(ids, labels=ids, num_loops=3).loss
    g1 = torch.autograd.grad(loss2, params)
    torch.testing.assert_close(loss2, loss)
    for a, b in zip(g0, g1, strict=True):
        torch.testing.assert_close(a, b)


def test_a_generation_config_sets_the_loop_count(tmp_path):
    """`num_loops` in a GenerationConfig, in model.generation_config or in a saved generation_config.json was kept
    and saved again, while generate() ran the model's default loop count with no word."""
    from transformers import GenerationConfig

    m = tiny_model(scale=0.1)
    ids = torch.randint(3, 48, (2, 5))
    one = m.generate(ids, max_new_tokens=6, do_sample=False, num_loops=1, eos_token_id=None).tolist()
    assert one != m.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=None).tolist()  # (it matters)
    gc = GenerationConfig(max_new_tokens=6, do_sample=False, num_loops=1, eos_token_id=None)
    assert m.generate(ids, generation_config=gc).tolist() == one
    m.generation_config.num_loops = 1
    assert m.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=None).tolist() == one
    assert m.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=None, num_loops=1).tolist() == one


def test_a_default_depth_no_command_runs_is_refused_in_the_config():
    """total_ut_steps=10**9 was accepted by the config, then refused by every command that ran the model."""
    with pytest.raises(ValueError, match="total_ut_steps must be at most 1,000,000, got 1,000,000,000"):
        OuroConfig(total_ut_steps=10**9)
    assert OuroConfig(total_ut_steps=10**6).total_ut_steps == 10**6


def test_a_sliding_attention_layer_is_refused():
    """layer_types with "sliding_attention" made generate() build a sliding cache layer (transformers' TypeError:
    sliding_window is None without use_sliding_window), and every other path ran full attention without a word."""
    for bad in (["sliding_attention", "full_attention"], "full_attention"):
        with pytest.raises(ValueError, match='layer_types must say "full_attention" for every layer .*sliding-window'):
            OuroConfig(num_hidden_layers=2, layer_types=bad)
    assert OuroConfig(num_hidden_layers=2, layer_types=["full_attention"] * 2).layer_types == ["full_attention"] * 2
