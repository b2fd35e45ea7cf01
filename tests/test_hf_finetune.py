"""STARS fine-tuning (looplm.hf): assistant-only masks, data sources, the objective, runs, resume, CLI."""

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from safetensors.torch import load_file  # noqa: E402

from looplm.cli import main as cli  # noqa: E402
from looplm.config import Config, ConfigError, load_config, preset_names  # noqa: E402
from looplm.hf.chat import TemplateError, encode_chat, to_messages  # noqa: E402
from looplm.hf.data import build_examples, collate, load_records, to_batch  # noqa: E402
from looplm.looped import phi, run_loop  # noqa: E402
from looplm.model import twice_differentiable  # noqa: E402
from looplm.objective import Objective  # noqa: E402
from looplm.regularizers import jsrr, jvp, unit_probes  # noqa: E402
from looplm.tasks.base import IGNORE  # noqa: E402
from looplm.train import fit  # noqa: E402

from .hf_fixtures import math_problems, save_tiny_base, tiny_chat_tokenizer, tiny_ouro, write_jsonl  # noqa: E402


@pytest.fixture(scope="module")
def tok():
    return tiny_chat_tokenizer()


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, tok):
    return save_tiny_base(tmp_path_factory.mktemp("base") / "ouro-tiny", tok)


def target_texts(tok, enc) -> list[str]:
    """Decode each maximal run of labelled tokens."""
    runs, cur = [], []
    for i, lab in zip(enc.input_ids, enc.labels, strict=True):
        if lab != IGNORE:
            assert lab == i
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [tok.decode(r) for r in runs]


CONVO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+3?"},
         {"role": "assistant", "content": "2+3 = 5.\n#### 5"}, {"role": "user", "content": "and 4*4?"},
         {"role": "assistant", "content": "#### 16"}]


def test_mask_covers_assistant_content_and_end_of_turn_only(tok):
    enc = encode_chat(tok, CONVO)
    # ChatML appends "<|im_end|>\n" to every turn: the end-of-turn token is a target (the model must learn to
    # stop), the newline after it and the generation prompt "<|im_start|>assistant\n" are not.
    assert target_texts(tok, enc) == ["2+3 = 5.\n#### 5<|im_end|>", "#### 16<|im_end|>"]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    user_end = [j for j, i in enumerate(enc.input_ids) if i == im_end][:2]  # system and user turns
    assert all(enc.labels[j] == IGNORE for j in user_end)
    # The first target is predicted from the last token of the generation prompt (labels are not shifted;
    # the loss shifts): the token before it is the "\n" after "assistant".
    first = next(j for j, lab in enumerate(enc.labels) if lab != IGNORE)
    assert tok.decode(enc.input_ids[first - 1 : first]) == "\n"
    assert tok.decode(enc.input_ids[:first]).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("template, want", [
    # A template that closes the assistant turn with the eos token and a multi-token marker.
    ("{% for m in messages %}{% if m['role'] == 'user' %}{{ 'User: ' + m['content'] + '\\n' }}"
     "{% else %}{{ 'Assistant: ' + m['content'] + eos_token + ' [END]\\n\\n' }}{% endif %}{% endfor %}"
     "{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}",
     ["4<|endoftext|> [END]"]),  # digits are split from what precedes them: the prompt's trailing space stays put
    # A template with no end-of-turn marker at all: the content alone is the target.
    ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
     "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}",
     ["4"]),
])
def test_mask_with_other_templates(tok, template, want):
    msgs = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    assert target_texts(tok, encode_chat(tok, msgs, chat_template=template)) == want


def test_mask_rejects_templates_that_are_not_prefix_stable(tok):
    # Renders the last message differently from earlier ones: the rendered prefix changes as turns are added.
    bad = "{% for m in messages %}{% if loop.last %}[{{ m['content'] }}]{% else %}{{ m['content'] }}{% endif %}" \
          "{% endfor %}"
    with pytest.raises(TemplateError, match="prefix-stably"):
        encode_chat(tok, CONVO[1:3], chat_template=bad)


def test_a_messages_other_keys_reach_the_template(tok):
    """A template may render more of a message than role and content (reasoning_content in a <think> block):
    every key reaches it, and what it renders of an assistant turn is target (the keys were dropped, so such
    data trained on the bare answers)."""
    think = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' }}"
             "{% if m.get('reasoning_content') %}{{ '<think>' + m['reasoning_content'] + '</think>' }}{% endif %}"
             "{{ m['content'] + '<|im_end|>\\n' }}{% endfor %}"
             "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    record = {"messages": [{"role": "user", "content": "What is 2+3?"},
                           {"role": "assistant", "content": "#### 5", "reasoning_content": "2 and 3 make 5."}]}
    msgs = to_messages(record)
    assert msgs[1]["reasoning_content"] == "2 and 3 make 5."
    assert target_texts(tok, encode_chat(tok, msgs, chat_template=think)) == [
        "<think>2 and 3 make 5.</think>#### 5<|im_end|>"]


def test_an_assistant_turn_of_weight_0_is_context(tok):
    """OpenAI's fine-tuning format marks an assistant turn not to train on with "weight": 0: it was trained on."""
    convo = [{"role": "user", "content": "What is 2+3?"}, {"role": "assistant", "content": "five", "weight": 0},
             {"role": "user", "content": "digits?"}, {"role": "assistant", "content": "#### 5", "weight": 1}]
    msgs = to_messages({"messages": convo})
    assert target_texts(tok, encode_chat(tok, msgs)) == ["#### 5<|im_end|>"]
    assert to_messages({"messages": convo[:2]}) is None  # nothing left to learn from
    # parquet and hub data fill the key on messages that lack it with null: absent, not refused
    nulls = to_messages({"messages": [{**convo[0], "weight": None}, *convo[1:]]})
    assert target_texts(tok, encode_chat(tok, nulls)) == ["#### 5<|im_end|>"]
    with pytest.raises(ValueError, match=r"messages\[1\].weight must be 0 \(not trained on\) or 1, got 0.5"):
        to_messages({"messages": [convo[0], {**convo[1], "weight": 0.5}]})


def test_an_empty_assistant_turn_is_context(tok):
    """An empty assistant turn beside a real one trained its end marker alone, teaching the model to end the
    turn at once; a conversation whose only assistant turn is empty was already dropped."""
    for empty in ("", "  \n"):
        convo = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": empty},
                 {"role": "user", "content": "2+3?"}, {"role": "assistant", "content": "#### 5"}]
        assert target_texts(tok, encode_chat(tok, to_messages({"messages": convo}))) == ["#### 5<|im_end|>"]
        assert to_messages({"messages": convo[:2]}) is None


def test_encoding_a_long_conversation_is_no_warning(tok):
    """A conversation is tokenized whole, then cut or dropped by looplm (data.overlong): transformers' warning that
    running it "will result in indexing errors" was printed on fine-tunes that succeeded, and before error lines."""
    import logging

    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    log = logging.getLogger("transformers")
    log.addHandler(handler)
    short = tok.model_max_length
    try:
        tok.model_max_length = 8
        assert len(encode_chat(tok, CONVO).input_ids) > 8
    finally:
        tok.model_max_length = short
        log.removeHandler(handler)
    assert not [m for m in seen if "indexing errors" in m]


def test_records_formats_sources_and_truncation(tok, tmp_path):
    rows = math_problems(6)
    assert to_messages(rows[0])[1] == {"role": "assistant", "content": rows[0]["solution"]}
    assert to_messages({"problem": "x", "solution": " "}) is None
    assert to_messages({"messages": [{"role": "user", "content": "hi"}]}) is None  # nothing to learn
    assert to_messages(rows[0], system_prompt="S")[0] == {"role": "system", "content": "S"}
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    write_jsonl(rows, tmp_path / "d.jsonl")
    assert load_records(str(tmp_path / "d.parquet")) == load_records(str(tmp_path / "d.jsonl")) == rows
    with pytest.raises(ValueError, match="2 formats"):  # the same rows as JSONL and Parquet: read twice
        load_records(str(tmp_path))
    (tmp_path / "d.parquet").unlink()
    write_jsonl(rows, tmp_path / "e.jsonl")
    assert len(load_records(str(tmp_path))) == 12 and len(load_records(str(tmp_path), max_samples=8)) == 8
    pick = load_records(str(tmp_path / "d.jsonl"), max_samples=3, subset="random", seed=1)
    assert len(pick) == 3 and all(r in rows for r in pick)
    assert pick == load_records(str(tmp_path / "d.jsonl"), max_samples=3, subset="random", seed=1)
    with pytest.raises(FileNotFoundError):
        load_records(str(tmp_path / "missing.jsonl"))
    # a .json file holding JSON Lines (what `datasets`' to_json writes) or a list after a BOM reads as its rows
    other = tmp_path / "other"
    other.mkdir()
    (other / "lines.json").write_text((tmp_path / "d.jsonl").read_text())
    (other / "bom.json").write_text(json.dumps(rows), encoding="utf-8-sig")
    assert load_records(str(other / "lines.json")) == load_records(str(other / "bom.json")) == rows
    (other / "bad.json").write_text('{"a": 1}\n{"a": ]\n')
    with pytest.raises(ValueError, match="bad.json:2"):
        load_records(str(other / "bad.json"))
    # one record as JSON Lines (to_json of a one-row dataset) was refused as "expected a list of records"
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "one.json").write_text(json.dumps(rows[0]) + "\n")
    assert load_records(str(tmp_path / "one" / "one.json")) == rows[:1]
    # one record whose own `data` field is no list of records was read as the {"data": [...]} wrapper
    (tmp_path / "one" / "two.json").write_text(json.dumps({**rows[0], "data": {"origin": "x"}}) + "\n")
    assert load_records(str(tmp_path / "one" / "two.json")) == [{**rows[0], "data": {"origin": "x"}}]
    (tmp_path / "one" / "two.json").write_text(json.dumps({**rows[0], "data": [{"origin": "x"}]}) + "\n")
    assert load_records(str(tmp_path / "one" / "two.json")) == [{**rows[0], "data": [{"origin": "x"}]}]
    # a compressed or CSV file in a data folder was skipped without a word
    (tmp_path / "one" / "more.jsonl.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(ValueError, match=r"holds data files looplm does not read \(more.jsonl.gz\)"):
        load_records(str(tmp_path / "one"))
    # data.system_prompt opens conversations without a system turn; one with its own keeps it, and is counted
    convo = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                          {"role": "assistant", "content": "4"}]}
    _, st = build_examples([convo, {"messages": convo["messages"][1:]}], tok, 512, system_prompt="Tutor.")
    assert st.own_system == 1 and "1 kept their own system turn" in st.summary(512, "drop")
    later = {"messages": [*convo["messages"][1:], {"role": "system", "content": "Be brief."},
                          {"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "6"}]}
    assert [m["role"] for m in to_messages(later, system_prompt="Tutor.")].count("system") == 1  # not two
    # a chat template that writes no system turns dropped data.system_prompt (or a record's own) in silence
    mute = "{% for m in messages %}{% if m.role != 'system' %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n" \
           "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    for recs, kw in (([{"messages": convo["messages"][1:]}], {"system_prompt": "Tutor."}), ([convo], {})):
        with pytest.raises(ValueError, match=r"record 0: the chat template drops the system turn \('(Tutor|Be brief)"
                                             r".*would read the conversation without it"):  # (analyze trains nothing)
            build_examples(recs, tok, 512, chat_template=mute, **kw)
    assert build_examples([{"messages": convo["messages"][1:]}], tok, 512, chat_template=mute)[1].kept == 1
    # a datasets save_to_disk folder: its metadata JSON was named as a bad data file
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "dataset_info.json").write_text("{}\n")
    with pytest.raises(ValueError, match="is a datasets save_to_disk folder"):
        load_records(str(tmp_path / "saved"))
    full, _ = build_examples(rows, tok, max_length=4096, fmt="prompt_response")
    cut = min(len(e.input_ids) for e in full) - 3  # every example loses its last tokens, keeps some targets
    ex, st = build_examples(rows, tok, max_length=cut, overlong="truncate", fmt="prompt_response")
    assert len(ex) == 6 and all(len(e.input_ids) == cut and e.n_targets > 0 for e in ex) and st.overlong == 6
    with pytest.raises(ValueError, match="no usable examples"):
        build_examples(rows, tok, max_length=40, overlong="drop")
    ids, labels, mask = collate(ex[:3], pad_id=0)
    assert ids.shape == labels.shape == mask.shape and (labels[mask == 0] == IGNORE).all()


def test_objective_ce_is_over_assistant_tokens_and_jsrr_over_real_tokens(tok):
    model = tiny_ouro(len(tok)).train()
    ex, _ = build_examples(math_problems(3), tok, max_length=512)
    batch = to_batch(ex, tok.pad_token_id)
    cfg = Config.from_dict({"model": {"name_or_path": "x"}, "data": {"source": "x"}})
    obj = Objective(model, cfg.loops, cfg.reg)
    ce_sum, pen = obj(batch.input_ids, batch.targets, batch.mask, n_loops=3, at=3,
                      probes=torch.Generator().manual_seed(0))
    full = model(batch.input_ids, num_loops=3, use_cache=False).logits
    labels = collate(ex, tok.pad_token_id)[1]
    ref = torch.nn.functional.cross_entropy(full[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE,
                                            reduction="sum")
    torch.testing.assert_close(ce_sum, ref)
    assert int((batch.targets != IGNORE).sum()) == int((labels[:, 1:] != IGNORE).sum())
    # Padding does not change a sequence's penalty: each row's ||J v||² equals that of the row alone, with the
    # probe restricted to its real tokens.
    ids, mask = batch.input_ids, batch.mask
    with torch.no_grad():
        h0, ctx = model.embed(ids, mask)
        h = run_loop(model, h0, ctx, 3)
    with twice_differentiable():
        got = jsrr(phi(model, ctx), h, torch.Generator().manual_seed(0), mask)
        torch.testing.assert_close(pen, got)
        v = unit_probes(h.shape, torch.Generator().manual_seed(0), h.device, h.dtype, mask[..., None].float())
        rows = []
        for i in range(len(ids)):
            n = int(mask[i].sum())
            _, ci = model.embed(ids[i : i + 1, :n])
            rows.append(jvp(phi(model, ci), h[i : i + 1, :n].detach(), v[i : i + 1, :n])[1].pow(2).sum())
        assert mask.sum(1).min() < mask.shape[1]  # the batch really is padded
        torch.testing.assert_close(pen, torch.stack(rows).mean())
    ((0.9 * ce_sum / (batch.targets != IGNORE).sum()) + 0.1 * pen).backward()
    assert model.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0
    # The same objective drives looplm's own architecture (here with a coda block, whose readout attends).
    from looplm.hf import LooplmConfig, LooplmForCausalLM

    lm = LooplmForCausalLM(LooplmConfig(vocab_size=len(tok), max_seq_len=512, d_model=16, n_heads=2, d_ff=32,
                                        n_coda=1, norm_placement="pre_sandwich"))
    ce_sum, pen = Objective(lm, cfg.loops, cfg.reg)(batch.input_ids, batch.targets, batch.mask, n_loops=2, at=2,
                                                   probes=torch.Generator().manual_seed(0))
    full = lm(batch.input_ids, num_loops=2).logits
    ref = torch.nn.functional.cross_entropy(full[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE,
                                            reduction="sum")
    torch.testing.assert_close(ce_sum, ref)
    assert torch.isfinite(pen) and pen > 0


def test_preset_is_the_paper_setting_and_loads_by_name_and_path():
    cfg = load_config("ouro-math-stars")
    assert cfg.kind == "hf"
    assert (cfg.loops.sampler, cfg.loops.mu, cfg.loops.sigma, cfg.loops.min_loops, cfg.loops.max_loops) == \
        ("lognormal", 1.7, 0.4, 1, 16)
    assert cfg.reg.kind == "jsrr" and cfg.reg.weight == 0.1 and cfg.train.lr == pytest.approx(1e-6)
    assert cfg.data.source == "AI-MO/NuminaMath-1.5" and cfg.data.max_samples == 400000 and cfg.train.epochs == 1
    assert cfg.model.name_or_path == "ByteDance/Ouro-1.4B"
    assert "ouro-math-stars" in preset_names()  # one preset folder for every kind
    # The path the README gives, from the repository root: the same file as the packaged preset.
    repo_cfg = Path(__file__).resolve().parent.parent / "looplm" / "presets" / "ouro-math-stars.yaml"
    assert load_config(repo_cfg) == cfg
    # A partial YAML for a pretrained model keeps that kind's defaults (the Ouro loop distribution).
    assert Config.from_dict({"model": {"name_or_path": "x"}, "loops": {"max_loops": 8}}).loops.mu == 1.7
    with pytest.raises(ConfigError, match="section 'train' must be a mapping, got int"):
        Config.from_dict({"model": {"name_or_path": "x"}, "train": 3})
    with pytest.raises(ConfigError, match="train.nope"):
        load_config("ouro-math-stars", ["train.nope=1"])
    with pytest.raises(ConfigError, match="train.strategy.*ddp.*fsdp"):
        load_config("ouro-math-stars", ["train.strategy=zero3"])


def _cfg(base_dir, data, **train):
    t = dict(steps=4, batch_size=4, micro_batch_size=2, lr=3e-3, log_every=1, checkpoint_every=2, threads=1)
    t.update(train)
    return Config.from_dict({"model": {"name_or_path": str(base_dir)},
                             "data": {"source": str(data), "max_length": 256}, "train": t})


def test_finetune_runs_resumes_exactly_and_reloads(base_dir, tmp_path):
    data = write_jsonl(math_problems(12), tmp_path / "math.jsonl")
    cfg = _cfg(base_dir, data)
    straight = fit(cfg, tmp_path / "a", progress=False)
    with pytest.raises(RuntimeError, match="injected crash"):
        fit(cfg, tmp_path / "b", progress=False, fault={"crash_at_step": 3})  # last checkpoint: step 2
    with pytest.raises(FileExistsError, match="pass resume=True"):
        fit(cfg, tmp_path / "b", progress=False)
    resumed = fit(cfg, tmp_path / "b", resume=True, progress=False)
    wa = load_file(str(straight / "checkpoint" / "model.safetensors"))
    wb = load_file(str(resumed / "checkpoint" / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)
    recs = [json.loads(x) for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2, 3, 4] and all(1 <= r["loops"] <= 16 for r in recs)
    assert all(r["reg_kind"] == "jsrr" and r["reg"] > 0 for r in recs)
    # Generation stops at the template's end of turn as well as at the base eos (Ouro: <|endoftext|>).
    gen = json.loads((straight / "checkpoint" / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [0, 2]
    base = load_file(str(base_dir / "model.safetensors"))
    assert not torch.equal(base["model.layers.0.mlp.up_proj.weight"], wa["model.layers.0.mlp.up_proj.weight"])
    torch.testing.assert_close(base["model.early_exit_gate.weight"], wa["model.early_exit_gate.weight"])  # frozen
    # The checkpoint is an HF model directory: it loads (and generates) through the Auto classes.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = AutoModelForCausalLM.from_pretrained(straight / "checkpoint")
    tk = AutoTokenizer.from_pretrained(straight / "checkpoint")
    prompt = tk.apply_chat_template([{"role": "user", "content": "1+1?"}], add_generation_prompt=True,
                                    return_tensors="pt", return_dict=True)
    out = m.generate(**prompt, max_new_tokens=4, do_sample=False, num_loops=2)
    assert out.shape[1] <= prompt["input_ids"].shape[1] + 4


def test_finetune_cli_sft_baseline(base_dir, tmp_path, capsys):
    data = write_jsonl(math_problems(8), tmp_path / "m.jsonl")
    y = tmp_path / "ft.yaml"
    y.write_text(f"model:\n  name_or_path: {base_dir}\ndata:\n  source: {data}\n  max_length: 256\n"
                 "loops:\n  sampler: fixed\n  num_loops: 2\nreg:\n  kind: none\n"
                 "train:\n  steps: 2\n  batch_size: 2\n  threads: 1\n  log_every: 1\n")
    assert cli(["finetune", "--config", str(y), "--out", str(tmp_path / "run"), "--no-progress",
                "--set", "train.lr=1e-4"]) == 0
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loops"] for r in recs] == [2, 2] and all(r["reg"] is None for r in recs)
    assert cli(["finetune", "--config", str(y), "--out", str(tmp_path / "x"), "--set", "loops.sigma=0"]) == 2
    assert "loops.sigma" in capsys.readouterr().err


def test_an_assistant_turn_that_opens_the_conversation_is_trained_without_its_header(tok):
    """The generation prompt before an opening assistant turn (`<|im_start|>assistant\\n`) is context, as it is for
    every later assistant turn: the targets are the replies and their end-of-turn tokens only."""
    a, u = {"role": "assistant", "content": "#### 5"}, {"role": "user", "content": "2+3?"}
    enc = encode_chat(tok, [a, u, a])
    assert target_texts(tok, enc) == ["#### 5<|im_end|>", "#### 5<|im_end|>"]


def test_a_finetune_resume_on_other_data_is_refused(base_dir, tmp_path):
    """The checkpoint records a digest of the tokenized examples (data.json): a resume on an edited or shorter file
    is refused before anything is touched, a resume on the same data goes on."""
    data = write_jsonl(math_problems(12), tmp_path / "math.jsonl")
    cfg = _cfg(base_dir, data)
    with pytest.raises(RuntimeError, match="injected crash"):
        fit(cfg, tmp_path / "r", progress=False, fault={"crash_at_step": 3})
    assert (tmp_path / "r" / "checkpoint" / "data.json").is_file()
    write_jsonl(math_problems(10), data)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "r").rglob("*"))
    with pytest.raises(ConfigError, match="no longer holds the data"):
        fit(cfg, tmp_path / "r", resume=True, progress=False)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "r").rglob("*")) == before
    write_jsonl(math_problems(12), data)
    fit(cfg, tmp_path / "r", resume=True, progress=False)


def test_a_finetune_resume_after_its_template_file_changed_names_the_template(base_dir, tmp_path):
    """The digest is of the encoded examples, so an edited chat-template file (same path, same setting) is
    refused like edited data; the message names the template, not only the data file (which did not change)."""
    import dataclasses

    data = write_jsonl(math_problems(12), tmp_path / "math.jsonl")
    jinja = tmp_path / "t.jinja"
    jinja.write_text("{% for m in messages %}[{{ m.role }}]: {{ m.content }}\n{% endfor %}"
                     "{% if add_generation_prompt %}[assistant]: {% endif %}")
    cfg = _cfg(base_dir, data)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, chat_template=str(jinja)))
    with pytest.raises(RuntimeError, match="injected crash"):
        fit(cfg, tmp_path / "r", progress=False, fault={"crash_at_step": 3})
    jinja.write_text(jinja.read_text().replace("]: ", "] "))
    with pytest.raises(ConfigError, match=f"data: {data} through data.chat_template='{jinja}' "
                                          r"\(data.max_length=256\) no longer holds the data"):
        fit(cfg, tmp_path / "r", resume=True, progress=False)


def test_epochs_draw_whole_batches_and_no_example_twice(base_dir, tmp_path, capsys):
    """train.epochs=1 over 12 examples in batches of 5: 2 steps (10 examples, each once), the 2 left out said; a
    batch larger than an epoch holds is refused."""
    import dataclasses

    data = write_jsonl(math_problems(12), tmp_path / "math.jsonl")
    base = _cfg(base_dir, data)
    cfg = dataclasses.replace(base, train=dataclasses.replace(base.train, steps=0, epochs=1, batch_size=5,
                                                              micro_batch_size=5))
    run = fit(cfg, tmp_path / "e", progress=False)
    assert "2 steps; the last 2 example(s) of the last pass are not drawn" in capsys.readouterr().out
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["step"] == 2
    from looplm.hf.data import epoch_order

    drawn = epoch_order(12, cfg.train.seed, 0)[: 2 * 5]  # the examples of steps 1 and 2: one pass, no repeat
    assert len(set(drawn)) == len(drawn) == 10
    big = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=16, micro_batch_size=16))
    with pytest.raises(ConfigError, match="train.batch_size=16 is more than train.epochs=1 pass"):
        fit(big, tmp_path / "big", progress=False)
    assert not (tmp_path / "big").exists()


def test_truncation_that_removes_every_reply_token_is_said_as_such(tok):
    long_user = {"role": "user", "content": "word " * 80}
    rows = [{"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]},
            {"messages": [long_user, {"role": "assistant", "content": "3"}]}]
    examples, stats = build_examples(rows, tok, 40, "truncate")
    assert (stats.kept, stats.no_target, stats.reply_cut, stats.overlong) == (1, 0, 1, 0)
    assert "1 whose reply starts after data.max_length=40 tokens" in stats.summary(40, "truncate")
    with pytest.raises(ValueError, match=r"reply after max_length=40: 1\); raise the length limit"):
        build_examples(rows[1:], tok, 40, "truncate")


def test_a_data_folder_reads_no_hidden_copies(tmp_path):
    write_jsonl(math_problems(3), tmp_path / "d" / "train.jsonl")
    write_jsonl(math_problems(3), tmp_path / "d" / ".ipynb_checkpoints" / "train-checkpoint.jsonl")
    assert len(load_records(str(tmp_path / "d"))) == 3


@pytest.mark.parametrize("opening", [
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}",  # a default system turn (Qwen-style)
    "{{ '<|endoftext|>' }}",  # a BOS token
])
def test_an_opening_assistant_turn_trains_its_reply_only_whatever_the_template_puts_first(tok, opening):
    template = opening + ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>'"
                          " + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
                          "{% endif %}")
    a, u = {"role": "assistant", "content": "#### 5"}, {"role": "user", "content": "2+3?"}
    assert target_texts(tok, encode_chat(tok, [a, u, a], template)) == ["#### 5<|im_end|>", "#### 5<|im_end|>"]
    assert target_texts(tok, encode_chat(tok, [u, a], template)) == ["#### 5<|im_end|>"]


def test_a_finetune_with_steps_records_no_epochs_it_did_not_use(base_dir, tmp_path):
    cfg = load_config("ouro-math-stars", [f"model.name_or_path={base_dir}", "train.steps=5"])
    assert (cfg.train.steps, cfg.train.epochs) == (5, 0)
    assert load_config("ouro-math-stars", [f"model.name_or_path={base_dir}"]).train.epochs == 1


def test_a_config_that_says_tied_over_a_file_with_its_own_head_loads_the_file(base_dir, tmp_path):
    """transformers keeps the file's own head; the config then says untied, so nothing later (lm-eval's
    tie_weights) swaps the embedding in and scores a model that exists nowhere on disk."""
    import shutil

    from safetensors.torch import load_file as lf

    from looplm.hf.finetune import load_pretrained

    d = shutil.copytree(base_dir, tmp_path / "tied")
    conf = json.loads((d / "config.json").read_text())
    conf["tie_word_embeddings"] = True
    (d / "config.json").write_text(json.dumps(conf))
    m = load_pretrained(str(d))
    m.tie_weights()
    torch.testing.assert_close(m.lm_head.weight, lf(str(d / "model.safetensors"))["lm_head.weight"])


def test_tool_definitions_and_tool_calls_reach_the_template_and_are_trained(tok):
    """A record's `tools` never reached the template (the same data digest as without them), and an assistant
    turn holding only tool_calls was context (its content is empty), though the template renders the call."""
    template = ("{% if tools %}<|im_start|>system\n{% for t in tools %}{{ t.function.name }};{% endfor %}<|im_end|>\n"
                "{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}{% if m.tool_calls %}"
                "{% for c in m.tool_calls %}<call>{{ c.function.name }}{{ c.function.arguments | tojson }}</call>"
                "{% endfor %}{% endif %}<|im_end|>\n"
                "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    call = {"type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 3}}}
    record = {"tools": [{"type": "function", "function": {"name": "add"}}],
              "messages": [{"role": "user", "content": "2+3?"}, {"role": "assistant", "content": "",
                                                                 "tool_calls": [call]},
                           {"role": "tool", "content": "5"}, {"role": "assistant", "content": "#### 5"}]}
    enc = encode_chat(tok, to_messages(record), chat_template=template, tools=record["tools"])
    assert tok.decode(enc.input_ids).startswith("<|im_start|>system\nadd;<|im_end|>")
    assert target_texts(tok, enc) == ['<call>add{"a": 2, "b": 3}</call><|im_end|>', "#### 5<|im_end|>"]
    from looplm.hf.data import build_examples

    [example], _ = build_examples([record], tok, 512, chat_template=template)  # what a fine-tune trains on
    assert (example.input_ids, example.labels) == (enc.input_ids, enc.labels)
    with pytest.raises(ValueError, match="tools must be a list of tool definitions"):
        to_messages({**record, "tools": "add"})


def test_an_empty_turn_with_keys_the_template_does_not_render_is_context(tok):
    """WildChat-style exports put keys such as `language` or `id` on every message: an empty assistant turn that
    carries them was trained as its end marker alone."""
    convo = [{"role": "user", "content": "hi", "language": "English"},
             {"role": "assistant", "content": "", "language": "English", "redacted": False},
             {"role": "user", "content": "2+3?"}, {"role": "assistant", "content": "#### 5", "id": "m2"}]
    assert target_texts(tok, encode_chat(tok, convo)) == ["#### 5<|im_end|>"]
    convo[1] = {"role": "assistant", "content": "  ", "id": "m1"}  # blank, not empty
    assert target_texts(tok, encode_chat(tok, convo)) == ["#### 5<|im_end|>"]


def test_a_generation_prompt_that_is_not_the_turn_start_is_named(tok):
    """A template whose generation prompt adds `<think>\\n` was refused as "turn 1 changes earlier text"."""
    template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}")
    with pytest.raises(TemplateError, match=r"generation prompt \('<think>\\n' after the conversation so far\)"):
        encode_chat(tok, [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
                    chat_template=template)


def test_a_template_that_drops_tool_turns_tools_or_tool_calls_is_refused(tok):
    """A template without a tool role dropped the tool result, and ChatML (the tiny base's, as Ouro's) ignores a
    record's `tools` and an assistant's `tool_calls`: every such record was kept, trained on replies to a tool
    result or a tool it never saw."""
    calc = {"type": "function", "function": {"name": "calculator", "parameters": {}}}
    call = {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
        "name": "calculator", "arguments": {"a": 2, "b": 2}}}]}
    turns = [{"role": "user", "content": "2+2?"}, call, {"role": "tool", "content": "RESULT 4"},
             {"role": "assistant", "content": "It is 4."}]
    no_tool = ("{% for m in messages %}{% if m.role != 'tool' %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>"
               "\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    plain = [turns[0], {"role": "assistant", "content": "Calling."}, *turns[2:]]
    with pytest.raises(TemplateError, match=r"drops the tool turn \('RESULT 4' .* writes tool turns"):
        encode_chat(tok, plain, chat_template=no_tool)
    with pytest.raises(ValueError, match=r"record 0: the chat template drops the tool definitions .*'calculator' "
                                         r".*use a chat template that renders tools"):
        build_examples([{"messages": turns[2:], "tools": [calc]}], tok, 512)
    with pytest.raises(TemplateError, match=r"drops the tool calls .*'calculator'"):
        encode_chat(tok, turns)
    assert target_texts(tok, encode_chat(tok, plain)) == ["Calling.<|im_end|>", "It is 4.<|im_end|>"]
    # a template that renders them (ChatML with tools, as Qwen's): kept, the call a target
    tools = ("{% if tools %}<|im_start|>system\n{% for t in tools %}{{ t.function | tojson }}\n{% endfor %}"
             "<|im_end|>\n{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
             "{% for c in m.tool_calls or [] %}<tool_call>{{ c.function | tojson }}</tool_call>{% endfor %}"
             "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    ex, st = build_examples([{"messages": turns, "tools": [calc]}], tok, 512, chat_template=tools)
    assert st.kept == 1 and any("calculator" in t for t in target_texts(tok, ex[0]))
    # a template that writes a tool result as a JSON string (Llama 3.1's `{{ m.content | tojson }}`): rendered,
    # escaped; it was refused as dropping the turn
    as_json = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'tool' %}{{ m.content | tojson }}"
               "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
               "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    result = [turns[0], {"role": "assistant", "content": "Calling."}, {"role": "tool", "content": '{"sum": 4}'},
              turns[3]]
    assert target_texts(tok, encode_chat(tok, result, chat_template=as_json))[-1] == "It is 4.<|im_end|>"


def test_a_dropped_part_is_refused_when_its_text_stands_elsewhere_too(tok):
    """The check looked for a tool's name (or a turn's content) anywhere in the render: a user turn naming the tool
    hid ChatML's dropping of `tools` and `tool_calls`, and a dropped tool result (or system turn) that another turn
    repeats passed."""
    call = {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
        "name": "calculator", "arguments": '{"a": 2, "b": 2}'}}]}
    ask = {"role": "user", "content": "Use the calculator: 2+2?"}
    with pytest.raises(TemplateError, match=r"drops the tool calls .*'calculator'"):
        encode_chat(tok, [ask, call, {"role": "tool", "content": "4"}, {"role": "assistant", "content": "It is 4."}])
    with pytest.raises(ValueError, match=r"drops the tool definitions .*'calculator'"):  # finetune and analyze data
        build_examples([{"messages": [ask, {"role": "assistant", "content": "4"}],
                         "tools": [{"type": "function", "function": {"name": "calculator"}}]}], tok, 512)
    turns = ("{% for m in messages %}{% if m.role in keep %}<|im_start|>{{ m.role }}\n{{ m.content }}"
             "{% for c in m.tool_calls or [] %}<call>{{ c.function.name }}</call>{% endfor %}<|im_end|>\n{% endif %}"
             "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    no_tool = "{% set keep = ['user', 'assistant'] %}" + turns
    with pytest.raises(TemplateError, match=r"drops the tool turn \('4' .* writes tool turns"):
        encode_chat(tok, [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "Calling."},
                          {"role": "tool", "content": "4"}, {"role": "assistant", "content": "It is 4."}], no_tool)
    with pytest.raises(TemplateError, match=r"drops the system turn \('Be brief.'"):
        encode_chat(tok, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Be brief."},
                          {"role": "assistant", "content": "OK."}], no_tool)
    # a template that writes the call's name but not its arguments drops them
    with pytest.raises(TemplateError, match=r"drops the tool calls .*the arguments of 'calculator'"):
        encode_chat(tok, [ask, call, {"role": "tool", "content": "4"}, {"role": "assistant", "content": "4"}],
                    "{% set keep = ['user', 'assistant', 'tool'] %}" + turns)
