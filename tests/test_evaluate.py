import json
import math

import numpy as np
import pytest
import torch

from looplm.cli import main
from looplm.evaluate import parse_depths, sweep
from looplm.generate import generate
from looplm.model import LoopedTransformer
from looplm.tasks.addition import EOS, make_batch

from .conftest import tiny_model_config


def test_parse_depths():
    assert parse_depths("1:5") == [1, 2, 3, 4, 5]
    assert parse_depths("1:10:4") == [1, 5, 9, 10]  # a stepped range ends at its stated end
    assert parse_depths("8,1:3, 100") == [1, 2, 3, 8, 100]
    for bad, msg in [("5:1", "reversed"), ("", "empty"), ("0:3", ">= 1"), ("a:b", "bad depth"),
                     ("1:4:0", "step")]:
        with pytest.raises(ValueError, match=msg):
            parse_depths(bad)
    with pytest.raises(ValueError, match="^sizes must be >= 1, got '0:3'$"):  # --sizes: not blamed on --depths
        parse_depths("0:3", "size")
    for bad in (5, None, [1, 2]):  # 5 was an AttributeError ('int' object has no attribute 'strip')
        with pytest.raises(TypeError, match="a depth specification is a string such as '1:100' or '1,2,4', got "):
            parse_depths(bad)


@pytest.mark.parametrize("placement", ["pre", "post_sandwich"])
def test_one_pass_sweep_equals_greedy_decoding_sample_by_sample(placement):
    """Golds are built so that about half the rows are exactly the model's own greedy output at depth d
    and half differ in one token; the sweep must call each row right or wrong exactly as decoding does."""
    torch.manual_seed(0)
    m = LoopedTransformer(tiny_model_config(norm_placement=placement, max_seq_len=16)).eval()
    with torch.no_grad():  # a sharper random model, so greedy outputs vary with depth
        m.tok_emb.weight.mul_(20)
        for p in m.core.parameters():
            p.add_(0.3 * torch.randn_like(p))
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(2, 14, (int(torch.randint(3, 7, (1,), generator=g)),), generator=g).tolist()
               for _ in range(40)]
    answer_len = 5
    depths = [1, 2, 3, 5, 8]
    changed_any = False
    for d in depths:
        greedy = generate(m, prompts, d, max_new_tokens=answer_len, eos_id=EOS)
        seqs, plens, expect = [], [], []
        for i, (p, out) in enumerate(zip(prompts, greedy, strict=True)):
            gold = list(out)
            hit_eos = len(gold) < answer_len
            if i % 2 == 1 and gold:  # corrupt one token of the gold answer
                j = i % len(gold)
                gold[j] = 2 + (gold[j] - 2 + 1) % 12
            # Exact match means the decoded answer equals gold and stops with EOS where gold does.
            seqs.append(p + gold + ([EOS] if hit_eos else []))
            plens.append(len(p))
            expect.append(i % 2 == 0 or not out)
        batch = make_batch(seqs, plens)
        res = sweep(m, batch, depths, batch_size=7)
        got = res.correct[depths.index(d)].tolist()
        assert got == expect, f"depth {d}"
        # Recompute the truth independently: does greedy at depth d reproduce each row's gold?
        for i, (p, s) in enumerate(zip(prompts, seqs, strict=True)):
            gold_tokens = s[len(p):]
            gold_answer = gold_tokens[:-1] if gold_tokens and gold_tokens[-1] == EOS else gold_tokens
            assert (greedy[i] == gold_answer) == got[i]
        changed_any |= any(a != b for a, b in zip(res.correct[0].tolist(), got, strict=True))
    assert changed_any, "depth never changed any outcome: the test would not notice a depth mix-up"


def test_sweep_reports_drift():
    m = LoopedTransformer(tiny_model_config()).eval()
    batch = make_batch([[3, 4, 5, 6, 7]] * 4, [3] * 4)
    res = sweep(m, batch, [1, 2, 4])
    assert res.state_norm.shape == (3,) and (res.state_norm > 0).all()
    js = res.to_json()
    assert js["n"] == 4 and len(js["accuracy"]) == 3 and js["depths"] == [1, 2, 4]


def test_sweep_refuses_depths_no_loop_would_fill():
    """A repeated, zero or negative depth is a slot that no loop fills: refused, not reported as accuracy 0."""
    torch.manual_seed(0)
    m = LoopedTransformer(tiny_model_config(max_seq_len=16)).eval()
    b = make_batch([[3, 4, 5, EOS], [6, 7, 8, EOS]], [2, 2], 16)
    assert len(sweep(m, b, [1, 3]).accuracy) == 2
    for bad in ([4, 4], [0, 4], [-1, 4], [3, 2], [2.0, 4], [True, 2], [], "13", np.array([1.0, 2.0]), [2**40]):
        with pytest.raises(ValueError, match="depths|no depths"):
            sweep(m, b, bad)
    # an accuracy is k/n in float64 (a float32 mean wrote 59/200 as 0.29499998688697815)
    from looplm.evaluate import SweepResult

    r3 = SweepResult([1], torch.tensor([[True, False, False]]), torch.ones(1),
                     exit_depth=torch.tensor([1, 2, 2]), exit_correct=torch.tensor([True, False, False]))
    assert r3.accuracy == [1 / 3] and r3.to_json()["exit"]["accuracy"] == 1 / 3
    assert r3.to_json()["exit"]["mean_loops"] == 5 / 3
    # API arguments the CLI checks are checked in the API too (they failed with other libraries' messages, or a
    # negative count was read as 0)
    from looplm.dynamics import diagnose
    from looplm.generate import generate

    for size in (0, True, 2.0):  # True was a batch of 1
        with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
            sweep(m, b, [1, 2], batch_size=size)
    assert sweep(m, b, [1, 2], batch_size=np.int64(1)).accuracy == sweep(m, b, [1, 2]).accuracy  # as diagnose
    # power_penalty took 0, -3 and True as one iteration, reported as asked; 10**12 never ended
    from looplm import phi, power_penalty, twice_differentiable

    with twice_differentiable():
        h0, ctx = m.embed(b.input_ids)
        for bad, what in ((0, "integer >= 1"), (-3, "integer >= 1"), (True, "integer >= 1"), (2.5, "integer >= 1"),
                          (10**12, "at most 1,000,000")):
            with pytest.raises(ValueError, match=f"iters must be (an )?{what}"):
                power_penalty(phi(m, ctx), h0, torch.Generator().manual_seed(0), iters=bad)
    with pytest.raises(ValueError, match="hutchinson_samples must be at most 1,000,000"):  # ran until killed
        diagnose(m, b, [1, 2], hutchinson_samples=10**12, spectral_n=0, pca_n=0)
    with pytest.raises(ValueError, match="spectral_n must be an integer >= 0"):
        diagnose(m, b, [1, 2], spectral_n=-1)
    # batch_size=-1 scored nothing and reported exact match 0 and a perfect CE of 0; a bool was a depth to probe
    for bad, what in ((dict(batch_size=-1), "batch_size"), (dict(batch_size=True), "batch_size"),
                      (dict(seed=None), "seed"), (dict(spectral_depths=[True]), "depths must be integers")):
        with pytest.raises(ValueError, match=what):
            diagnose(m, b, [1, 2], **bad)
    # an end token that can never match (None, a string, a negative id) decoded past the end, returning it as text
    for eos in (None, "1", -1):
        with pytest.raises(ValueError, match="eos_id must be an integer >= 0"):
            generate(m, [[3, 4]], 2, max_new_tokens=4, eos_id=eos)
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 0"):
        generate(m, [[3, 4]], 2, max_new_tokens=-1, eos_id=EOS)
    # a bool ran as 1; a float or a zero vocabulary failed inside torch
    for bad, what in ((dict(num_loops=True), "num_loops"), (dict(num_loops="3"), "num_loops"),
                      (dict(max_new_tokens=True), "max_new_tokens"), (dict(max_new_tokens=2.5), "max_new_tokens"),
                      (dict(vocab=0), "vocab")):
        for cache in (False, True):
            with pytest.raises(ValueError, match=f"{what} must be an integer"):
                generate(m, [[3, 4]], **{"num_loops": 2, "max_new_tokens": 4, **bad}, eos_id=EOS, use_cache=cache)
    # 2**40 loops without the cache ran on, silent, until killed (the command line caps --loops); and a model's
    # own forward (looplm.looped.loop_count serves the HF models) caps it alike
    from looplm.looped import loop_count

    for cache in (False, True):
        with pytest.raises(ValueError, match="num_loops must be at most 1,000,000, got 1,099,511,627,776"):
            generate(m, [[3, 4]], 2**40, max_new_tokens=1, eos_id=EOS, use_cache=cache)
    with pytest.raises(ValueError, match="num_loops must be at most 1,000,000"):
        loop_count(None, 10**12)
    # an exit rule that can never fire (a negative or NaN tolerance: sweep ran it and wrote `"tol": NaN`), or a
    # bool as its count, is refused by sweep as by generate
    for bad, what in ((dict(exit_tol=-1.0), "exit_tol"), (dict(exit_tol=float("nan")), "exit_tol"),
                      (dict(exit_tol=True), "exit_tol"), (dict(exit_stable=True), "exit_stable"),
                      (dict(exit_stable=0), "exit_stable")):
        with pytest.raises(ValueError, match=f"{what} must be"):
            generate(m, [[3, 4]], 2, max_new_tokens=4, eos_id=EOS, **bad)
        with pytest.raises(ValueError, match=f"{what} must be"):
            sweep(m, b, [1, 2], **bad)
    # integer arrays are depths too (numpy's truth value of an array stopped them with its own message)
    want = sweep(m, b, [1, 2, 3]).accuracy
    assert sweep(m, b, np.arange(1, 4)).accuracy == sweep(m, b, torch.arange(1, 4)).accuracy == want


def test_api_counts_are_checked_and_come_back_as_plain_numbers():
    """diagnose took numpy counts but returned them as numpy scalars (its "JSON-ready dict" then failed json.dump),
    a numpy seed failed inside torch, spectral_n=True ran one sample and recorded `true`, and hutchinson_samples was
    recorded when no Jacobian estimate was taken. generate read float prompt ids as their floor and True as id 1,
    took an end token no head can emit, and (without the cache) raised past the positions, losing what it had
    decoded. held_out(0) was an IndexError and held_out(-1) dropped the last row."""
    import json

    from looplm import load_config
    from looplm.dynamics import diagnose
    from looplm.tasks import make_task

    torch.manual_seed(0)
    m = LoopedTransformer(tiny_model_config(max_seq_len=16)).eval()
    b = make_batch([[3, 4, 5, EOS], [6, 7, 8, EOS]], [2, 2], 16)
    res = diagnose(m, b, [1, 2], spectral_n=np.int64(1), pca_n=np.int64(1), iters=np.int32(5), tol=np.float32(1e-3),
                   hutchinson_samples=np.int64(2), seed=np.int64(3))
    json.dumps(res, allow_nan=True)  # every number a plain one
    assert res["spectral"]["n"] == 1 and res["spectral"]["hutchinson_samples"] == 2
    assert diagnose(m, b, [1, 2], spectral_n=0, pca_n=0)["spectral"]["hutchinson_samples"] == 0  # none taken
    for bad, what in ((dict(spectral_n=True), "spectral_n"), (dict(spectral_n=2.0), "spectral_n"),
                      (dict(pca_n="2"), "pca_n"), (dict(tol=0), "tol"), (dict(tol=True), "tol"),
                      (dict(method="eig"), "method")):
        with pytest.raises(ValueError, match=what):
            diagnose(m, b, [1, 2], **bad)
    for prompt in ([3.9, 4], [True, 4], ["3", 4]):
        for cache in (False, True):
            with pytest.raises(ValueError, match="prompt token ids must be integers"):
                generate(m, [prompt], 2, max_new_tokens=2, eos_id=EOS, use_cache=cache)
    assert generate(m, [np.array([3, 4])], 2, max_new_tokens=2, eos_id=EOS) == \
        generate(m, [[3, 4]], 2, max_new_tokens=2, eos_id=EOS)
    for eos, vocab in ((m.cfg.vocab_size, None), (5, 5)):
        with pytest.raises(ValueError, match=f"eos_id={eos} is not an id the model can generate"):
            generate(m, [[3, 4]], 2, max_new_tokens=2, eos_id=eos, vocab=vocab)
    with pytest.raises(ValueError, match="pad_id must be an integer"):
        generate(m, [[3, 4]], 2, max_new_tokens=2, eos_id=EOS, pad_id=True)
    # a max_len past the positions: cut off there and marked, with or without the cache
    cut = [generate(m, [[3, 4], [5]], 2, max_new_tokens=40, eos_id=EOS, max_len=100, use_cache=c)
           for c in (False, True)]
    assert cut[0] == cut[1] and cut[0].finished == cut[1].finished
    assert all(done or len(row) == 16 - len(p)
               for row, done, p in zip(cut[0], cut[0].finished, ([3, 4], [5]), strict=True))
    assert not all(cut[0].finished)  # (what this checks: a row that ran out of positions)
    task = make_task(load_config("addition-prenorm-stars", ["data.test_size=8"]))
    assert len(task.held_out(np.int64(3))) == 3 and len(task.held_out(100)) == 8  # at most the split
    for n in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="n must be an integer >= 1"):
            task.held_out(n)


def test_numpy_and_torch_arguments_are_read_as_the_lists_and_numbers_they_hold():
    """An integer array of spectral depths (depths took one) and a 2-D array of prompts failed on their truth value;
    a numpy exit rule was refused as "must be an integer, got np.int64(2)"; a numpy vocab skipped the end-token
    check a plain int gets; a pad id past the embedding was refused as a prompt's "token ids must lie in"."""
    import json

    from looplm.dynamics import diagnose

    torch.manual_seed(0)
    m = LoopedTransformer(tiny_model_config(max_seq_len=16)).eval()
    b = make_batch([[3, 4, 5, EOS], [6, 7, 8, EOS]], [2, 2], 16)
    want = diagnose(m, b, [1, 2, 3], spectral_depths=[1, 3], spectral_n=1, iters=5, pca_n=0)["spectral"]["depths"]
    for sd in (np.array([3, 1]), torch.tensor([1, 3, 3]), (3, 1)):
        assert diagnose(m, b, [1, 2, 3], spectral_depths=sd, spectral_n=1, iters=5, pca_n=0)["spectral"]["depths"] \
            == want == [1, 3]
    assert diagnose(m, b, [1, 2, 3], spectral_depths=np.array([], dtype=int), pca_n=0)["spectral"]["depths"] == []
    plain = sweep(m, b, [1, 2, 3], exit_tol=0.5, exit_stable=2).to_json()
    numpy = sweep(m, b, [1, 2, 3], exit_tol=np.float32(0.5), exit_stable=np.int64(2)).to_json()
    assert json.dumps(numpy) == json.dumps(plain)
    assert generate(m, np.array([[3, 4], [5, 6]]), 2, max_new_tokens=3, eos_id=EOS) == \
        generate(m, [[3, 4], [5, 6]], 2, max_new_tokens=3, eos_id=EOS)
    for vocab in (np.int64(5), torch.tensor(5)):
        with pytest.raises(ValueError, match="eos_id=9 is not an id the model can generate"):
            generate(m, [[3, 4]], 2, max_new_tokens=2, eos_id=9, vocab=vocab)
    with pytest.raises(ValueError, match=f"pad_id=999 is not a token id of the model \\(ids below {m.cfg.vocab_size}"):
        generate(m, [[3, 4], [5]], 2, max_new_tokens=2, eos_id=EOS, pad_id=999)



def test_scoring_puts_the_callers_train_eval_mode_back():
    """sweep, generate and the analyses switch the module to eval mode for their work, and each left it there: a
    caller scoring in the middle of their own training loop trained on with dropout off from then on."""
    from looplm.dynamics import diagnose, perturbation_recovery

    torch.manual_seed(0)
    m = LoopedTransformer(tiny_model_config(max_seq_len=16))
    frozen = next(iter(m.children()))
    b = make_batch([[3, 4, 5, EOS], [6, 7, 8, EOS]], [2, 2], 16)
    calls = [lambda: sweep(m, b, [1, 2]), lambda: generate(m, [[3, 4, 5]], 2, 2, EOS),
             lambda: generate(m, [[3, 4, 5]], 2, 2, EOS, use_cache=True),
             lambda: diagnose(m, b, [1, 2], spectral_depths=[]),
             lambda: perturbation_recovery(m, b, 1, [0.1], [1])]
    for call in calls:
        m.train()
        frozen.eval()  # a submodule the caller froze stays frozen
        call()
        assert m.training and not frozen.training
        assert all(x.training for x in m.modules() if x is not frozen and not any(
            x is y for y in frozen.modules()))
    m.eval()
    sweep(m, b, [1])
    assert not m.training
    m.train()  # an error on the way out puts it back too
    with pytest.raises(ValueError):
        sweep(m, make_batch([[3, 10**6, 5, EOS]], [2], 16), [1])  # (refused by the embedding, in eval mode)
    assert m.training


def test_sweep_refuses_rows_with_nothing_to_score():
    """A batch whose targets are all IGNORE reported exact match 1.0 and perplexity 1.0, and a row with no target
    counted as right: refused, naming the rows."""
    from looplm.dynamics import diagnose, perturbation_recovery
    from looplm.tasks.base import IGNORE, Batch

    torch.manual_seed(0)
    m = LoopedTransformer(tiny_model_config(max_seq_len=16)).eval()
    b = make_batch([[3, 4, 5, EOS], [6, 7, 8, EOS], [5, 5, 5, EOS]], [2, 2, 2], 16)
    none = Batch(b.input_ids, torch.full_like(b.targets, IGNORE), b.mask)
    row = Batch(b.input_ids, b.targets.clone(), b.mask)
    row.targets[1] = IGNORE
    for call in (lambda x: sweep(m, x, [1, 2]), lambda x: diagnose(m, x, [1, 2], spectral_depths=[]),
                 lambda x: perturbation_recovery(m, x, 1, [0.1], [1])):
        with pytest.raises(ValueError, match="nothing to score: no position"):
            call(none)
        with pytest.raises(ValueError, match=r"row\(s\) 1 of 3 have no scored position"):
            call(row)
    assert len(sweep(m, b, [1, 2]).accuracy) == 2


def test_a_target_outside_the_readout_is_refused_by_sweep_and_diagnose():
    """A plug-in task's target id past the model's vocabulary (or a negative one other than IGNORE) was torch's
    IndexError from cross-entropy (sweep) or gather (diagnose): refused, naming the id and the readout's range."""
    from looplm.dynamics import diagnose
    from looplm.tasks.base import Batch

    torch.manual_seed(0)
    m = LoopedTransformer(tiny_model_config(max_seq_len=16)).eval()
    b = make_batch([[3, 4, 5, EOS], [6, 7, 8, EOS]], [2, 2], 16)
    vocab = m.cfg.vocab_size
    for bad in (vocab, vocab + 7, -5):
        tgt = b.targets.clone()
        tgt[1, (tgt[1] >= 0).nonzero()[0]] = bad
        x = Batch(b.input_ids, tgt, b.mask)
        for call in (lambda x: sweep(m, x, [1, 2]), lambda x: diagnose(m, x, [1, 2], spectral_depths=[])):
            with pytest.raises(ValueError, match=f"target id {bad} is no token of the model's readout"):
                call(x)
    assert diagnose(m, b, [1, 2], spectral_depths=[])["depths"] == [1, 2]


def test_a_path_with_a_newline_is_printed_on_one_line(tmp_path, capsys):
    """`--out $'ru\\nn'` printed `run written to ru` and `n` on two lines (and so did sweep's `wrote`): a path is
    printed with its control characters escaped, as generated text is."""
    from looplm.cli import main

    run = tmp_path / "ru\nn"
    assert main(["train", "--config", "addition-prenorm-stars", "--out", str(run), "--no-progress",
                 "--set", "train.steps=1", "--set", "model.d_model=32", "--set", "model.d_ff=64",
                 "--set", "model.n_heads=2", "--set", "train.batch_size=4", "--set", "data.test_size=8",
                 "--set", "train.eval_every=0", "--set", "loops.max_loops=2", "--set", "reg.rho_every=0"]) == 0
    assert main(["sweep", str(run), "--depths", "1", "--n", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    shown = str(run).replace("\n", "\\n")
    assert f"run written to {shown}" in out and f"wrote {shown}/sweep.json" in out


def _nonfinite_model(how: str) -> LoopedTransformer:
    torch.manual_seed(0)
    m = LoopedTransformer(tiny_model_config(max_seq_len=16)).eval()
    with torch.no_grad():
        if how == "nan":
            m.tok_emb.weight[3] = float("nan")
        else:  # finite weights whose forward overflows
            m.tok_emb.weight.mul_(1e36)
    return m


def test_sweep_refuses_nan_weights_and_scores_an_overflowing_loop_as_wrong():
    """NaN weights were scored: exact match 0.000 as if measured, and a text's CE and perplexity written as NaN into
    sweep.json (no strict JSON, which `looplm plot` then refused): refused. Finite weights whose loop overflows are
    the collapse a sweep is run to see: its rows are scored wrong there (an argmax of NaN logits is no answer), and
    the CE (and the state norm, of NaN or inf states) are null, with the depths listed."""
    batch = make_batch([[3, 4, 5, 6, EOS]] * 4, [3] * 4, 16)
    with pytest.raises(ValueError, match=r"^the model's weights are not finite \(1 tensor\(s\): tok_emb.weight\)"):
        sweep(_nonfinite_model("nan"), batch, [1, 2])
    res = sweep(_nonfinite_model("huge"), batch, [1, 2])
    doc = res.to_json()
    assert res.overflow == [1, 2] and doc["overflow"] == [1, 2] and doc["accuracy"] == [0.0, 0.0]
    assert doc["state_norm"] == [None, None] and doc["ce"] == [None, None] and doc["ppl"] == [None, None]
    json.dumps(doc, allow_nan=False)  # strict JSON
    ok = sweep(LoopedTransformer(tiny_model_config(max_seq_len=16)).eval(), batch, [1, 2])
    assert ok.overflow is None and "overflow" not in ok.to_json()
    # an exit rule's answer at an overflowing depth is wrong too (it was scored right), and --sizes keeps the list
    m = LoopedTransformer(tiny_model_config(max_seq_len=16)).eval()
    hot = torch.nn.functional.one_hot(batch.targets.clamp_min(0), m.cfg.vocab_size).bool()  # (B, T, V)
    inf = torch.where(hot, float("inf"), 0.0)
    m.readout = lambda h, ctx: inf[: h.shape[0]]  # logits of +inf exactly at the targets: the argmax "right"
    ex = sweep(m, batch, [1, 2], exit_stable=1).to_json()
    assert ex["accuracy"] == [0.0, 0.0] and ex["exit"]["accuracy"] == 0.0 and ex["overflow"] == [1, 2]
    from looplm.evaluate import overflow_of

    assert overflow_of([doc, ok.to_json(), {"overflow": [3]}]) == {"overflow": [1, 2, 3]} and overflow_of([{}]) == {}


def test_an_overflowing_perplexity_is_null_not_capped():
    """A CE above ~709 nats was stored as e^700 (1.01e+304), a number that looked measured; now null."""
    from looplm.evaluate import SweepResult, perplexity

    assert perplexity(2.0) == pytest.approx(math.exp(2.0))
    assert perplexity(5547.9) is None
    res = SweepResult([1, 2], torch.ones(2, 3, dtype=torch.bool), torch.ones(2), torch.tensor([1.0, 5547.9]))
    doc = res.to_json()
    assert doc["ppl"][1] is None and doc["ppl"][0] == pytest.approx(math.e)
    json.dumps(doc, allow_nan=False)  # strict JSON
    from looplm.cli import depth_table

    assert depth_table(doc, [1, 2], "ppl", "ppl").splitlines()[1].split() == ["ppl", "2.718", "overflow"]


@pytest.mark.parametrize("how", ["nan", "huge"])
def test_sweep_and_analyze_on_a_run_whose_weights_or_states_are_not_finite(tmp_path, capsys, how):
    """analyze was a traceback from torch's eig or svd, and sweep exited 0 reporting exact match 0.000 for NaN
    weights: both refuse NaN weights, analyze refuses an overflowing loop, and sweep scores it wrong with a note."""
    from .bad_input_cases_paths import _embedding

    run = tmp_path / "bad"
    assert main(["train", "--config", "addition-prenorm-stars", "--out", str(run), "--no-progress", "--set",
                 "train.steps=2", "--set", "model.d_model=32", "--set", "model.d_ff=64", "--set", "train.batch_size=8",
                 "--set", "data.test_size=8", "--set", "train.eval_every=0", "--set", "loops.max_loops=3"]) == 0
    _embedding(how)(tmp_path, run)  # the weights edited, and their manifest record with them
    sw = ["sweep", str(run), "--depths", "1:2", "--n", "2", "--out", str(tmp_path / "s.json"), "--no-progress"]
    an = ["analyze", str(run), "--depths", "1:2", "--n", "2", "--out", str(tmp_path / "an"), "--no-progress"]
    msg = "the model's weights are not finite (1 tensor(s): tok_emb.weight)" if how == "nan" else \
        "at depth 1 are not finite (NaN or inf)"
    for args in ([sw, an] if how == "nan" else [an]):
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and msg in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "an").exists()
    if how == "huge":
        capsys.readouterr()
        assert main(sw) == 0
        assert "note: the states or logits overflow (not finite, or a state's norm past float32's range) at 2 " \
            "depth(s) from 1: rows there are scored as wrong and their CE is null" in capsys.readouterr().out
        doc = json.loads((tmp_path / "s.json").read_text())
        assert doc["overflow"] == [1, 2] and doc["accuracy"] == [0.0, 0.0] and doc["state_norm"] == [None, None]
    else:
        assert not (tmp_path / "s.json").exists()


def test_a_state_past_float32s_norm_is_an_overflow_and_its_norm_is_measured():
    """A finite state whose norm passes ~1.8e19 overflows float32: its norm was written as null (with no `overflow`
    entry), and the readout's LayerNorm, whose variance overflows there too, returned its bias: uniform logits,
    scored as a measured CE of ln V. Now the norm is computed in float64 (null means a NaN or inf state), and the
    depth is an overflow, scored wrong with a null CE, as analyze and generate refuse it."""
    from looplm.dynamics import diagnose

    batch = make_batch([[3, 4, 5, 6, EOS]] * 4, [3] * 4, 16)
    torch.manual_seed(0)
    m = LoopedTransformer(tiny_model_config(max_seq_len=16)).eval()
    with torch.no_grad():
        m.tok_emb.weight.mul_(1e21)  # each state ~1e20: every element finite, its square not
    doc = sweep(m, batch, [1, 2]).to_json()
    assert doc["overflow"] == [1, 2] and doc["accuracy"] == [0.0, 0.0] and doc["ce"] == [None, None]
    assert all(1e19 < x < 1e21 for x in doc["state_norm"]), doc["state_norm"]
    with pytest.raises(ValueError, match=r"^the model's states at depth 1 are too large \(a state's norm past "):
        diagnose(m, batch, [1, 2], spectral_depths=[], pca_n=0)
    with pytest.raises(ValueError, match=r"^the model's states at depth 2 are too large"):
        generate(m, [[3, 4, 5]], 2, 3, EOS)


@pytest.mark.parametrize("cached", [False, True, "exit"])
def test_generate_refuses_non_finite_weights_and_an_overflowing_readout(cached):
    """generate decoded NaN weights (the argmax of NaN logits, token 0, as "the model wrote <pad>") and inf logits
    without a word, though sweep and analyze refuse them: it refuses the weights with sweep's check, and a token
    read out of non-finite logits or an overflowed state."""
    rule = {"exit_stable": 1} if cached == "exit" else {"use_cache": bool(cached)}
    with pytest.raises(ValueError, match=r"^the model's weights are not finite \(1 tensor\(s\): tok_emb.weight\); "
                                         "looplm does not score, analyze or generate from such a model"):
        generate(_nonfinite_model("nan"), [[3, 4, 5]], 2, 3, EOS, **rule)
    over = r"^the model's (states|readout logits) at depth \d are (not finite|too large)"
    with pytest.raises(ValueError, match=over):
        generate(_nonfinite_model("huge"), [[3, 4, 5]], 2, 3, EOS, **rule)
    torch.manual_seed(0)
    m = LoopedTransformer(tiny_model_config(max_seq_len=16)).eval()
    with torch.no_grad():
        m.norm_f.weight.fill_(3e38)  # finite weights, states fine: the logits alone overflow (+-inf)
    with pytest.raises(ValueError, match=r"^the model's readout logits at depth 2 are not finite \(NaN or inf\)"):
        generate(m, [[3, 4, 5]], 2, 3, EOS, **rule)
