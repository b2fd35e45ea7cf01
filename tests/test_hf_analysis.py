"""`looplm analyze` on HF looped models (looplm.hf.analysis): text batches, padding, CLI dispatch and errors."""

import json

import pytest
import torch

pytest.importorskip("transformers")

from looplm.cli import main  # noqa: E402
from looplm.dynamics import diagnose  # noqa: E402
from looplm.hf.analysis import find_model_dir, text_batch  # noqa: E402
from looplm.tasks.base import IGNORE  # noqa: E402

from .hf_fixtures import (  # noqa: E402
    math_problems,
    name_templates,
    save_tiny_base,
    tiny_chat_tokenizer,
    tiny_ouro,
    write_jsonl,
)


@pytest.fixture(scope="module")
def tok():
    return tiny_chat_tokenizer()


def test_text_batch_targets_are_next_assistant_tokens(tok, tmp_path):
    rows = math_problems(3)
    batch, stats = text_batch(tok, str(write_jsonl(rows, tmp_path / "m.jsonl")), n=3)
    mask = batch.mask
    assert stats["used"] == 3 and batch.input_ids.shape == mask.shape == batch.targets.shape
    for i in range(3):
        n = int(mask[i].sum())
        assert not mask[i, n:].any()  # right padding only
        tgt = batch.targets[i]
        pos = (tgt != IGNORE).nonzero().flatten()
        assert len(pos) > 0 and int(pos.max()) < n - 1
        assert torch.equal(tgt[pos], batch.input_ids[i, pos + 1])  # the next token, on assistant positions
        # the decoded targets hold the worked solution's final answer
        assert f"#### {rows[i]['target']}" in tok.decode(tgt[pos])


def test_padding_and_pad_equal_eos_do_not_leak_into_statistics(tok, tmp_path):
    # The tokenizer's pad id is also its EOS (as in Ouro's); stats must use the attention mask, so a short
    # sample's numbers are the same alone and right-padded next to a longer one.
    model = tiny_ouro(len(tok)).eval()
    rows = math_problems(6)
    rows.sort(key=lambda r: len(r["solution"]))
    short, long = rows[0], dict(rows[-1], solution=rows[-1]["solution"] + " So the answer stays.")
    kw = {"spectral_n": 0, "pca_n": 0, "hutchinson_samples": 0}

    def mean_of(data):
        batch, _ = text_batch(tok, str(write_jsonl(data, tmp_path / "d.jsonl")), n=len(data))
        res = diagnose(model, batch, [1, 2, 3], **kw)
        return {k: torch.tensor(res["metrics"][k]["mean"]) for k in ("state_norm", "step_residual", "ce")}

    a, b, both = mean_of([short]), mean_of([long]), mean_of([short, long])
    for k in both:
        assert torch.allclose(both[k], (a[k] + b[k]) / 2, rtol=1e-4, atol=1e-6), k


def test_cli_finds_hf_dirs_and_needs_data(tok, tmp_path, capsys):
    d = save_tiny_base(tmp_path / "model", tok)
    assert find_model_dir(d) == d and find_model_dir(tmp_path) is None
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint").symlink_to(d)
    assert find_model_dir(run) == run / "checkpoint"
    assert main(["analyze", str(d), "--depths", "1:2", "--no-progress"]) == 2
    assert "needs --data" in capsys.readouterr().err
    bad = write_jsonl([{"text": "no prompt or answer here"}], tmp_path / "bad.jsonl")
    assert main(["analyze", str(d), "--data", str(bad), "--depths", "1:2", "--no-progress"]) == 2
    assert "messages" in capsys.readouterr().err
    # a JSON file named config.json without model_type is not an HF model: the looplm path answers
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.json").write_text(json.dumps({"a": 1}))
    assert find_model_dir(tmp_path / "x") is None


def test_records_too_long_are_counted_and_the_limit_is_the_models_positions(tok, tmp_path, capsys):
    """Records longer than the model's position table (or --max-length) are skipped, and the command says how
    many; the skipped count and the records analyzed are in dynamics.json."""
    d = save_tiny_base(tmp_path / "model", tok, max_position_embeddings=128)
    rows = math_problems(3)
    long = " ".join(["7"] * 300) + "\n#### 7"  # about 600 tokens
    rows[1] = {**rows[1], "answer": long, "solution": long}
    data = write_jsonl(rows, tmp_path / "m.jsonl")
    flags = ["--depths", "1:2", "--spectral-n", "0", "--pca-n", "0", "--no-plot", "--no-progress"]
    capsys.readouterr()
    assert main(["analyze", str(d), "--data", str(data), *flags, "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "note: 1 of 3 records read were skipped (1 longer than 128 tokens, 0 with an empty prompt or no assistant " \
        "reply); 2 analyzed" in out
    res = json.loads((tmp_path / "a" / "dynamics.json").read_text())
    assert res["n"] == 2 and res["data_stats"]["overlong"] == 1
    assert main(["analyze", str(d), "--data", str(data), *flags, "--max-length", "700", "--out",
                 str(tmp_path / "b")]) == 2  # past the positions the model was built for
    assert "longer than the model's position table (128)" in capsys.readouterr().err
    assert main(["analyze", str(d), "--data", str(data), *flags, "--max-length", "127", "--n", "3", "--out",
                 str(tmp_path / "c")]) == 2  # --n is a promise: 2 records fit
    said = capsys.readouterr()
    assert "holds only 2 usable records" in said.err and "analyzed" not in said.out  # nothing was


def test_records_of_mixed_shapes_are_each_read_by_their_own(tok, tmp_path, capsys):
    """A question/answer record followed by chat records: each is read by its own shape (the first record does
    not decide for the file), so none is skipped as having no reply."""
    d = save_tiny_base(tmp_path / "model", tok)
    rows = math_problems(3)
    chat = [{"messages": [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}]}
            for r in rows[1:]]
    data = write_jsonl([{"question": rows[0]["question"], "answer": rows[0]["answer"]}, *chat], tmp_path / "m.jsonl")
    capsys.readouterr()
    assert main(["analyze", str(d), "--data", str(data), "--depths", "1:2", "--spectral-n", "0", "--pca-n", "0",
                 "--no-plot", "--no-progress", "--out", str(tmp_path / "a")]) == 0
    assert "skipped" not in capsys.readouterr().out
    assert json.loads((tmp_path / "a" / "dynamics.json").read_text())["n"] == 3
    one = write_jsonl([rows[0]], tmp_path / "one.jsonl")  # the same problem as chat gives the same numbers
    two = write_jsonl([{"messages": [{"role": "user", "content": rows[0]["question"]},
                                     {"role": "assistant", "content": rows[0]["answer"]}]}], tmp_path / "two.jsonl")
    b1, _ = text_batch(tok, str(one), 1)
    b2, _ = text_batch(tok, str(two), 1)
    assert torch.equal(b1.input_ids, b2.input_ids) and torch.equal(b1.targets, b2.targets)


def test_a_small_n_reads_on_past_long_records(tok, tmp_path, capsys):
    """--n 2 over a file whose first four records are too long: the rest of the file is read, as for any n."""
    d = save_tiny_base(tmp_path / "model", tok, max_position_embeddings=128)
    rows = math_problems(14)
    long = " ".join(["7"] * 300) + "\n#### 7"
    for r in rows[:4]:
        r.update(answer=long, solution=long)
    data = write_jsonl(rows, tmp_path / "m.jsonl")
    capsys.readouterr()
    assert main(["analyze", str(d), "--data", str(data), "--n", "2", "--depths", "1:2", "--spectral-n", "0",
                 "--pca-n", "0", "--no-plot", "--no-progress", "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "dynamics.json").read_text())["n"] == 2


def test_a_tokenizer_larger_than_the_embedding_is_one_line(tok, tmp_path, capsys):
    """An HF directory whose tokenizer has more tokens than the model's embedding: analyze failed with an
    IndexError traceback inside the embedding (finetune and eval-lm refused it in one line)."""
    d = tmp_path / "small"
    tiny_ouro(300).save_pretrained(d)
    tok.save_pretrained(d)
    data = write_jsonl(math_problems(2), tmp_path / "m.jsonl")
    capsys.readouterr()
    assert main(["analyze", str(d), "--data", str(data), "--n", "2", "--depths", "1:2", "--spectral-n", "0",
                 "--no-plot", "--no-progress", "--out", str(tmp_path / "a")]) == 2
    assert f"the tokenizer of {d} has 320 tokens but the model's embedding has 300 rows" in capsys.readouterr().err


def test_a_link_to_a_finetunes_checkpoint_writes_where_the_checkpoint_would(tok, tmp_path):
    """eval-lm / analyze through a symbolic link to a fine-tune's checkpoint/: the default output folder was
    inside the link (so inside the checkpoint, which training replaces), and the refusal spoke of an --out the
    user never gave."""
    from looplm.outputs import default_out_dir, fresh_outputs

    run = tmp_path / "run"
    save_tiny_base(run / "checkpoint", tok)
    (run / "metrics.jsonl").write_text("")
    (tmp_path / "link").symlink_to(run / "checkpoint")
    assert default_out_dir(str(tmp_path / "link")) == default_out_dir(str(run / "checkpoint")).resolve() == \
        run.resolve()
    fresh_outputs([default_out_dir(str(tmp_path / "link")) / "eval-lm" / "eval_lm.json"], False)
    model = save_tiny_base(tmp_path / "model", tok)  # a model directory of its own, linked: its own folder
    (tmp_path / "mlink").symlink_to(model)
    assert default_out_dir(str(tmp_path / "mlink")) == tmp_path / "mlink"


def test_alpaca_records_are_read_with_their_instruction(tok, tmp_path):
    """instruction / input / output records were read as input -> output: the instruction was dropped, and a
    record with an empty input was skipped as one "with no assistant reply"."""
    rows = [{"instruction": "Add the two numbers.", "input": "3 and 4", "output": "The sum is 7."},
            {"instruction": "What is 2 times 5?", "input": "", "output": "It is 10."}]
    batch, stats = text_batch(tok, str(write_jsonl(rows, tmp_path / "a.jsonl")), n=2)
    assert stats["kept"] == 2 and stats["no_target"] == 0
    texts = [tok.decode(r[m.bool()]) for r, m in zip(batch.input_ids, batch.mask, strict=True)]
    assert "Add the two numbers.\n\n3 and 4<|im_end|>" in texts[0] and "What is 2 times 5?<|im_end|>" in texts[1]
    plain, _ = text_batch(tok, str(write_jsonl([{"input": "3 and 4", "output": "7"}], tmp_path / "i.jsonl")), n=1)
    assert "3 and 4" in tok.decode(plain.input_ids[0])


def test_a_lone_surrogate_and_named_templates_are_one_line(tok, tmp_path, capsys):
    """A lone surrogate escape in a record was the tokenizer's TypeError traceback; a tokenizer with named chat
    templates and none called default got transformers' advice to pass a template name, which analyze has no option
    for. Both are one line, the first with the record's file:line and field."""
    d = save_tiny_base(tmp_path / "m", tok)
    bad = tmp_path / "qa.jsonl"
    rows = [math_problems(1)[0], {"question": "1+1?", "answer": "2\udc00"}]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["analyze", str(d), "--data", str(bad), "--depths", "1", "--no-progress", "--out",
                 str(tmp_path / "a")]) == 2
    assert "qa.jsonl:2: field 'answer' holds a lone surrogate escape" in capsys.readouterr().err
    text = name_templates(d)
    data = write_jsonl(math_problems(2), tmp_path / "ok.jsonl")
    assert main(["analyze", str(d), "--data", str(data), "--depths", "1", "--no-progress", "--out",
                 str(tmp_path / "a")]) == 2
    assert 'named chat templates (rag, tool_use) and none called "default"' in capsys.readouterr().err
    (d / "chat_template.jinja").write_text(text)  # what the message says to do
    assert main(["analyze", str(d), "--data", str(data), "--depths", "1", "--no-progress", "--spectral-n", "0",
                 "--pca-n", "0", "--no-plot", "--out", str(tmp_path / "a")]) == 0
