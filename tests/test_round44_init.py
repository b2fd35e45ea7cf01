"""Fine-tuning a checkpoint from before tokenizers were saved (the shipped models hold no tokenizer.json) on a task
read from files: the vocabulary was rebuilt from the new data in another order (`+0123456789=`), so every id meant
another character than the weights learned, and the run trained and scored 0.000 without a word."""

import json
import random
import shutil
from pathlib import Path

from looplm.cli import main

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "addition-prenorm-stars"
SHAPE = ["--set=model.d_model=128", "--set=model.n_heads=4", "--set=model.d_ff=256", "--set=model.max_seq_len=32",
         "--set=model.vocab_size=16", "--set=train.steps=1", "--set=train.lr=1e-12", "--set=train.warmup_steps=0",
         "--set=train.eval_every=0", "--set=train.batch_size=4"]


def test_a_shipped_checkpoint_keeps_its_addition_ids_when_fine_tuned_on_files(tmp_path, capsys):
    src = tmp_path / "shipped"
    shutil.copytree(SHIPPED, src)
    assert not (src / "checkpoint" / "tokenizer.json").exists()  # the case: a checkpoint from before
    rng = random.Random(0)
    rows = [(rng.randrange(1000, 10000), rng.randrange(1000, 10000)) for _ in range(200)]
    (tmp_path / "add.jsonl").write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)[::-1]}) + "\n"
                                                for a, b in rows))
    assert main(["train", "--config", "jsonl-fixed", "--out", str(tmp_path / "ft"), "--no-progress",
                 f"--set=train.init_from={src}", f"--set=data.path={tmp_path / 'add.jsonl'}", *SHAPE]) == 0
    saved = json.loads((tmp_path / "ft" / "checkpoint" / "tokenizer.json").read_text())
    assert saved["chars"] == "0123456789+="  # the addition task's ids, not the data's sorted `+0123456789=`
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "ft"), "1234+5678=", "--loops", "16"]) == 0
    assert capsys.readouterr().out.strip().endswith("2196")  # the shipped model's answer (reversed 6912)
    # another task's vocabulary is refused, as for a checkpoint that holds its tokenizer
    assert main(["train", "--config", "parity-stars", "--out", str(tmp_path / "par"), "--no-progress",
                 f"--set=train.init_from={src}", *SHAPE]) == 2
    assert "was trained with another vocabulary (char '0123456789+=')" in capsys.readouterr().err
