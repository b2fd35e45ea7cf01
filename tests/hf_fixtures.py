"""Tiny local stand-ins for the tests: a byte-level BPE chat tokenizer, a tiny Ouro model, GSM8K-style math
data and lm-eval task files. Nothing here touches the network."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from looplm.hf.chat import CHATML_TEMPLATE

_WORDS = ("the a of and to in is what how many if each has more than less total left altogether answer "
          "apples books students dollars pages minutes boxes cars eggs cookies marbles bought sold gave "
          "Tom Ann Sam Mia has had buys spends earns reads half twice times per day week so therefore "
          "question solution step first then finally compute add subtract multiply divide equals").split()


def math_problems(n: int, seed: int = 0) -> list[dict[str, str]]:
    """n GSM8K-style word problems with worked solutions ending in '#### <answer>' (two-step arithmetic)."""
    rng = random.Random(seed)
    names, items = ["Tom", "Ann", "Sam", "Mia"], ["apples", "books", "eggs", "marbles", "cookies"]
    out = []
    for _ in range(n):
        a, b, c = rng.randint(2, 40), rng.randint(2, 40), rng.randint(2, 9)
        who, what = rng.choice(names), rng.choice(items)
        total = (a + b) * c
        q = f"{who} has {a} {what} and buys {b} more. Each day {who} doubles nothing but has {c} boxes of that " \
            f"many. How many {what} in total?"
        s = f"First, {a} + {b} = {a + b}. Then {a + b} * {c} = {total}.\n#### {total}"
        out.append({"question": q, "answer": s, "problem": q, "solution": s, "target": str(total)})
    return out


def write_jsonl(rows: list[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_chat_tokenizer(vocab_size: int = 320, chat_template: str = CHATML_TEMPLATE):
    """A byte-level BPE tokenizer trained on a few hundred words of math text, with ChatML special tokens."""
    from looplm.hf.tokenizer import train_chat_tokenizer

    corpus = [" ".join(random.Random(i).choices(_WORDS, k=12)) + f" {i} {i * 7} = #### {i % 97}."
              for i in range(300)]
    corpus += [p["solution"] + " " + p["problem"] for p in math_problems(50)]
    return train_chat_tokenizer(corpus, vocab_size, chat_template)


def tiny_ouro(vocab_size: int, seed: int = 0, **kw: Any):
    """A randomly initialized tiny Ouro-architecture model (2 layers of width 32, 4 loops by default)."""
    import torch

    from looplm.hf.configuration_ouro import OuroConfig
    from looplm.hf.modeling_ouro import OuroForCausalLM

    base = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, total_ut_steps=4,
                rope_theta=10000.0, pad_token_id=0, bos_token_id=0, eos_token_id=0)
    base.update(kw)
    torch.manual_seed(seed)
    return OuroForCausalLM(OuroConfig(**base))


_GEN_TASK = """task: {name}_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
process_results: !function {module}.process_results
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
generation_kwargs:
  until: ["Question:", "<|im_end|>"]
  do_sample: false
  max_gen_toks: {max_gen_toks}
num_fewshot: 0
metadata:
  version: 1.0
"""

_MC_TASK = """task: {name}_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{[' ' + target, ' ' + ((target | int) + 1) | string, ' ' + ((target | int) - 1) | string]}}}}"
doc_to_target: 0
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
num_fewshot: 0
metadata:
  version: 1.0
"""

_UTILS = '''"""Scoring for the local GSM8K-style task: looplm's answer extractor on the completion and the gold."""
from looplm.hf.answers import extract_answer, gold_answer, is_correct


def process_results(doc, results):
    return {"exact_match": float(is_correct(extract_answer(results[0]), gold_answer(doc["answer"])))}
'''


def write_lm_eval_tasks(folder: str | Path, data: str | Path, name: str = "tiny_math", max_gen_toks: int = 16
                        ) -> list[str]:
    """Write two lm-eval tasks over a local JSONL of `math_problems` rows into `folder` (pass it as
    `include_path`): `<name>_gen` (greedy generation scored by `looplm.hf.answers`) and `<name>_mc` (a
    3-way multiple choice scored by log-likelihood). Returns the task names."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    module = f"{name}_utils"
    data = Path(data).resolve()
    (folder / f"{name}_gen.yaml").write_text(_GEN_TASK.format(name=name, data=data, module=module,
                                                               max_gen_toks=max_gen_toks))
    (folder / f"{name}_mc.yaml").write_text(_MC_TASK.format(name=name, data=data))
    (folder / f"{module}.py").write_text(_UTILS)
    return [f"{name}_gen", f"{name}_mc"]


def save_tiny_base(folder: str | Path, tokenizer: Any, seed: int = 0, **kw: Any) -> Path:
    """A tiny Ouro-architecture model and its tokenizer saved as one HF model directory (a local "hub" model)."""
    folder = Path(folder)
    tiny_ouro(len(tokenizer), seed, **kw).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def name_templates(folder: str | Path, names: tuple[str, ...] = ("rag", "tool_use")) -> str:
    """A model directory's chat template made into named ones (tokenizer_config.json's list), none called default,
    as some hub tokenizers ship; returns the template."""
    folder = Path(folder)
    text = (folder / "chat_template.jinja").read_text()
    (folder / "chat_template.jinja").unlink()
    conf = json.loads((folder / "tokenizer_config.json").read_text())
    conf["chat_template"] = [{"name": n, "template": text} for n in names]
    (folder / "tokenizer_config.json").write_text(json.dumps(conf))
    return text
