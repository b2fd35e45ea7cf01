"""The HF fine-tune's memory check: a loop count no machine holds is refused before the run starts, as a native
run's is (loops.max_loops=100000 allocated until the machine's memory was gone)."""

import pytest

pytest.importorskip("transformers")

from looplm import memory  # noqa: E402
from looplm.config import Config  # noqa: E402
from looplm.errors import UserError  # noqa: E402

from .hf_fixtures import math_problems, save_tiny_base, tiny_chat_tokenizer, tiny_ouro, write_jsonl  # noqa: E402


def _config(base, data, loops, **model) -> Config:
    return Config.from_dict({"model": {"name_or_path": str(base), **model},
                             "data": {"source": str(data), "max_length": 256},
                             "loops": {"sampler": "uniform", "min_loops": loops, "max_loops": loops,
                                       "num_loops": loops},
                             "train": {"steps": 1, "batch_size": 2, "device": "cpu", "threads": 1}})


def test_a_loop_count_that_cannot_fit_is_refused_before_the_run(tmp_path, monkeypatch, capsys):
    from looplm.cli import main as cli

    tok = tiny_chat_tokenizer()
    base = save_tiny_base(tmp_path / "base", tok)
    data = write_jsonl(math_problems(4), tmp_path / "math.jsonl")
    (tmp_path / "ft.yaml").write_text(_config(base, data, 1000).to_yaml())
    monkeypatch.setattr(memory, "available_bytes", lambda: 16 * 2**20)
    capsys.readouterr()
    code = cli(["finetune", "--config", str(tmp_path / "ft.yaml"), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "not enough memory" in err and "up to 1000 loops with a graph" in err, err
    assert "lower loops.max_loops" in err and "set loops.checkpoint_loops=true" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_the_estimate_counts_the_loops_layers_and_checkpointing(tmp_path, monkeypatch):
    from looplm.hf.finetune import check_memory

    model = tiny_ouro(320)  # 2 layers of width 32
    monkeypatch.setattr(memory, "available_bytes", lambda: 16 * 2**20)
    cpu = __import__("torch").device("cpu")
    check_memory(model, _config(tmp_path, tmp_path / "d.jsonl", 4), 64, cpu)  # the default depths fit
    with pytest.raises(UserError, match=r"up to 1000 loops with a graph need at least 0\.1 GiB"):
        check_memory(model, _config(tmp_path, tmp_path / "d.jsonl", 1000), 64, cpu)
    # without per-layer checkpointing every layer keeps its activations: the same run needs far more, and the fix
    # names that setting
    with pytest.raises(UserError, match=r"need at least 0\.[3-9] GiB.*model\.gradient_checkpointing=true"):
        check_memory(model, _config(tmp_path, tmp_path / "d.jsonl", 1000, gradient_checkpointing=False), 64, cpu)
