"""lm-eval at each loop count (`looplm eval-lm`): `eval_depths` loads the model once, runs lm-eval's tasks at
every depth and writes `eval_lm.json`, `eval_lm.md` (a depth x metric table) and `eval_lm.png`, whole or not at
all. Its arguments are checked as the command line checks them, and a task's own faults (a data file that
cannot be read, a YAML whose requests cannot be built) are said in one line that names the task."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import jinja2
import torch
import yaml
from datasets.exceptions import DatasetGenerationError

from ..checkpoint import RUN_CONFIG, loaded_at_step, write_result
from ..errors import UserError, emptiness
from ..outputs import all_or_nothing
from ..rundir import flag
from .analysis import run_system_prompt
from .chat import no_default_template
from .flags import check_flag
from .lm_eval_adapter import (
    CONTINUATION,
    GEN_BUDGET,
    NO_CHAT_TEMPLATE,
    UNENCODABLE,
    LoopedLM,
    task_error,
)
from .mathdata import check_task_golds
from .paths import expand_home, refuse_missing

OUTPUTS = ("eval_lm.json", "eval_lm.md", "eval_lm.png")  # what eval_depths writes in its folder


def _metrics(task_results: dict[str, Any]) -> dict[str, float]:
    """lm-eval's "metric,filter" entries (not their stderr, alias or sample counts)."""
    return {k: float(v) for k, v in task_results.items()
            if "," in k and "_stderr" not in k and isinstance(v, (int, float))}


def depth_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per loop count, one column per task/metric."""
    cols = sorted({f"{t}: {m}" for r in rows for t, ms in r["metrics"].items() for m in ms})
    lines = ["| loops | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r in rows:
        vals = []
        for c in cols:
            t, m = c.split(": ", 1)
            v = r["metrics"].get(t, {}).get(m)
            vals.append("" if v is None else f"{v:.4f}")
        lines.append(f"| {r['loops']} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def plot_depths(rows: list[dict[str, Any]], path: str | Path, title: str = "", replace: bool = True) -> Path:
    """Each task/metric against the loop count (looplm.plots.plot_accuracy, on the lm-eval scores)."""
    from ..plots import plot_accuracy

    replace = check_flag("replace", replace)  # ("no" is a true value: it drew over an existing figure)
    depths = [r["loops"] for r in rows]
    series = sorted({(t, m) for r in rows for t, ms in r["metrics"].items() for m in ms})
    curves = [{"depths": depths, "label": f"{t} {m}",
               "accuracy": [r["metrics"].get(t, {}).get(m, float("nan")) for r in rows]} for t, m in series]
    # The axis is a percentage: a metric that is no fraction (perplexity, BLEU on 0-100) would fall off it. Those
    # are in the table only, and the figure says which.
    frac = [c for c in curves if all(0 <= a <= 1 for a in c["accuracy"] if a == a)]
    other = [c["label"] for c in curves if c not in frac]
    title = (title or "lm-eval at each loop count") + (f" (not drawn, not fractions: {', '.join(other)})"
                                                       if other else "")
    return plot_accuracy(frac, path, title, ylabel="score (%)", replace=replace, shading_note=False)


@contextlib.contextmanager
def _no_env_info():
    """lm-eval collects a system report (seconds of subprocesses) and the working directory's git hash (`git
    describe`, whose `fatal: not a git repository` lands on stderr outside a checkout) on every call; the sweep
    uses neither."""
    import lm_eval.evaluator as ev

    saved = {k: getattr(ev, k) for k in ("add_env_info", "get_git_commit_hash") if hasattr(ev, k)}
    for k in saved:
        setattr(ev, k, lambda *a, **kw: None)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(ev, k, v)


def _check_eval_args(tasks: Any, depths: Any, limit: Any, num_fewshot: Any, batch_size: Any, max_gen_toks: Any,
                     apply_chat_template: Any, model_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """eval_depths' arguments, as the command line checks them (ValueError naming the argument): distinct task
    names (a string would be read letter by letter), increasing distinct depths >= 1, a --limit that is a count
    >= 1 or a fraction in (0, 1), counts that are integers (never bools), a bool for apply_chat_template. Returns
    them as lm-eval and JSON take them: a list of tasks, plain ints (a numpy integer is no JSON number)."""
    from ..arguments import check_count, check_depths

    if isinstance(tasks, (list, tuple)) and not any(isinstance(t, str) and t.strip() for t in tasks):
        raise ValueError(f"{_flag('tasks')} names no task; give one or more lm-eval task names (e.g. gsm8k"
                         f"{', comma-separated' if _flag('tasks') == '--tasks' else ''})")
    if isinstance(tasks, str) or not isinstance(tasks, (list, tuple)) or not tasks or not all(
            isinstance(t, str) and t.strip() for t in tasks) or len(set(tasks)) < len(tasks):
        raise ValueError(f"tasks must be a list of distinct lm-eval task names, got {tasks!r:.80}")
    out: dict[str, Any] = {"tasks": list(tasks), "depths": check_depths(depths, "evaluate")}

    if limit is None or (isinstance(limit, float) and 0 < limit < 1):
        out["limit"] = limit
    else:
        try:
            out["limit"] = check_count("limit", limit, 1)
        except ValueError:
            raise ValueError(f"limit must be a count >= 1 or a fraction in (0, 1), got {limit!r:.80}") from None
    for name, v, lo in (("num_fewshot", num_fewshot, 0), ("batch_size", batch_size, 1),
                        ("max_gen_toks", max_gen_toks, 1)):
        out[name] = v if v is None else check_count(name, v, lo)  # plain ints: a numpy integer is no JSON number
    check_flag("apply_chat_template", apply_chat_template)  # ("false" is a true value)
    own = {"pretrained": "pretrained", "num_loops": "depths", "device": "device", "dtype": "dtype",
           "batch_size": "batch_size", "exit_threshold": "exit_threshold", "exit_dtype": "exit_dtype",
           "use_weighted_exit": "use_weighted_exit"}
    clash = sorted(set(model_kwargs or {}) & set(own))
    if clash:  # passed beside eval_depths' own: a TypeError ("multiple values") deep in the load
        raise ValueError(f"model_kwargs {', '.join(clash)}: eval_depths sets it itself; give "
                         f"{', '.join(own[k] + '=' for k in clash)} instead")
    return out


def _flag(name: str) -> str:
    """An argument as the caller gave it: `--tasks` in `looplm eval-lm`, `tasks` from Python (eval_depths)."""
    return flag("--" + name.replace("_", "-"), name)


def _folders(include_path: Any) -> list[str]:
    """--include-path as a list of folders: one, or several as lm-eval's TaskManager takes them."""
    many = include_path if isinstance(include_path, (list, tuple)) else [include_path]
    blank = next((f for f in many if isinstance(f, str) and not f.strip()), None)
    if blank is not None:  # ("" was taken as no folder at all: "a local task needs --include-path")
        raise UserError(f"{_flag('include_path')} is {emptiness(blank)}; give the folder of the task YAMLs, or "
                        "leave it out")
    if not many or not all(isinstance(f, (str, Path)) for f in many):
        raise ValueError(f"include_path must be a folder or a list of folders, got {include_path!r:.80}")
    return [str(f) for f in many]


def _task_files(tasks: list[str]) -> tuple[list[str], list[str]]:
    """Tasks given as YAML files (as lm-eval's command line takes them): the task each names, and its folder, read
    as an include folder (its `include:`d YAMLs and !function files sit there). Was "unknown lm-eval task". Two
    files that name one task are refused: lm-eval's index kept the last, and scored it alone without a word."""
    from lm_eval.tasks._yaml_loader import load_yaml

    names, folders, files = [], [], {}
    for t in tasks:
        if not t.lower().endswith((".yaml", ".yml")):
            names.append(t)
            continue
        f = Path(expand_home(t, _flag("tasks")))
        if not f.is_file():
            raise UserError(f"{_flag('tasks')} {t}: no such task file; give a task YAML that exists, or a task name")
        try:
            cfg = load_yaml(f, resolve_func=False)
        except (OSError, ValueError, yaml.YAMLError) as e:
            raise UserError(f"{_flag('tasks')} {t} cannot be read as an lm-eval task YAML ({str(e)[:120]})") from None
        name = cfg.get("task") if isinstance(cfg.get("task"), str) else cfg.get("group")
        if not isinstance(name, str) or not name.strip():
            raise UserError(f"{_flag('tasks')} {t} names no task (no `task:` name, nor a `group:` of tasks)")
        if files.setdefault(name, (t, f.resolve()))[1] != f.resolve():  # lm-eval scored the last one alone
            raise UserError(f"{_flag('tasks')} {files[name][0]} and {t} both name the task {name}: lm-eval would "
                            "score one of them only; give one file per task (rename the other's `task:`)")
        names.append(name)
        folders += [] if str(f.parent) in folders else [str(f.parent)]
    return list(dict.fromkeys(names)), folders


def _unknown_hint(unknown: list[str], folders: list[str], local: Any) -> str:
    """Where to look for a task no one knows: lm-eval's list, or, when --include-path was given (its advice was
    to give it), what the folders hold, the closest names first."""
    if local is None:
        return f"lm-eval lists its tasks with `lm-eval ls tasks`; a local task needs {_flag('include_path')}"
    import difflib

    held = sorted(local.all_tasks)
    near = [n for t in unknown for n in difflib.get_close_matches(t, held, n=3)]
    shown = near or held[:8]
    what = (f"did you mean {', '.join(dict.fromkeys(near))}?" if near else
            f"it holds {', '.join(shown)}{', ...' if len(held) > 8 else ''}" if held else "it holds no task YAMLs")
    return f"not among lm-eval's tasks nor in {_flag('include_path')} {', '.join(folders)}: {what}"


def eval_depths(pretrained: str, tasks: list[str], depths: list[int], out: str | Path,
                include_path: str | list[str] | None = None, limit: float | None = None, num_fewshot: int | None = None,
                batch_size: int = 8, max_gen_toks: int | None = None, apply_chat_template: bool = False,
                device: str = "auto", dtype: str = "auto", model_kwargs: dict[str, Any] | None = None,
                exit_threshold: float | None = None, exit_dtype: str | None = None,
                replace: bool = True, use_weighted_exit: bool = False) -> dict[str, Any]:
    """Evaluate `tasks` at every loop count in `depths` with one loaded model; write json, markdown, png (each
    whole or not at all; without `replace`, never over a file that appeared meanwhile). Each row runs exactly
    its loop count unless `exit_threshold` asks for Ouro's early exit (in `exit_dtype`): a config's
    early_exit_threshold is not applied, since in low precision (or with saturated gates) the exit rule ends
    tokens before the last loop even at 1.0, and the deep rows would all be the same early exit.
    `use_weighted_exit` scores Ouro's exit-weighted average of the loops' logits (up to each row's count) instead.
    A task may be a YAML file (its folder is then read as an include_path)."""
    replace = check_flag("replace", replace)  # ("no" is a true value: it replaced an earlier eval_lm.json)
    if not str(pretrained).strip():  # ("" is the working folder to pathlib)
        raise UserError(f"pretrained is {emptiness(str(pretrained))}; give a model directory or a hub id")
    pretrained = expand_home(pretrained, "pretrained")  # (~/models/x: no shell expanded it; no hub id starts so)
    weighted = check_flag("use_weighted_exit", use_weighted_exit)
    if weighted and exit_threshold is not None:  # (the model took the average and set the threshold aside)
        raise UserError(f"{_flag('use_weighted_exit')} and {_flag('exit_threshold')} are two exit rules (the "
                        "exit-weighted average of the loops' logits, or the first loop past the threshold); give one")
    if exit_dtype is not None and exit_threshold is None and not weighted:
        raise UserError(f"{_flag('exit_dtype')} is the dtype of an exit rule: give {_flag('exit_threshold')} too "
                        f"(or {_flag('use_weighted_exit')})")
    earlier = [Path(out) / f for f in OUTPUTS if (Path(out) / f).exists()] if not replace else []
    if earlier:  # said now, not after every depth has been evaluated (the command line checks this first too)
        raise UserError(f"{earlier[0]} already exists (an earlier result); pass replace=True to replace it, or "
                        "another out")
    import lm_eval
    from lm_eval.tasks import TaskManager

    from ..hardware import resolve_device

    args = _check_eval_args(tasks, depths, limit, num_fewshot, batch_size, max_gen_toks, apply_chat_template,
                            model_kwargs)
    tasks, depths, limit, num_fewshot = args["tasks"], args["depths"], args["limit"], args["num_fewshot"]
    batch_size, max_gen_toks = args["batch_size"], args["max_gen_toks"]
    folders = _folders(include_path) if include_path is not None else []  # (said before the model loads)
    tasks, task_folders = _task_files(tasks)
    folders += [f for f in task_folders if f not in folders]
    for folder in folders:
        if not Path(folder).is_dir():  # (lm-eval's --include_path is one folder too: no comma list)
            several = "," in folder and all(Path(f).is_dir() for f in folder.split(","))
            raise UserError(f"{_flag('include_path')} {folder} is not a folder of task YAMLs" + (
                f"; {_flag('include_path')} takes one folder, not a list: put the task YAMLs in one folder"
                if several else ""))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolve_device(device)  # cuda asked for on a machine without it is refused, not run (and recorded) elsewhere
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    refuse_missing(str(pretrained))  # a path no hub id can be (/x, ./x, a/b/c) that is not there
    # The model first: what is wrong with it (no loop, damaged or partial weights, foreign code) is said before
    # lm-eval indexes its tasks
    exit_kw = {"exit_threshold": exit_threshold, "exit_dtype": exit_dtype} if exit_threshold is not None else {}
    exit_kw.update({"use_weighted_exit": True, "exit_dtype": exit_dtype} if weighted else {})
    def load() -> LoopedLM:
        return LoopedLM(pretrained=pretrained, num_loops=depths[0], device=device, dtype=dtype, batch_size=batch_size,
                        **exit_kw, **(model_kwargs or {}))

    # a fine-tune's checkpoint says its step, read around the load (a run may still be training into it)
    lm, step = loaded_at_step(Path(pretrained), load) if Path(str(pretrained)).is_dir() else (load(), None)
    # a task's generation_kwargs that set a loop setting are refused, naming where this caller gives it
    lm.loop_settings = {"num_loops": _flag("depths"),
                        **{k: _flag(k) for k in ("exit_threshold", "exit_dtype", "use_weighted_exit")}}
    if apply_chat_template and not getattr(lm.tokenizer, "chat_template", None):  # before any task is read
        raise UserError(f"{pretrained}: {NO_CHAT_TEMPLATE}; run without {_flag('apply_chat_template')}, or add one "
                        "(chat_template.jinja in the model directory)")
    if apply_chat_template and no_default_template(lm.tokenizer):  # (transformers' advice, a name, is no option)
        raise UserError(f"{pretrained}: {no_default_template(lm.tokenizer)}")
    # a fine-tune's data.system_prompt opened every conversation it trained on: its chat prompts get it too, as
    # lm-eval's system instruction (plain-text prompts have no turns to give it)
    system = run_system_prompt(pretrained) if apply_chat_template and Path(str(pretrained)).is_dir() else None
    if not apply_chat_template and (Path(str(pretrained)) / RUN_CONFIG).is_file():  # a looplm fine-tune's checkpoint
        # (said, not refused: raw-text scores are what a base model's table holds)
        print(f"note: {pretrained} is a looplm fine-tune: it trained on prompts its chat template rendered, and "
              f"lm-eval scores raw text unless {_flag('apply_chat_template')} is given")
    if apply_chat_template:  # a template that drops the question, said before any task is read (the model checks
        lm.check_chat_template([{"role": "system", "content": system}] * bool(system)  # each prompt's turns too)
                               + [{"role": "user", "content": "the question"}])
    config_q = getattr(lm.model.config, "early_exit_threshold", None)
    if lm.exit_threshold is None and config_q is not None:
        lm.model.config.early_exit_threshold = None  # in memory only: every row runs its loops
    tm = local = None
    if folders:  # indexing lm-eval's thousands of built-in tasks takes a while: skip it when not needed
        include_path = folders[0] if len(folders) == 1 else folders  # (a list as lm-eval's TaskManager takes it)
        tm = local = TaskManager(include_path=include_path, include_defaults=False)
        if not all(t in tm.all_tasks or tm.match_tasks([t]) for t in tasks):
            tm = None
    tm = tm or TaskManager(include_path=include_path)
    asked, tasks, unknown = tasks, [], []
    for t in asked:  # a shell-style pattern (`mmlu_*`) names the tasks lm-eval's own matching finds
        found = [t] if t in tm.all_tasks else tm.match_tasks([t])
        tasks += [f for f in found if f not in tasks]
        unknown += [] if found else [t]
    if unknown:
        raise UserError(f"unknown lm-eval task(s) {', '.join(unknown)} ({_unknown_hint(unknown, folders, local)})")
    for t in tasks:  # a gold answer edited after write_lm_eval_task was refused after all the generation, unnamed
        check_task_golds(getattr(tm.task_index.get(t), "yaml_path", None), t)
    if tasks != asked:
        print(f"note: {_flag('tasks')} {' '.join(asked)} names {', '.join(tasks)} (lm-eval's pattern matching); "
              "eval_lm.json records them")
    rows, counts, shots = [], {}, {}
    for d in depths:
        lm.num_loops = d
        with _no_env_info():
            try:
                res = lm_eval.simple_evaluate(
                    model=lm, tasks=tasks, num_fewshot=num_fewshot, limit=limit, task_manager=tm,
                    apply_chat_template=apply_chat_template, system_instruction=system, log_samples=False,
                    bootstrap_iters=0,
                    gen_kwargs={"max_gen_toks": max_gen_toks} if max_gen_toks else None)
            except UserError as e:  # the model's refusals, said in the command line's terms
                if GEN_BUDGET in str(e):  # lm-eval keeps a prompt's last (positions - budget) tokens: leave room
                    positions, longest = lm.max_length, getattr(lm, "longest_prompt", 0)
                    where = (f"the {positions} positions of model_kwargs max_length={positions}" if lm._max_length
                             else f"{pretrained}'s {positions} positions")
                    room = (f"pass a {_flag('max_gen_toks')} of at most {positions - longest}, which leaves room for "
                            f"the task's longest prompt ({longest} tokens)" if positions > longest else
                            f"the task's longest prompt ({longest} tokens) fills them alone")
                    raise UserError(f"{', '.join(tasks)}: the generation budget does not fit {where}; {room}") from None
                if str(e).startswith(CONTINUATION):  # a task's answer choice or target: name the tasks
                    raise UserError(f"{', '.join(tasks)}: {e}") from None
                if UNENCODABLE in str(e):
                    raise UserError(f"{pretrained}: its tokenizer cannot encode the text of {', '.join(tasks)}: "
                                    f"{UNENCODABLE}") from None
                raise
            except (DatasetGenerationError, StopIteration, IndexError, KeyError, TypeError, ValueError, ImportError,
                    AttributeError, SyntaxError) as e:  # a task's own fault is one line; anything else, a bug
                told = task_error(e, ", ".join(tasks))
                if told is e:  # not the task's: a looplm or model bug, with its traceback
                    raise
                raise told from None
            except jinja2.TemplateError as e:  # a task's own templates (doc_to_text, ...) on its data
                why = str(e).strip().splitlines()[0][:200] if str(e).strip() else "no message"
                raise UserError(f"{', '.join(tasks)}: a task's prompt template fails on its data ({type(e).__name__}: "
                                f"{why}); check the task's doc_to_text, doc_to_target and doc_to_choice against its "
                                "data fields") from None
        rows.append({"loops": d, "metrics": {t: _metrics(r) for t, r in res["results"].items()}})
        cut = getattr(lm, "prompts_cut", None) or {"cut": 0}
        if cut["cut"]:  # lm-eval cut prompts to fit the generation budget, with a line lost in the progress bar
            room = lm.max_length - cut["longest"]  # (0 or less: no budget fits; "at most -32" was the advice)
            # the caller's own max_length model_kwarg, where given, is the limit (not the model's positions)
            limit_by = (f"model_kwargs max_length={lm.max_length}" if lm._max_length else
                        f"the model's {lm.max_length} positions")
            fix = (f"pass a {_flag('max_gen_toks')} of at most {room} to score them whole" if room > 0 else
                   f"the prompts alone fill {limit_by}, so no budget scores them whole; use fewer few-shot examples "
                   f"({_flag('num_fewshot')}), shorter prompts, or " + ("a larger max_length" if lm._max_length else
                                                                      "a model with more positions"))
            print(f"note: at {d} loops, {cut['cut']} prompt(s) of up to {cut['longest']} tokens were cut from the "
                  f"left to the {cut['room']} positions the generation budget leaves (lm-eval's truncation); {fix}")
        # What ran, not what was asked: a task's YAML can fix its own number of shots over --num-fewshot.
        shots = {t: c.get("num_fewshot") for t, c in res.get("configs", {}).items()}
        generates = any(c.get("output_type") == "generate_until" for c in res.get("configs", {}).values())
        # lm-eval scores a rolling log-likelihood (perplexity) on the raw document: no template, no system turn
        raw = [t for t, c in res.get("configs", {}).items() if c.get("output_type") == "loglikelihood_rolling"]
        scored = list(res.get("configs", {}))  # the tasks that ran: a group's members, not the group's name
        # What was scored, not what was asked: a --limit above a task's size scores the whole task.
        counts = {t: {"original": int(c["original"]), "effective": int(c["effective"])}
                  for t, c in res.get("n-samples", {}).items()}
    out = Path(out)
    table = depth_table(rows)
    short = [f"{t} has {c['original']:,}" for t, c in counts.items()
             if isinstance(limit, int) and c["original"] < limit]
    if short:
        print(f"note: {_flag('limit')} {limit:,} is more examples than a task holds ({'; '.join(short)}); all of "
              "them were scored, and eval_lm.json records the counts under n_samples")
    # Which rule made the rows: recorded, and said when it is not "exactly that many loops" or when the config's
    # own rule was set aside
    exit_q = lm.exit_threshold
    exit_in = (lm.exit_dtype or getattr(lm.model.config, "exit_dtype", None) or "model") if (
        exit_q is not None or weighted) else None
    if weighted:
        print(f"note: weighted exit (exit rule in {exit_in}): each row is the exit-weighted average of the logits of "
              "the loops up to its loop count, not that many loops")
    elif exit_q is not None:
        print(f"note: early exit at threshold {exit_q} (exit rule in {exit_in}): each row is an early exit capped at "
              "its loop count, not that many loops")
    elif config_q is not None:
        print(f"note: the model's config.json sets early_exit_threshold={config_q}; every row ran exactly its loop "
              f"count ({_flag('exit_threshold')} {config_q} scores that exit rule instead)")
    templated = [t for t in (scored or tasks) if t not in raw] if apply_chat_template else []
    if apply_chat_template and raw:
        print(f"note: {_flag('apply_chat_template')} was not used by {', '.join(raw)}: lm-eval scores a rolling "
              "log-likelihood on the raw document" + ("" if templated else
                                                       "; eval_lm.json records apply_chat_template as null"))
    if system and templated:
        print(f"note: the run's data.system_prompt ({system!r:.60}) opens every prompt of {', '.join(templated)}, "
              "as in fine-tuning (eval_lm.json records it as system_instruction)")
    if apply_chat_template and not templated:  # recorded as the table's settings, yet no prompt had them
        apply_chat_template, system = None, None
    if max_gen_toks and not generates:  # recorded among the settings that change the numbers, yet it changed none
        print(f"note: {_flag('max_gen_toks')} {max_gen_toks} was not used: {', '.join(tasks)} generate no text "
              "(log-likelihood tasks); eval_lm.json records max_gen_toks as null")
        max_gen_toks = None
    overridden = {t: n for t, n in shots.items() if num_fewshot is not None and n != num_fewshot}
    if overridden:
        used = ", ".join(f"{t} ({n} shots, set by the task)" for t, n in overridden.items())
        print(f"note: {_flag('num_fewshot')} {num_fewshot} was not used by {used}; eval_lm.json records the shots "
              "each task used (num_fewshot_used)")
    # the folder the tasks were read from: a local task may bear a built-in task's name (gsm8k)
    result = {"model": str(pretrained), "step": step, "tasks": tasks,
              "include_path": (str(Path(include_path).resolve()) if isinstance(include_path, str) else
                               [str(Path(f).resolve()) for f in include_path] if include_path else None),
              "depths": depths, "limit": limit,
              "num_fewshot": num_fewshot,
              "num_fewshot_used": shots,
              # every setting that changes the numbers, so two tables can be told apart
              "settings": {"dtype": dtype, "device": device, "batch_size": batch_size,
                           "apply_chat_template": apply_chat_template, "system_instruction": system,
                           **({"chat_template_tasks": templated} if raw and templated else {}),
                           "max_gen_toks": max_gen_toks,
                           "early_exit_threshold": exit_q, "use_weighted_exit": weighted, "exit_dtype": exit_in,
                           **(model_kwargs or {})},
              "n_samples": counts, "rows": rows, "table": table}
    with all_or_nothing([out / f for f in OUTPUTS]):  # the three files are one result: all of them, or none
        write_result(out / "eval_lm.json", lambda f: f.write_text(json.dumps(result, indent=1) + "\n"), replace)
        write_result(out / "eval_lm.md", lambda f: f.write_text(f"# lm-eval by loop count: {pretrained}\n\n{table}\n"),
                     replace)
        plot_depths(rows, out / "eval_lm.png", title=f"{Path(str(pretrained)).name}: {', '.join(tasks)}",
                    replace=replace)
    return result
