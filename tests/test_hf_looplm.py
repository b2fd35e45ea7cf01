"""looplm's LoopedTransformer as an HF model: conversion, Auto classes, generate() == looplm's decoder."""

import pytest
import torch

pytest.importorskip("transformers")

from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

from looplm import checkpoint as ckpt  # noqa: E402
from looplm.generate import generate  # noqa: E402
from looplm.hf import LooplmConfig, LooplmForCausalLM, convert_checkpoint  # noqa: E402
from looplm.model import LoopedTransformer  # noqa: E402
from looplm.tasks.addition import EOS, AdditionTask  # noqa: E402

from .conftest import tiny_config  # noqa: E402


@pytest.fixture(scope="module")
def looplm_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    cfg = tiny_config(model=dict(norm_placement="pre_sandwich", n_prelude=1), loops=dict(num_loops=3))
    model = LoopedTransformer(cfg.model)
    with torch.no_grad():  # a less uniform random model, so greedy decoding varies and sometimes stops
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    d = tmp_path_factory.mktemp("looplm") / "checkpoint"
    ckpt.save(d, model, cfg)
    return d, model, cfg


def test_convert_and_load_through_auto_classes(looplm_ckpt, tmp_path):
    d, model, cfg = looplm_ckpt
    out = convert_checkpoint(d, tmp_path / "hf")
    conf = AutoConfig.from_pretrained(out)
    assert isinstance(conf, LooplmConfig) and conf.num_loops == 3 and conf.model_config() == cfg.model
    hf = AutoModelForCausalLM.from_pretrained(out)
    assert isinstance(hf, LooplmForCausalLM)
    assert sorted(hf.state_dict()) == sorted(f"model.{k}" for k in model.state_dict())
    ids = torch.randint(2, 14, (3, 9))
    # on the tokenizer's 14 ids; the head's 2 padded ids are -inf in the export (never generated)
    torch.testing.assert_close(hf(ids).logits[..., :14], model(ids, 3)[..., :14])
    assert bool(torch.isneginf(hf(ids).logits[..., 14:]).all())
    torch.testing.assert_close(hf(ids, num_loops=5).logits[..., :14], model(ids, 5)[..., :14])
    out5 = hf(ids, num_loops=5, output_loop_logits=True)
    torch.testing.assert_close(out5.loop_logits[1][..., :14], model(ids, 2)[..., :14])
    with pytest.raises(ValueError, match="a left-padded batch shifts them"):
        hf(ids, attention_mask=torch.tensor([[0] + [1] * 8] * 3))
    # Ouro's early-exit arguments (no gate here) and a misspelt loop count are refused, not ignored
    for bad in ({"exit_threshold": 0.0}, {"use_weighted_exit": True}, {"exit_dtype": "float32"}):
        with pytest.raises(ValueError, match="has no early-exit gate"):
            hf(ids, **bad)
    for typo in ({"num_loop": 1}, {"loops": 1}):
        with pytest.raises(TypeError, match="the loop count is num_loops="):
            hf(ids, **typo)
    # a hand-edited num_loops of 2.5 ran 2 loops, `true` 1
    for bad in (2.5, True, "3", 0):
        with pytest.raises(ValueError, match="num_loops must be an integer >= 1"):
            LooplmConfig.from_model_config(cfg.model, num_loops=bad)


@pytest.mark.parametrize("loops", [1, 3, 6])
def test_hf_generate_equals_looplm_generate(looplm_ckpt, tmp_path, loops):
    d, model, cfg = looplm_ckpt
    hf = AutoModelForCausalLM.from_pretrained(convert_checkpoint(d, tmp_path / "hf")).eval()
    task = AdditionTask(cfg.data.digits)
    prompts = ["1234+5678=", "9999+1000=", "4321+8765="]  # equal lengths: one batch, no padding
    ids = [task.tok.encode(p) for p in prompts]
    new = cfg.model.max_seq_len - len(ids[0])
    want = generate(model.eval(), ids, loops, max_new_tokens=new, eos_id=EOS)
    got = hf.generate(torch.tensor(ids), max_new_tokens=new, do_sample=False, num_loops=loops)
    for row, w in zip(got.tolist(), want, strict=True):
        tail = row[len(ids[0]) :]
        tail = tail[: tail.index(EOS)] if EOS in tail else tail
        assert tail == w


def test_export_hf_command(looplm_ckpt, tmp_path, capsys):
    from looplm.cli import main as cli

    d, model, _ = looplm_ckpt
    assert cli(["export-hf", str(d), "--out", str(tmp_path / "x"), "--loops", "5"]) == 0
    assert "wrote" in capsys.readouterr().out
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "x")
    assert hf.config.num_loops == 5
    ids = torch.randint(2, 14, (1, 6))
    torch.testing.assert_close(hf(ids).logits[..., :14], model(ids, 5)[..., :14])
    assert cli(["export-hf", str(tmp_path / "missing"), "--out", str(tmp_path / "y")]) == 2


def test_an_interrupted_export_leaves_no_model_directory(looplm_ckpt, tmp_path, monkeypatch, capsys):
    """Ctrl-C or SIGTERM in the middle of writing left a torn config.json, or weights with no tokenizer, in --out:
    it read as a damaged model, and the rerun was refused as a folder that is not empty. The export is written
    beside --out and renamed into place."""
    from transformers import PreTrainedTokenizerFast

    from looplm.cli import main as cli

    d, _, _ = looplm_ckpt

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", interrupted)  # after the weights are written
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "x", tmp_path / "empty"):
        assert cli(["export-hf", str(d), "--out", str(out)]) == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"] and not any((tmp_path / "empty").iterdir())
    monkeypatch.undo()
    assert cli(["export-hf", str(d), "--out", str(tmp_path / "x")]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (tmp_path / "x").iterdir()}
    # an empty folder the user prepared (its mode, a symlink to it) is written into, not replaced
    prepared, link = tmp_path / "empty", tmp_path / "link"
    prepared.chmod(0o2750)
    link.symlink_to(prepared)
    before = prepared.stat()
    assert cli(["export-hf", str(d), "--out", str(link)]) == 0
    after = prepared.stat()
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode) and link.is_symlink()
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in prepared.iterdir()}
    assert not [p for p in tmp_path.rglob("*") if "export" in p.name]  # no working folder left
    # another export into the same prepared folder finishing first: this one is refused, the other's files kept
    (tmp_path / "race").mkdir()
    real = PreTrainedTokenizerFast.save_pretrained

    def and_the_other_finishes(self, *a, **k):
        out = real(self, *a, **k)
        (tmp_path / "race" / "config.json").write_text("the other export's")
        return out

    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", and_the_other_finishes)
    capsys.readouterr()
    assert cli(["export-hf", str(d), "--out", str(tmp_path / "race")]) == 2
    assert "was written by another command meanwhile" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "race").iterdir()] == ["config.json"]
    assert (tmp_path / "race" / "config.json").read_text() == "the other export's"


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_export_writes_a_tokenizer_that_encodes_as_training_did(tmp_path, kind, capsys):
    """An export loads with AutoTokenizer and gives the ids of the tokenizer saved with the run, for every kind of
    task tokenizer, so eval-lm and analyze need no tokenizer supplied by hand."""
    import random

    from transformers import AutoTokenizer

    from looplm.cli import main as cli
    from looplm.tasks import tokenizers

    rng = random.Random(0)
    alphabet = "abcdefgh ijk\nlmnö✓"
    text = "".join(rng.choice(alphabet) for _ in range(3000))
    (tmp_path / "corpus.txt").write_text(text, encoding="utf-8")
    run = tmp_path / "run"
    assert cli(["train", "--config", "text-stars", "--out", str(run), "--no-progress",
                "--set", f"data.path={tmp_path / 'corpus.txt'}", "--set", f"data.tokenizer={kind}",
                "--set", "data.bpe_vocab=300", "--set", "data.window=16", "--set", "model.max_seq_len=16",
                "--set", "model.d_model=32", "--set", "model.d_ff=64", "--set", "model.n_heads=2",
                "--set", "train.steps=1", "--set", "train.batch_size=4", "--set", "train.eval_every=0",
                "--set", "loops.max_loops=2", "--set", "reg.rho_every=0", "--set", "train.threads=1"]) == 0
    assert cli(["export-hf", str(run), "--out", str(tmp_path / "exp")]) == 0
    native = tokenizers.load(run / "checkpoint")
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "exp")
    assert (hf_tok.pad_token_id, hf_tok.eos_token_id) == (tokenizers.PAD, tokenizers.EOS)
    for _ in range(20):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        ids = native.encode(s)
        assert hf_tok(s)["input_ids"] == ids
        assert hf_tok.decode(ids) == native.decode(ids) == s
    # the tokens after the end token are not part of the text, in both
    assert hf_tok.decode(ids + [tokenizers.EOS, 5], skip_special_tokens=True).startswith(native.decode(ids))
    if kind == "char":  # eval-lm on text the vocabulary lacks: one line naming the cause, not the library's error
        pytest.importorskip("lm_eval")
        from .hf_fixtures import math_problems, write_jsonl, write_lm_eval_tasks

        tasks = write_lm_eval_tasks(tmp_path / "tasks", write_jsonl(math_problems(3), tmp_path / "m.jsonl"))
        assert cli(["eval-lm", str(tmp_path / "exp"), "--tasks", tasks[1], "--include-path", str(tmp_path / "tasks"),
                    "--depths", "1", "--device", "cpu", "--out", str(tmp_path / "ev")]) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]  # lm-eval's progress bars, then
        errors = [ln for ln in err if ln.startswith("error:")]
        assert errors == [err[-1]] and "its tokenizer cannot encode the text of" in err[-1], err
        assert "Traceback" not in "\n".join(err)
        assert not (tmp_path / "ev").exists()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "exp")
    looplm_model, _ = ckpt.load_model(run, "cpu")
    x = torch.tensor([native.encode(text[:12])])
    torch.testing.assert_close(model(x).logits, looplm_model(x, model.config.num_loops))


def test_lm_eval_on_a_character_export_with_stop_strings_and_budgets(tmp_path, capsys):
    """A generation task whose stop string is a character the export lacks ("\\n": the most common `until`) was a
    traceback from lm-eval's stopping criteria; such a string can never be generated, so it stops nothing and is
    left out. lm-eval's own command line: a generation budget past the positions is one line, and its default
    device (cuda:0) falls back to the CPU on a machine without CUDA, as lm-eval's hf model does."""
    import json
    import os
    import subprocess
    import sys

    pytest.importorskip("lm_eval")
    from looplm.cli import main as cli

    run, exp = tmp_path / "run", tmp_path / "exp"
    assert cli(["train", "--config", "addition-prenorm-stars", "--out", str(run), "--no-progress", "--set",
                "model.d_model=32", "--set", "model.d_ff=64", "--set", "model.n_heads=2", "--set", "train.steps=1",
                "--set", "train.batch_size=4", "--set", "train.eval_every=0", "--set", "reg.rho_every=0",
                "--set", "data.test_size=16", "--set", "model.max_seq_len=16"]) == 0
    assert cli(["export-hf", str(run), "--out", str(exp)]) == 0
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "rows.jsonl").write_text("".join(
        json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) + "\n" for a, b in ((12, 34), (5, 6), (70, 8))))
    rows = tmp_path / "tasks" / "rows.jsonl"
    (tmp_path / "tasks" / "sums.yaml").write_text(
        f"task: sums\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {rows}\n"
        "test_split: test\noutput_type: generate_until\ndoc_to_text: '{{prompt}}'\ndoc_to_target: '{{answer}}'\n"
        "metric_list:\n  - metric: exact_match\ngeneration_kwargs:\n  until: ['\\n', 'Question:']\n"
        "  do_sample: false\n  max_gen_toks: 4\nmetadata:\n  version: 1.0\n")
    assert cli(["eval-lm", str(exp), "--tasks", "sums", "--include-path", str(tmp_path / "tasks"), "--depths", "1,2",
                "--device", "cpu", "--out", str(tmp_path / "ev")]) == 0, capsys.readouterr().err[-2000:]
    assert json.loads((tmp_path / "ev" / "eval_lm.json").read_text())["n_samples"]["sums"]["effective"] == 3
    r = subprocess.run([sys.executable, "-m", "looplm.hf.lm_eval_adapter", "run", "--model", "looplm", "--model_args",
                        f"pretrained={exp}", "--tasks", "sums", "--include_path", str(tmp_path / "tasks"),
                        "--gen_kwargs", "max_gen_toks=64"], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(errors) == 1, r.stderr[-2000:]
    assert "the generation budget does not fit the model's 16 positions" in errors[0]
    # model_args max_length past an export's learned positions was a traceback at the first long request; and a
    # RANK left in the environment muted the adapter's error line (it loads the model in this one process)
    from looplm.errors import UserError
    from looplm.hf.lm_eval_adapter import LoopedLM

    with pytest.raises(UserError, match="model_args max_length=64 is more than the model's 16 positions"):
        LoopedLM(pretrained=str(exp), device="cpu", max_length=64)
    r = subprocess.run([sys.executable, "-m", "looplm.hf.lm_eval_adapter", "run", "--model", "looplm", "--model_args",
                        f"pretrained={exp},max_length=64", "--tasks", "sums", "--include_path", str(tmp_path / "tasks"),
                        "--device", "cpu"], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "RANK": "1",
                            "WORLD_SIZE": "2"})
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert r.returncode == 2 and len(errors) == 1 and "max_length=64 is more than" in errors[0], r.stderr[-2000:]


def test_an_export_refuses_a_loop_count_or_token_ids_no_command_could_run(looplm_ckpt, tmp_path):
    """convert_checkpoint(num_loops=0) exported the run's own depth without a word (-3 was refused), and 10**7 wrote
    an export every command then refused; an export's config took token ids outside its vocabulary (999, -1, True),
    which Ouro's config refuses, and was scored."""
    d, _, cfg = looplm_ckpt
    for bad, msg in ((0, "num_loops must be an integer >= 1, got 0"), (10**7, "num_loops must be at most 1,000,000")):
        with pytest.raises(ValueError, match=msg):
            convert_checkpoint(d, tmp_path / f"hf{bad}", num_loops=bad)
        assert not (tmp_path / f"hf{bad}").exists()
    v = cfg.model.vocab_size
    for key, bad in (("eos_token_id", 999), ("eos_token_id", True), ("pad_token_id", -1), ("pad_token_id", v)):
        with pytest.raises(ValueError, match=rf"{key} must be null or a token id in \[0, {v}\), got {bad!r}"):
            convert_checkpoint(d, tmp_path / "hf", **{key: bad})
        with pytest.raises(ValueError, match=f"{key} must be null or a token id"):
            LooplmConfig.from_model_config(cfg.model, **{key: bad})
    assert not (tmp_path / "hf").exists()
    assert LooplmConfig.from_model_config(cfg.model, num_loops=10**6, eos_token_id=[1, 2]).num_loops == 10**6
