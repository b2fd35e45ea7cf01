"""Round 43, HF model side: resize_token_embeddings on a looplm export keeps its vocabulary fields in step (the
forward refused the new ids, and a saved resize masked them to -inf in every reader while finetune trained on
them); finetune refuses targets past tokenizer_vocab_size, as analyze does; a mistyped relative model path
"does not exist" (it was blamed on the hub's repo-id rules); eval-lm's prompts-cut note never advises a negative
--max-gen-toks; an unknown task with --include-path says what the folder holds."""

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402

from looplm.cli import main  # noqa: E402

from .hf_fixtures import math_problems, save_tiny_base, tiny_chat_tokenizer, write_jsonl, write_lm_eval_tasks  # noqa

NEW = ["<|new1|>", "<|new2|>"]
# every turn ends with the added <|new2|>: the fine-tune's targets hold it
TEMPLATE = ("{% for m in messages %}{{ '<|new1|>' + m['role'] + ':' + m['content'] + '<|new2|>' }}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|new1|>assistant:' }}{% endif %}")


@pytest.fixture(scope="module")
def tok():
    return tiny_chat_tokenizer()


def _export(tok):
    from looplm.hf import LooplmConfig, LooplmForCausalLM

    torch.manual_seed(0)
    return LooplmForCausalLM(LooplmConfig(vocab_size=len(tok), tokenizer_vocab_size=len(tok), max_seq_len=256,
                                          d_model=16, n_heads=2, d_ff=32, num_loops=2))


def _resized(tok):
    """A looplm export and its tokenizer after the usual HF way of adding chat tokens."""
    t = tiny_chat_tokenizer()
    t.add_special_tokens({"additional_special_tokens": NEW})
    m = _export(tok)
    m.resize_token_embeddings(len(t))
    return m, t


def test_resize_token_embeddings_keeps_the_vocabulary_fields_in_step(tok, tmp_path):
    from transformers import AutoModelForCausalLM

    from looplm.hf import register

    register()
    m, t = _resized(tok)
    n = len(t)
    assert m.config.vocab_size == n and m.config.tokenizer_vocab_size == n and m.model.cfg.vocab_size == n
    ids = torch.tensor([t.convert_tokens_to_ids(NEW) + [5]])
    logits = m(ids).logits  # was: ValueError token ids must lie in [0, 320)
    assert bool(torch.isfinite(logits[0, -1, -2:]).all())  # the added tokens can be generated
    m.save_pretrained(tmp_path / "r")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "r")
    assert json.loads((tmp_path / "r" / "config.json").read_text())["tokenizer_vocab_size"] == n
    assert bool(torch.isfinite(again(ids).logits[0, -1, -2:]).all())
    # rows padded past the tokens asked for are no tokens: still masked
    p = _export(tok)
    p.resize_token_embeddings(len(t), pad_to_multiple_of=64)
    assert p.config.vocab_size == 384 and p.config.tokenizer_vocab_size == n
    out = p(ids).logits[0, -1]
    assert bool(torch.isfinite(out[:n]).all()) and bool(torch.isinf(out[n:]).all())


def _finetune(tmp: Path, capsys, model: str, *more: str) -> tuple[int, str]:
    data = write_jsonl([{"question": f"Tom has {i}", "answer": f"#### {i}"} for i in range(8)], tmp / "d.jsonl")
    (tmp / "tpl.jinja").write_text(TEMPLATE)
    (tmp / "ft.yaml").write_text(f"model:\n  name_or_path: {model}\n  gradient_checkpointing: false\ndata:\n"
                                 f"  source: {data}\n  prompt_field: question\n  response_field: answer\n"
                                 f"  max_length: 64\n  chat_template: {tmp / 'tpl.jinja'}\n"
                                 "train:\n  steps: 1\n  batch_size: 2\n  threads: 1\nreg:\n  kind: none\n")
    capsys.readouterr()
    rc = main(["finetune", "--config", str(tmp / "ft.yaml"), "--out", str(tmp / "ft"), "--no-progress", *more])
    return rc, capsys.readouterr().err.strip()


def test_finetune_refuses_targets_past_tokenizer_vocab_size(tok, tmp_path, capsys):
    """Saved by an older resize (tokenizer_vocab_size left at the export's width): finetune trained the turn-end
    token that every reader then masked to -inf; now it refuses, naming the ids, as analyze does."""
    m, t = _resized(tok)
    m.config.tokenizer_vocab_size = len(tok)  # as the older resize left it
    m.save_pretrained(tmp_path / "old")
    t.save_pretrained(tmp_path / "old")
    rc, err = _finetune(tmp_path, capsys, str(tmp_path / "old"))
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert f"{len(t) - 1} '<|new2|>'" in err and f"tokenizer_vocab_size {len(tok)}" in err and str(len(t)) in err
    assert not (tmp_path / "ft").exists()


def test_finetune_of_a_resized_export_teaches_a_token_it_can_emit(tok, tmp_path, capsys):
    m, t = _resized(tok)
    m.save_pretrained(tmp_path / "new")
    t.save_pretrained(tmp_path / "new")
    rc, err = _finetune(tmp_path, capsys, str(tmp_path / "new"))
    assert rc == 0, err
    conf = json.loads((tmp_path / "ft" / "checkpoint" / "config.json").read_text())
    assert conf["tokenizer_vocab_size"] == conf["vocab_size"] == len(t)


@pytest.mark.parametrize("path", ["./rk/checkpoints/step-1", "../rk_nope/x", "rk/checkpoints/step-1"])
def test_a_mistyped_relative_model_path_does_not_exist(tmp_path, capsys, monkeypatch, path):
    (tmp_path / "w" / "rk" / "checkpoints").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "w")
    capsys.readouterr()
    assert main(["eval-lm", path, "--tasks", "x", "--depths", "1", "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: model directory {path} does not exist") and "repo" not in err.lower(), err
    if path.startswith(("./", "rk")):
        assert "(rk/checkpoints/ does)" in err
    rc, err = _finetune(tmp_path, capsys, path)
    assert rc == 2 and f"model directory {path} does not exist" in err and "repo" not in err.lower(), err


@pytest.fixture(scope="module")
def short_model(tmp_path_factory, tok):
    """A 48-position model and tasks whose prompts are longer than that."""
    pytest.importorskip("lm_eval")
    d = tmp_path_factory.mktemp("pos48")
    save_tiny_base(d / "model", tok, max_position_embeddings=48)
    write_lm_eval_tasks(d / "tasks", write_jsonl(math_problems(4), d / "math.jsonl"), max_gen_toks=6)
    return d


def test_the_prompts_cut_note_never_advises_a_negative_budget(short_model, tmp_path, capsys):
    d = short_model
    capsys.readouterr()
    assert main(["eval-lm", str(d / "model"), "--tasks", "tiny_math_gen", "--include-path", str(d / "tasks"),
                 "--depths", "1", "--limit", "2", "--max-gen-toks", "40", "--device", "cpu",
                 "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    note = next(line for line in out.splitlines() if "were cut from the left" in line)
    assert "at most -" not in note and "no budget scores them whole" in note and "--num-fewshot" in note, note


def test_an_unknown_task_with_include_path_names_what_the_folder_holds(short_model, tmp_path, capsys):
    d = short_model
    capsys.readouterr()
    assert main(["eval-lm", str(d / "model"), "--tasks", "tiny_math_gem", "--include-path", str(d / "tasks"),
                 "--depths", "1", "--device", "cpu", "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs --include-path" not in err and "did you mean tiny_math_gen" in err, err
    assert str(d / "tasks") in err
