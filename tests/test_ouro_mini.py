"""The ouro-mini study end to end at a tiny size: base from scratch, three fine-tunes, lm-eval by loop count,
dynamics, report; resuming; the settings check; and the verdict rules on hand-made scores."""

import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("lm_eval")

from looplm.errors import UserError  # noqa: E402
from looplm.experiments import ouro_mini  # noqa: E402

TINY = ouro_mini.Settings(n_train=200, n_test=12, vocab_size=300, hidden_size=32, intermediate_size=64,
                          num_attention_heads=4, num_key_value_heads=2, batch_size=8, micro_batch_size=4,
                          base_steps=4, ft_steps=3, seeds=(0,), depths=(4, 8, 16), eval_n=3, max_gen_toks=8,
                          analyze_n=2, analyze_depth=4)


def test_study_runs_every_stage_resumes_and_refuses_other_settings(tmp_path):
    out = tmp_path / "study"
    report = ouro_mini.study(out, progress=False, threads=1, settings=TINY)
    text = report.read_text()
    for part in ("## Exact match (%) by loop count", "| T=4 | T=8 | T=16 |", "STARS cuts the 4→8 drop",
                 "STARS raises peak accuracy", "The base model (trained at a fixed 4 loops) degrades",
                 "figures/accuracy.png", "figures/dynamics.png", "| ft_steps | 3 |"):
        assert part in text
    runs = out / "runs"
    cfgs = {n: json.loads((runs / n / "checkpoint" / "looplm_config.json").read_text())
            for n in ("base", "sft-s0", "random-s0", "stars-s0")}
    # The base trains from the random init at a fixed 4 loops; every fine-tune starts from the base's weights.
    assert cfgs["base"]["model"]["name_or_path"] == str(out / "init")
    assert cfgs["base"]["loops"]["sampler"] == "fixed" and cfgs["base"]["train"]["steps"] == 4
    for n in ("sft-s0", "random-s0", "stars-s0"):
        assert cfgs[n]["model"]["name_or_path"] == str(runs / "base" / "checkpoint")
        assert cfgs[n]["train"]["steps"] == 3 and cfgs[n]["data"] == cfgs["base"]["data"]
    assert cfgs["sft-s0"]["loops"]["sampler"] == "fixed" and cfgs["sft-s0"]["reg"]["kind"] == "none"
    assert (cfgs["random-s0"]["loops"]["mu"], cfgs["random-s0"]["loops"]["max_loops"]) == (1.7, 16)
    assert cfgs["random-s0"]["reg"]["kind"] == "none"
    assert cfgs["stars-s0"]["loops"] == cfgs["random-s0"]["loops"]
    assert (cfgs["stars-s0"]["reg"]["kind"], cfgs["stars-s0"]["reg"]["weight"]) == ("jsrr", 0.1)
    for n in cfgs:
        ev = json.loads((runs / n / "eval" / "eval_lm.json").read_text())
        assert [r["loops"] for r in ev["rows"]] == [4, 8, 16] and ev["limit"] == 3
        acc = ouro_mini.accuracy(ev)
        assert all(0.0 <= a <= 1.0 for a in acc.values())
        assert f"| {n} | " + " | ".join(f"{100 * acc[d]:.1f}" for d in (4, 8, 16)) + " |" in text
        dyn = json.loads((runs / n / "dynamics.json").read_text())
        assert dyn["depths"] == [1, 2, 3, 4] and dyn["n"] == 2
    # Held-out problems never appear in the training file.
    train_q = {json.loads(x)["question"] for x in (out / "data" / "train.jsonl").read_text().splitlines()}
    test_q = [json.loads(x)["question"] for x in (out / "data" / "test.jsonl").read_text().splitlines()]
    assert len(test_q) == 12 and not train_q & set(test_q)
    # A second call trains and evaluates nothing again.
    stamps = {f: f.stat().st_mtime_ns for f in runs.glob("*/train.json")} | \
             {f: f.stat().st_mtime_ns for f in runs.glob("*/eval/eval_lm.json")}
    ouro_mini.study(out, progress=False, threads=1, settings=TINY)
    assert {f: f.stat().st_mtime_ns for f in stamps} == stamps
    # Other settings in the same directory are refused, naming the key, before anything is written.
    before = (out / "settings.json").read_text()
    with pytest.raises(UserError, match=r"ft_steps: 3 -> 5"):
        ouro_mini.study(out, progress=False, settings=ouro_mini.dataclasses.replace(TINY, ft_steps=5))
    assert (out / "settings.json").read_text() == before
    # The trained base, shipped: reusable by a study with the same data and base settings, refused by another.
    shipped = ouro_mini.ship_base(out, tmp_path / "shipped")
    assert (shipped / "model.safetensors").exists() and not (shipped / "trainer_state.pt").exists()
    check = json.loads((shipped / "check.json").read_text())
    assert check["depths"] == [4, 8] and check["n"] == ouro_mini.CHECK_N and len(check["exact_match"]) == 2
    assert ouro_mini.use_base(tmp_path / "new", ouro_mini.dataclasses.replace(TINY, ft_steps=9), shipped) == shipped
    with pytest.raises(UserError, match="hidden_size: 32 vs 48"):
        ouro_mini.use_base(tmp_path / "new", ouro_mini.dataclasses.replace(TINY, hidden_size=48), shipped)


def _scores(at4: float, at8: float, peak: float = 0.0) -> dict[int, float]:
    return {1: 0.1, 2: 0.2, 3: 0.3, 4: at4, 6: max(peak, at8), 8: at8, 12: at8, 16: at8}


def test_verdicts_follow_their_rules_seed_by_seed():
    base = _scores(0.6, 0.3)
    acc = {"base": base}
    for s, (sft8, stars8) in enumerate(((0.40, 0.55), (0.45, 0.58))):
        acc[f"sft-s{s}"] = _scores(0.70, sft8)
        acc[f"random-s{s}"] = _scores(0.68, 0.50)
        acc[f"stars-s{s}"] = _scores(0.72, stars8, peak=0.75)
    rows = {r[0].split(" (")[0]: r for r in ouro_mini.verdicts(acc, (0, 1))}
    assert rows["The base model"][2] == "yes" and "drop 4→8: 30.0 points" in rows["The base model"][1]
    drop = rows["STARS cuts the 4→8 drop relative to SFT"]
    assert drop[2] == "agrees" and "SFT 27.5 ± 3.5" in drop[1] and "STARS 15.5 ± 2.1" in drop[1]
    assert rows["STARS raises peak accuracy over SFT"][2] == "agrees"
    # One seed the other way round: no verdict either way.
    acc["stars-s1"] = _scores(0.72, 0.20)
    acc["stars-s0"] = _scores(0.60, 0.55)
    rows = {r[0].split(" (")[0]: r for r in ouro_mini.verdicts(acc, (0, 1))}
    assert rows["STARS cuts the 4→8 drop relative to SFT"][2].startswith("inconclusive")
    assert rows["STARS raises peak accuracy over SFT"][2].startswith("inconclusive")
