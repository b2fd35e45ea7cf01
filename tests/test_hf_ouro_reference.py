"""Where the native Ouro model follows ByteDance's reference code: the config's exit threshold at inference, the
exit rule's dtype, remote code refused by the lm-eval adapter, and HF Trainer's `num_items_in_batch`."""

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

from transformers import AutoModelForCausalLM  # noqa: E402

from looplm.errors import UserError  # noqa: E402
from looplm.hf import LooplmConfig, LooplmForCausalLM, OuroConfig, OuroForCausalLM  # noqa: E402


def tiny_model(dtype=torch.float32, scale=0.3, **kw) -> OuroForCausalLM:
    base = dict(vocab_size=48, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64, total_ut_steps=4, rope_theta=10000.0,
                bos_token_id=1, eos_token_id=2, pad_token_id=0)
    base.update(kw)
    torch.manual_seed(0)
    m = OuroForCausalLM(OuroConfig(**base)).eval()
    with torch.no_grad():  # away from the near-identity init, so the gate's λ differ between tokens and loops
        for p in m.parameters():
            p.add_(scale * torch.randn_like(p))
    return m.to(dtype)


def reference_exit_steps(gates: list[torch.Tensor], threshold: float) -> torch.Tensor:
    """The reference model's exit rule, transcribed op by op from its forward: per-loop gate logits (B, T) in
    the model's dtype -> (B, T) exit loop. λ = sigmoid(gate); p_i = λ_i · remaining, remaining *= (1 - λ_i),
    the last loop takes what remains; exit at the first loop with cumsum(p) >= threshold, else the last."""
    remaining = torch.ones_like(gates[0])
    pdf = []
    for i, g in enumerate(gates):
        lam = torch.sigmoid(g)
        if i < len(gates) - 1:
            pdf.append(lam * remaining)
            remaining = remaining * (1.0 - lam)
        else:
            pdf.append(remaining)
    reached = torch.cumsum(torch.stack(pdf, dim=2), dim=2) >= threshold  # (B, T, n)
    steps = torch.argmax(reached.float(), dim=2)
    steps[~reached.any(dim=2)] = len(gates) - 1
    return steps


def states_and_gates(m: OuroForCausalLM, ids: torch.Tensor, n: int):
    states = m.model(ids, num_loops=n, output_loop_states=True, use_cache=False).loop_states
    return states, [m.model.early_exit_gate(s).squeeze(-1) for s in states]


def logits_at(m: OuroForCausalLM, states, steps: torch.Tensor) -> torch.Tensor:
    stacked = torch.stack(states, dim=2)  # (B, T, n, D)
    chosen = stacked.gather(2, steps[..., None, None].expand(-1, -1, 1, stacked.shape[-1])).squeeze(2)
    return m.lm_head(chosen)


# --- 1. config.early_exit_threshold is the default exit rule at inference ------------------------------------
@torch.no_grad()
def test_config_early_exit_threshold_is_the_default_at_inference(tmp_path):
    m = tiny_model(early_exit_threshold=0.5)
    ids = torch.randint(3, 48, (2, 7), generator=torch.Generator().manual_seed(1))
    states, gates = states_and_gates(m, ids, 4)
    steps = reference_exit_steps(gates, 0.5)
    assert (steps < 3).any() and (steps != steps.flatten()[0]).any()  # some tokens exit early, not all alike
    want = logits_at(m, states, steps)
    torch.testing.assert_close(m(ids).logits, want)
    torch.testing.assert_close(m(ids, use_cache=True).logits, want)
    # The same from a hub-style directory whose config.json carries 0.5 (as the model card tells users to set).
    m.save_pretrained(tmp_path / "m")
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert back.config.early_exit_threshold == 0.5
    torch.testing.assert_close(back(ids).logits, want)
    # generate() goes through forward, so it follows the rule too.
    a = m.generate(ids, max_new_tokens=4, do_sample=False, eos_token_id=None)
    b = m.generate(ids, max_new_tokens=4, do_sample=False, eos_token_id=None, exit_threshold=0.5)
    assert a.tolist() == b.tolist()
    # An explicit argument overrides the config; None in the config means the last loop.
    last = m.lm_head(states[-1])
    torch.testing.assert_close(m(ids, exit_threshold=0.0).logits, m.lm_head(states[0]))
    torch.testing.assert_close(m(ids, exit_threshold=1.5).logits, last)
    m.config.early_exit_threshold = None
    torch.testing.assert_close(m(ids).logits, last)


def test_labels_keep_the_last_loop_and_the_loss_uses_the_returned_logits():
    m = tiny_model(early_exit_threshold=0.5)
    ids = torch.randint(3, 48, (2, 7), generator=torch.Generator().manual_seed(1))
    out = m(ids, labels=ids)
    with torch.no_grad():
        last = m.lm_head(states_and_gates(m, ids, 4)[0][-1])
    torch.testing.assert_close(out.logits, last)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits[:, :-1].reshape(-1, 48), ids[:, 1:].reshape(-1)))
    # An explicit threshold still applies with labels, and the loss follows the logits returned.
    out = m(ids, labels=ids, exit_threshold=0.5)
    assert not torch.allclose(out.logits, last)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits[:, :-1].reshape(-1, 48), ids[:, 1:].reshape(-1)))


# --- 2. the exit rule's dtype ----------------------------------------------------------------------------------
def bf16_model_whose_exit_rounds_to_one(**kw) -> OuroForCausalLM:
    """A bf16 model whose gate says "exit" with λ ≈ sigmoid(2 ± 1): after a few loops the survival is tiny, and
    in bf16 the cumulative exit probability rounds to exactly 1 before the last of 6 loops; in float32 it
    stays below 1."""
    m = tiny_model(torch.bfloat16, scale=0.1, total_ut_steps=6, **kw)
    gate = m.model.early_exit_gate
    with torch.no_grad():
        gate.weight.copy_(0.2 * torch.randn(gate.weight.shape, generator=torch.Generator().manual_seed(1)))
        gate.bias.fill_(2.0)
    return m


@torch.no_grad()
def test_exit_rule_runs_in_the_model_dtype_like_the_reference_and_float32_on_request():
    m = bf16_model_whose_exit_rounds_to_one()
    ids = torch.randint(3, 48, (2, 12), generator=torch.Generator().manual_seed(2))
    states, gates = states_and_gates(m, ids, 6)
    assert gates[0].dtype == torch.bfloat16
    ref = reference_exit_steps(gates, 1.0)
    ref32 = reference_exit_steps([g.float() for g in gates], 1.0)
    assert (ref < 5).any() and (ref == 5).any()  # the reference exits some tokens early at threshold 1.0
    assert (ref32 == 5).all()  # in float32 nobody does
    want, last = logits_at(m, states, ref), m.lm_head(states[-1])
    # The explicit threshold and the default (config 1.0, exit_dtype "model") agree with the reference.
    torch.testing.assert_close(m(ids, exit_threshold=1.0).logits, want, rtol=0, atol=0)
    assert m.config.early_exit_threshold == 1.0 and m.config.exit_dtype == "model"
    out = m(ids)
    assert out.exit_probs.dtype == torch.bfloat16
    torch.testing.assert_close(out.logits, want, rtol=0, atol=0)
    # float32, per call or from the config: every token reads the last loop.
    out32 = m(ids, exit_dtype="float32")
    assert out32.exit_probs.dtype == torch.float32
    torch.testing.assert_close(out32.logits, last, rtol=0, atol=0)
    m32 = bf16_model_whose_exit_rounds_to_one(exit_dtype="float32")
    torch.testing.assert_close(m32(ids).logits, last, rtol=0, atol=0)
    torch.testing.assert_close(m32(ids, exit_dtype="model").logits, want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="exit_dtype"):
        m(ids, exit_dtype="bf16")
    with pytest.raises(ValueError, match="exit_dtype"):
        tiny_model(exit_dtype="half")


# --- 3. remote code is refused where looplm sees it -------------------------------------------------------------
def test_lm_eval_adapter_refuses_trust_remote_code(tmp_path):
    pytest.importorskip("lm_eval")
    from looplm.hf.lm_eval_adapter import LoopedLM

    from .hf_fixtures import save_tiny_base, tiny_chat_tokenizer

    d = save_tiny_base(tmp_path / "base", tiny_chat_tokenizer())
    for args in (dict(trust_remote_code=True), dict(trust_remote_code="True")):
        with pytest.raises(UserError, match="native Ouro class is used only without remote code") as e:
            LoopedLM(pretrained=str(d), device="cpu", dtype="float32", **args)
        assert "transformers 5" in str(e.value)
    with pytest.raises(UserError, match="trust_remote_code"):  # the model_args string lm-eval's CLI hands over
        LoopedLM.create_from_arg_string(f"pretrained={d},trust_remote_code=True,device=cpu,dtype=float32")
    lm = LoopedLM(pretrained=str(d), device="cpu", dtype="float32", trust_remote_code=False, exit_dtype="float32")
    assert isinstance(lm.model, OuroForCausalLM) and lm._loop_kwargs() == {
        "num_loops": lm.model.config.total_ut_steps, "exit_threshold": None,  # the depth and exit rule (None: the
        "exit_dtype": "float32"}  # config's) every task of a run uses; a generation config's own is not read
    with pytest.raises(UserError, match="exit_dtype"):
        LoopedLM(pretrained=str(d), device="cpu", dtype="float32", exit_dtype="bf16")


# --- 4. HF Trainer's num_items_in_batch -------------------------------------------------------------------------
def _labels(ids: torch.Tensor) -> torch.Tensor:
    labels = ids.clone()
    labels[0, :4] = -100  # rows with different numbers of targets, so mean-per-micro-batch != mean-per-token
    labels[2, :2] = -100
    return labels


def test_num_items_in_batch_makes_the_loss_a_sum_over_that_count():
    ouro = tiny_model(scale=0.1)
    torch.manual_seed(0)
    looplm = LooplmForCausalLM(LooplmConfig(vocab_size=48, max_seq_len=16, d_model=32, n_heads=2, d_ff=64,
                                            num_loops=2)).eval()
    ids = torch.randint(3, 48, (4, 8), generator=torch.Generator().manual_seed(3))
    labels = _labels(ids)
    n_items = int((labels[:, 1:] != -100).sum())
    for m in (ouro, looplm):
        full = m(ids, labels=labels)
        token_ce = F.cross_entropy(full.logits[:, :-1].reshape(-1, 48), labels[:, 1:].reshape(-1), reduction="sum")
        torch.testing.assert_close(full.loss, token_ce / n_items)  # without it: the mean
        torch.testing.assert_close(m(ids, labels=labels, num_items_in_batch=7).loss, token_ce / 7)
        # Gradient accumulation, HF Trainer style: micro-batch losses with the global count add up to the
        # full batch's per-token mean.
        parts = [m(ids[i : i + 2], labels=labels[i : i + 2], num_items_in_batch=torch.tensor(n_items)).loss
                 for i in (0, 2)]
        torch.testing.assert_close(parts[0] + parts[1], full.loss)
