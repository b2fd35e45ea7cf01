"""lm-eval at any loop count (looplm.hf.lm_eval_adapter) on a tiny Ouro model and local tasks."""

import functools

import pytest

pytest.importorskip("transformers")
pytest.importorskip("lm_eval")
pytest.importorskip("accelerate")

import lm_eval  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from looplm.cli import main as cli  # noqa: E402
from looplm.hf.lm_eval_adapter import LoopedLM  # noqa: E402

from .hf_fixtures import (  # noqa: E402
    math_problems,
    tiny_chat_tokenizer,
    tiny_ouro,
    write_jsonl,
    write_lm_eval_tasks,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("lmeval")
    tok = tiny_chat_tokenizer()
    tiny_ouro(len(tok), max_position_embeddings=256).save_pretrained(d / "model")
    tok.save_pretrained(d / "model")
    tasks = write_lm_eval_tasks(d / "tasks", write_jsonl(math_problems(5), d / "math.jsonl"), max_gen_toks=6)
    return d, tasks


def test_num_loops_reaches_every_forward_and_generate_call(setup):
    d, (gen_task, mc_task) = setup
    lm = LoopedLM(pretrained=str(d / "model"), num_loops=3, device="cpu", dtype="float32", batch_size=2)
    seen = []
    fwd = lm.model.forward

    @functools.wraps(fwd)  # generate() checks its kwargs against forward's signature
    def spy(*a, **k):
        seen.append(k.get("num_loops"))
        return fwd(*a, **k)

    lm.model.forward = spy
    tm = TaskManager(include_path=str(d / "tasks"), include_defaults=False)
    res = lm_eval.simple_evaluate(model=lm, tasks=[gen_task, mc_task], limit=2, task_manager=tm, log_samples=False,
                                  bootstrap_iters=0)
    assert seen and set(seen) == {3}  # log-likelihood calls and every generate() step
    assert 0.0 <= res["results"][mc_task]["acc,none"] <= 1.0
    assert 0.0 <= res["results"][gen_task]["exact_match,none"] <= 1.0
    # Loop count changes the scores the harness sees: log-likelihoods at 1 and 4 loops differ.
    req = [("Question: 2+2?\nAnswer:", " 4")]
    lm.model.forward = fwd
    lls = []
    for n in (1, 4):
        lm.num_loops = n
        lls.append(lm.loglikelihood([type("R", (), {"args": r})() for r in req])[0][0])
    assert lls[0] != pytest.approx(lls[1])


def test_registered_name_and_model_args_and_the_eval_lm_command(setup, tmp_path, capsys):
    d, (_, mc_task) = setup
    tm = TaskManager(include_path=str(d / "tasks"), include_defaults=False)
    res = lm_eval.simple_evaluate(model="looplm", model_args=f"pretrained={d / 'model'},num_loops=2,device=cpu,"
                                  "dtype=float32", tasks=[mc_task], limit=2, task_manager=tm, log_samples=False,
                                  bootstrap_iters=0)
    assert "acc,none" in res["results"][mc_task]
    capsys.readouterr()
    assert cli(["eval-lm", str(d / "model"), "--tasks", mc_task, "--depths", "1,3", "--include-path",
                str(d / "tasks"), "--limit", "2", "--device", "cpu", "--out", str(tmp_path / "cli")]) == 0
    assert "| 3 |" in capsys.readouterr().out
    assert (tmp_path / "cli" / "eval_lm.md").is_file()
    assert cli(["eval-lm", str(d / "model"), "--tasks", mc_task, "--depths", "0"]) == 2
