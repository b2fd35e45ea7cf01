"""GPU readiness: one short check of looplm's CUDA paths at the paper's scale, on random weights.

    python benchmarks/gpu_check.py [--out gpu_check.json] [--smoke] [--budget 480]

Every training figure goes through `looplm.train.fit`, the trainer behind `looplm train` and `looplm finetune`.
Sections (each timed; a failure is recorded in its entry and the next section still runs):

- `addition_step`: the paper's addition configuration (d 512, 8 heads, d_ff 1024, batch 512, bf16 autocast) at a
  fixed 9 loops: ms per step and tokens/s with and without JSRR, and their ratio;
- `addition_memory`: peak CUDA memory at 10 against 100 loops with activation checkpointing per loop
  (`loops.checkpoint_loops`, the bounded-memory mode) and, for contrast, 10 loops with full backprop;
- `sweep_vs_decoding`: the one-pass sweep 1..100 against greedy decoding separately at every depth;
- `ouro_forward`: a randomly initialised model with Ouro-1.4B's published configuration, bf16: forward tokens/s
  at T = 4, and KV-cached generation tokens/s at T = 4;
- `ouro_finetune_step`: `fit` on that model saved as an HF directory, with a ChatML tokenizer and chat data of
  1024 tokens a sequence: one STARS step (JSRR, per-layer gradient checkpointing, bf16), its peak memory and time;
- `ouro_fsdp_step`: the same step with FSDP2 in one process (skipped: `fit` shards only under torchrun, where a
  world of one process is not sharded);
- `nccl_ddp`: a single-process nccl process group and one DDP step of the addition objective;
- `bf16_vs_fp32`: JSRR and CE on one batch in bf16 autocast against float32, with the tolerance stated.

Without CUDA (or with `--smoke`) every size is tiny, the CUDA-only parts are skipped with the reason, and the rest
runs on the CPU: that is the CI check. The JSON file holds one entry per section (`status`: ok | skipped | failed,
`seconds`, the figures, `error` or `reason`) plus `machine`; the table printed last summarizes it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from looplm.config import Config, load_config  # noqa: E402
from looplm.train import fit  # noqa: E402

CUDA = torch.cuda.is_available()
OURO_1_4B = dict(vocab_size=49152, hidden_size=2048, intermediate_size=5632, num_hidden_layers=24,
                 num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=65536, rope_theta=1e6,
                 rms_norm_eps=1e-6, total_ut_steps=4, tie_word_embeddings=False)
OURO_TINY = dict(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=512, rope_theta=1e4, total_ut_steps=4)


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def peak_reset() -> None:
    if CUDA:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mb() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if CUDA else None


def addition_config(smoke: bool, extra: list[str]) -> Config:
    size = (["model.d_model=32", "model.n_heads=2", "model.d_ff=64", "train.batch_size=8"] if smoke else
            ["model.d_model=512", "model.n_heads=8", "model.d_ff=1024", "train.batch_size=512"])
    items = [*size, "loops.sampler=fixed", "loops.num_loops=9", "reg.start_step=0", "reg.rho_every=0",
             "train.eval_every=0", "train.log_every=1", "train.warmup_steps=1", "train.checkpoint_every=0",
             "train.bf16=true", *extra]
    # `extra` replaces a default of the same key (load_config refuses a key given twice)
    return load_config("addition-prenorm-stars", [f"{k}={v}" for k, v in dict(i.split("=", 1) for i in items).items()])


def addition_step(a: argparse.Namespace, tmp: Path) -> dict:
    steps = 3 if a.smoke else 12
    out = {}
    for name, reg in (("none", "reg.kind=none"), ("jsrr", "reg.kind=jsrr")):
        cfg = addition_config(a.smoke, [reg, f"train.steps={steps}"])
        run = fit(cfg, tmp / f"step-{name}", progress=False)
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][2:]  # after warm-up
        out[name] = {"tok_s": round(statistics.median(r["tok_s"] for r in rows)),
                     "ms_per_step": round(1000 * statistics.median(r["step_s"] for r in rows), 1)}
    out["jsrr_over_none_time"] = round(out["none"]["tok_s"] / out["jsrr"]["tok_s"], 3)
    return out


def addition_memory(a: argparse.Namespace, tmp: Path) -> dict:
    if not CUDA:
        return {"status": "skipped", "reason": "no CUDA device: peak CUDA memory cannot be measured"}
    out = {}
    for name, loops, ck in (("checkpointed_10", 10, True), ("checkpointed_100", 100, True), ("full_10", 10, False)):
        peak_reset()
        fit(addition_config(a.smoke, [f"loops.num_loops={loops}", f"loops.checkpoint_loops={str(ck).lower()}",
                                      "train.steps=2"]), tmp / f"mem-{name}", progress=False)
        out[name + "_mb"] = peak_mb()
    out["ratio_100_over_10_checkpointed"] = round(out["checkpointed_100_mb"] / out["checkpointed_10_mb"], 3)
    return out


def sweep_vs_decoding(a: argparse.Namespace, tmp: Path) -> dict:
    from looplm import checkpoint as ckpt
    from looplm.evaluate import sweep
    from looplm.generate import generate_cached
    from looplm.tasks import make_task

    run = fit(addition_config(a.smoke, ["train.steps=1"]), tmp / "sweep-run", progress=False)
    model, cfg = ckpt.load_model(run, "cuda" if CUDA else "cpu")
    task = make_task(cfg)
    n, L = (16, 12) if a.smoke else (256, 100)
    batch = task.held_out(n)
    sync()
    t0 = time.perf_counter()
    sweep(model, batch, list(range(1, L + 1)), batch_size=n)
    sync()
    one = time.perf_counter() - t0
    prompts = [batch.input_ids[i, : int((batch.targets[i] != -100).int().argmax()) + 1].tolist() for i in range(n)]
    depths = list(range(1, L + 1, 1 if a.smoke else 9))  # every 9th depth, extrapolated to all L
    t0 = time.perf_counter()
    for d in depths:
        generate_cached(model, prompts, d, 6, task.eos_id)
    sync()
    per = (time.perf_counter() - t0) * L / len(depths)
    return {"problems": n, "max_depth": L, "one_pass_s": round(one, 3), "per_depth_decoding_s": round(per, 3),
            "per_depth_sampled_depths": len(depths), "ratio": round(per / one, 1)}


def ouro_model(smoke: bool, dtype: torch.dtype) -> torch.nn.Module:
    from looplm.hf.configuration_ouro import OuroConfig
    from looplm.hf.modeling_ouro import OuroForCausalLM

    torch.manual_seed(0)
    with torch.device("cuda" if CUDA else "cpu"):
        return OuroForCausalLM(OuroConfig(**(OURO_TINY if smoke else OURO_1_4B))).to(dtype).eval()


def ouro_forward(a: argparse.Namespace, tmp: Path) -> dict:
    dev = "cuda" if CUDA else "cpu"
    dtype = torch.bfloat16 if CUDA else torch.float32
    model = ouro_model(a.smoke, dtype)
    B, T, new = (2, 64, 8) if a.smoke else (8, 1024, 128)
    ids = torch.randint(3, model.config.vocab_size, (B, T), device=dev)
    with torch.inference_mode():
        model(ids, num_loops=4, use_cache=False)  # warm-up
        sync()
        t0 = time.perf_counter()
        for _ in range(3):
            model(ids, num_loops=4, use_cache=False)
        sync()
        fwd = 3 * B * T / (time.perf_counter() - t0)
        model.generation_config.eos_token_id = None
        sync()
        t0 = time.perf_counter()
        out = model.generate(ids[:, :128], max_new_tokens=new, min_new_tokens=new, do_sample=False, num_loops=4)
        sync()
        gen = B * (out.shape[1] - min(T, 128)) / (time.perf_counter() - t0)
    return {"dtype": str(dtype), "batch": B, "seq": T, "forward_tok_s_T4": round(fwd), "generate_new_tokens": new,
            "generate_tok_s_T4": round(gen, 1), "params": sum(p.numel() for p in model.parameters())}


def _finetune_dir(a: argparse.Namespace, tmp: Path) -> tuple[Path, Path]:
    """A random Ouro-architecture model saved as an HF directory with a ChatML tokenizer, and chat data whose
    sequences fill the context."""
    from looplm.hf.tokenizer import train_chat_tokenizer

    words = "the a of and to in is what how many if each has total left answer step first then".split()
    texts = [" ".join(words[(i * 7 + j) % len(words)] for j in range(40)) + f" {i} + {i * 3} = {i * 4}"
             for i in range(200)]
    tok = train_chat_tokenizer(texts, 400)
    model = ouro_model(a.smoke, torch.float32)
    d = tmp / "ouro-random"
    model.save_pretrained(d)
    tok.save_pretrained(d)
    del model
    n_words = 40 if a.smoke else 900  # about 1024 tokens a sequence with this tokenizer
    data = tmp / "chat.jsonl"
    with data.open("w") as f:
        for i in range(8):
            body = " ".join(words[(i + j) % len(words)] for j in range(n_words))
            f.write(json.dumps({"messages": [{"role": "user", "content": f"question {i}: {body[:200]}"},
                                             {"role": "assistant", "content": body}]}) + "\n")
    return d, data


def ouro_finetune_step(a: argparse.Namespace, tmp: Path) -> dict:
    model_dir, data = _finetune_dir(a, tmp)
    max_len = 128 if a.smoke else 1024
    cfg = Config.from_dict({
        "model": {"name_or_path": str(model_dir), "gradient_checkpointing": True},
        "data": {"source": str(data), "max_length": max_len, "overlong": "truncate"},
        "loops": {"sampler": "fixed", "num_loops": 4}, "reg": {"kind": "jsrr", "rho_every": 0},
        "train": {"steps": 2, "batch_size": 1, "lr": 1e-6, "log_every": 1, "checkpoint_every": 0, "bf16": True}})
    peak_reset()
    t0 = time.perf_counter()
    run = fit(cfg, tmp / "ouro-ft", progress=False)
    wall = time.perf_counter() - t0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {"seq_len": max_len, "loops": 4, "reg": rows[-1]["reg"], "ce": rows[-1]["ce"],
            "step2_s": round(rows[-1]["step_s"], 2), "step2_tok_s": round(rows[-1]["tok_s"], 1),
            "peak_cuda_mb": peak_mb(), "fit_wall_s_incl_load_and_save": round(wall, 1)}


def ouro_fsdp_step(a: argparse.Namespace, tmp: Path) -> dict:
    return {"status": "skipped", "reason": "fit shards with FSDP2 only under torchrun with 2+ processes; a world "
                                           "of one process trains unsharded (this machine has one GPU)"}


def nccl_ddp(a: argparse.Namespace, tmp: Path) -> dict:
    if not CUDA:
        return {"status": "skipped", "reason": "no CUDA device: nccl needs one"}
    import socket

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from looplm.model import LoopedTransformer
    from looplm.objective import Objective
    from looplm.tasks import make_task

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        init_s = time.perf_counter() - t0
        cfg = addition_config(a.smoke, [])
        model = LoopedTransformer(cfg.model).cuda()
        ddp = DistributedDataParallel(Objective(model, cfg.loops, cfg.reg), device_ids=[0])
        batch = make_task(cfg).train_batch(cfg.train.batch_size, torch.Generator().manual_seed(0)).to("cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            ce, pen = ddp(batch.input_ids, batch.targets, batch.mask, 9, 9, torch.Generator().manual_seed(1))
            loss = 0.9 * ce / (batch.targets != -100).sum() + 0.1 * pen
        loss.backward()
        sync()
        grad_ok = all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters()
                      if p.requires_grad)
        return {"init_s": round(init_s, 2), "loss": float(loss), "grads_finite": bool(grad_ok)}
    finally:
        dist.destroy_process_group()


def bf16_vs_fp32(a: argparse.Namespace, tmp: Path) -> dict:
    from looplm.model import LoopedTransformer
    from looplm.objective import Objective
    from looplm.tasks import make_task

    dev = "cuda" if CUDA else "cpu"
    cfg = addition_config(a.smoke, [])
    torch.manual_seed(0)
    model = LoopedTransformer(cfg.model).to(dev)
    obj = Objective(model, cfg.loops, cfg.reg)
    batch = make_task(cfg).train_batch(min(cfg.train.batch_size, 128), torch.Generator().manual_seed(0)).to(dev)
    n_tok = int((batch.targets != -100).sum())
    vals = {}
    for name, ctx in (("fp32", torch.autocast(dev, enabled=False)),
                      ("bf16", torch.autocast(dev, dtype=torch.bfloat16))):
        with ctx:
            ce, pen = obj(batch.input_ids, batch.targets, batch.mask, 9, 9, torch.Generator().manual_seed(1))
        vals[name] = {"ce": float(ce.detach()) / n_tok, "jsrr": float(pen.detach())}
    tol = {"ce": 0.02, "jsrr": 0.05}  # relative; bf16 keeps 8 bits of mantissa
    rel = {k: abs(vals["bf16"][k] - vals["fp32"][k]) / max(abs(vals["fp32"][k]), 1e-12) for k in tol}
    return {**vals, "relative_difference": {k: round(v, 5) for k, v in rel.items()}, "tolerance": tol,
            "within_tolerance": all(rel[k] <= tol[k] for k in tol), "device": dev}


SECTIONS: list[tuple[str, Callable]] = [
    ("addition_step", addition_step), ("addition_memory", addition_memory), ("sweep_vs_decoding", sweep_vs_decoding),
    ("ouro_forward", ouro_forward), ("ouro_finetune_step", ouro_finetune_step), ("ouro_fsdp_step", ouro_fsdp_step),
    ("nccl_ddp", nccl_ddp), ("bf16_vs_fp32", bf16_vs_fp32)]


def machine() -> dict:
    m = {"torch": torch.__version__, "python": platform.python_version(), "cuda": CUDA,
         "cpu_count": os.cpu_count()}
    if CUDA:
        p = torch.cuda.get_device_properties(0)
        m.update(gpu=p.name, gpu_memory_gb=round(p.total_memory / 2**30, 1), cuda_version=torch.version.cuda,
                 bf16_supported=torch.cuda.is_bf16_supported())
    return m


def table(res: dict) -> str:
    lines = [f"{'section':22s} {'status':8s} {'s':>7s}  figures"]
    for name, _ in SECTIONS:
        r = res[name]
        figs = {k: v for k, v in r.items() if k not in ("status", "seconds", "error", "reason")}
        text = r.get("reason") or r.get("error") or json.dumps(figs)[:150]
        lines.append(f"{name:22s} {r['status']:8s} {r['seconds']:7.1f}  {text}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="gpu_check.json")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (implied without CUDA)")
    p.add_argument("--budget", type=float, default=480.0, help="seconds; sections not started by then are skipped")
    a = p.parse_args()
    a.smoke = a.smoke or not CUDA
    torch.set_num_threads(min(4, os.cpu_count() or 1))
    res: dict = {"machine": machine(), "smoke": a.smoke}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        for name, fn in SECTIONS:
            t0 = time.perf_counter()
            if t0 - t_start > a.budget:
                res[name] = {"status": "skipped", "reason": f"time budget of {a.budget:.0f} s spent", "seconds": 0.0}
                continue
            try:
                r = fn(a, Path(d) / name)
                r = {"status": r.pop("status", "ok"), **r}
            except Exception as e:  # recorded, and the next section runs
                r = {"status": "failed", "error": f"{type(e).__name__}: {e}".splitlines()[0][:300],
                     "traceback": traceback.format_exc()[-2000:]}
            r["seconds"] = round(time.perf_counter() - t0, 1)
            res[name] = r
            print(f"{name}: {r['status']} ({r['seconds']} s)", file=sys.stderr, flush=True)
    res["total_seconds"] = round(time.perf_counter() - t_start, 1)
    Path(a.out).write_text(json.dumps(res, indent=1, default=lambda x: None if isinstance(x, float) and
                                      not math.isfinite(x) else str(x)) + "\n")
    print(table(res))
    print(f"wrote {a.out} ({res['total_seconds']} s)")
    return 0 if all(res[n]["status"] != "failed" for n, _ in SECTIONS) else 1


if __name__ == "__main__":
    raise SystemExit(main())
