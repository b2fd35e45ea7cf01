"""The `looplm` subcommands for pretrained looped LMs: finetune, export-hf, eval-lm.

Parsing needs nothing beyond the standard library; transformers (the `hf` extra) is imported only when one of
these commands runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

COMMANDS = ("finetune", "export-hf", "eval-lm")


def limit_arg(s: str) -> float | int:
    """lm-eval's --limit: a count (an integer >= 1) or a fraction of each task (in (0, 1))."""
    from ..cli import real_arg

    v = real_arg(True)(s)
    if v >= 1 and not v.is_integer():
        raise argparse.ArgumentTypeError(f"a count must be an integer >= 1 and a fraction in (0, 1), got {s}")
    return int(v) if v >= 1 else v


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from ..arguments import MAX_DEPTH
    from ..cli import SetAction, count_arg, real_arg

    f = sub.add_parser("finetune", help="STARS fine-tuning of a pretrained looped LM (Ouro) on chat data [hf]; "
                       "the same trainer as `looplm train`")
    f.add_argument("--config", required=True,
                   help="YAML file or preset (ouro-math-stars = looplm/presets/ouro-math-stars.yaml) whose model "
                        "section names a pretrained model (model.name_or_path)")
    f.add_argument("--set", dest="overrides", action=SetAction, default=[], metavar="SECTION.KEY=VALUE")
    f.add_argument("--out", required=True, help="run directory")
    f.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    f.add_argument("--no-progress", action="store_true")

    x = sub.add_parser("export-hf", help="write a looplm checkpoint as a transformers model directory [hf]")
    x.add_argument("checkpoint", help="looplm run directory or its checkpoint/ folder")
    x.add_argument("--out", required=True, help="output directory (loads with AutoModelForCausalLM)")
    x.add_argument("--loops", type=count_arg(1, MAX_DEPTH),
                   help="default loop count (default: the checkpoint's loops.num_loops)")

    e = sub.add_parser("eval-lm", help="lm-evaluation-harness tasks at several loop counts; table + plot [hf]")
    e.add_argument("checkpoint", help="HF model directory or hub id (Ouro, a looplm export, a finetune run or its "
                   "checkpoint/)")
    e.add_argument("--tasks", required=True, help="comma-separated lm-eval task names (e.g. gsm8k) or task YAML "
                   "files")
    e.add_argument("--depths", default="1,2,4,8", help="loop counts, e.g. 1,2,4,8 or 1:16")
    e.add_argument("--out", help="output directory (default: <checkpoint>/eval-lm, or ./eval-lm for a hub id)")
    e.add_argument("--include-path", help="folder of extra lm-eval task YAMLs (e.g. a local task); lm-eval runs "
                   "the Python its YAMLs name (!function): give only a folder you trust")
    e.add_argument("--limit", type=limit_arg, help="examples per task (lm-eval --limit: a count, or a "
                   "fraction below 1)")
    e.add_argument("--num-fewshot", type=count_arg(0))
    e.add_argument("--batch-size", type=count_arg(1), default=8)
    e.add_argument("--max-gen-toks", type=count_arg(1), help="override the tasks' generation length")
    e.add_argument("--apply-chat-template", action="store_true")
    e.add_argument("--device", default="auto")
    e.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto: bf16 on CUDA, fp32 on CPU")
    e.add_argument("--exit-threshold", type=real_arg(False), help="score Ouro's early exit with this threshold "
                   "(each row is then an exit capped at its loop count); default: every row runs exactly its loop "
                   "count, whatever the model's config.json sets")
    e.add_argument("--use-weighted-exit", action="store_true", help="score Ouro's exit-weighted average of the "
                   "loops' logits (each row up to its loop count) instead of the last loop's")
    e.add_argument("--exit-dtype", choices=["model", "float32"], help="the dtype of the exit rule (with "
                   "--exit-threshold or --use-weighted-exit; default: the config's exit_dtype, else model)")
    e.add_argument("--force", action="store_true", help="replace an existing eval_lm.json (.md, .png) in --out")


def require_hf(what: str) -> None:
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ValueError(f"`looplm {what}` needs the hf extra: pip install 'looplm[hf]'") from None


def _saved_only(path: str) -> str | None:
    """A fine-tune run whose checkpoint/ is gone, or its checkpoints/ history folder: the saved step-N folders to
    give instead (the message analyze, sweep and generate give; eval-lm said "not a Hugging Face model directory")."""
    from .. import checkpoint as ckpt
    from ..errors import no_weights

    p = Path(path)
    if p.name == ckpt.HISTORY and ckpt.history(p.parent):  # (history() of the run reads its checkpoints/)
        steps = ckpt.history(p.parent)
        return (f"{p} holds a run's saved checkpoints ({', '.join(d.name for _, d in steps[-4:])}); give one of "
                f"them (the newest: {steps[-1][1]}), or the run directory {p.parent}")
    saved = ckpt.history(p)
    return no_weights(p, ckpt.WEIGHTS, saved) if saved else None


def run(args: argparse.Namespace) -> None:
    require_hf(args.cmd)
    if args.cmd == "finetune":
        from ..config import ConfigError, load_config
        from ..train import fit

        cfg = load_config(args.config, args.overrides)
        if cfg.kind != "hf":
            raise ConfigError("model.name_or_path: `looplm finetune` starts from a pretrained HF model; this config "
                              "describes looplm's own model (train it with `looplm train`, or fine-tune a looplm run "
                              "with train.init_from)")
        from .. import rundir
        from ..errors import rank_zero

        before = rundir.latest_step(args.out)
        out = fit(cfg, args.out, resume=args.resume, progress=not args.no_progress)
        if rank_zero() and rundir.latest_step(out) != before:  # else: nothing changed
            print(f"run written to {out}")
    elif args.cmd == "export-hf":
        from ..checkpoint import enclosing_checkpoint
        from ..errors import UserError
        from .looplm_hf import check_new_model_dir, convert_checkpoint

        out = Path(args.out)
        check_new_model_dir(out)
        inside = enclosing_checkpoint(out / "config.json")
        if inside is not None:
            raise UserError(f"--out {out} is inside {inside}, which training replaces and prunes; export-hf writes a "
                            "new model directory (choose one elsewhere)")
        print(f"wrote {convert_checkpoint(args.checkpoint, out, num_loops=args.loops)}")
    elif args.cmd == "eval-lm":
        from .. import checkpoint as ckpt
        from ..errors import UserError
        from ..evaluate import parse_depths
        from ..outputs import default_out_dir, fresh_outputs
        from .analysis import config_problem, find_model_dir
        from .finetune import require_tokenizer
        from .lm_eval_depths import OUTPUTS, eval_depths
        from .paths import expand_home

        args.checkpoint = expand_home(args.checkpoint, "the model")  # as every HF path: ~ is the home folder
        model_dir = find_model_dir(args.checkpoint)  # a finetune run: its checkpoint/
        if model_dir is None and Path(args.checkpoint).exists():  # not a hub id either: say what it is
            try:
                native = ckpt.load_config(args.checkpoint).kind == "native"
            except (ckpt.CheckpointError, ValueError, OSError):
                native = False
            problem = None if native else config_problem(args.checkpoint) or _saved_only(args.checkpoint)
            raise UserError(problem or f"{args.checkpoint} is not a Hugging Face model directory"
                            + (" (a run of looplm's own model: `looplm export-hf` converts it)"
                               if native else ""))
        if model_dir is not None:
            require_tokenizer(model_dir)
        model = str(model_dir) if model_dir is not None else args.checkpoint  # else a hub id
        out = Path(args.out) if args.out else (default_out_dir(model) / "eval-lm" if model_dir else Path("eval-lm"))
        if out.suffix.lower() in (".json", ".md", ".png", ".pdf", ".svg"):  # it would be made a folder of that name
            raise UserError(f"--out {out}: eval-lm writes a folder (eval_lm.json, .md and .png); give a folder")
        fresh_outputs([out / f for f in OUTPUTS], args.force)
        res = eval_depths(model, list(dict.fromkeys(t.strip() for t in args.tasks.split(",") if t.strip())),
                          parse_depths(args.depths), out, include_path=args.include_path, limit=args.limit,
                          num_fewshot=args.num_fewshot, batch_size=args.batch_size, max_gen_toks=args.max_gen_toks,
                          apply_chat_template=args.apply_chat_template, device=args.device, dtype=args.dtype,
                          exit_threshold=args.exit_threshold, exit_dtype=args.exit_dtype, replace=args.force,
                          use_weighted_exit=args.use_weighted_exit)
        print(res["table"])
        print(f"wrote {out / 'eval_lm.json'}, {out / 'eval_lm.md'} and {out / 'eval_lm.png'}")
