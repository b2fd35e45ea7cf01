"""lm-evaluation-harness at any loop count: the `looplm` model type and a depth sweep.

`LoopedLM` is lm-eval's HF model (`HFLM`: batching, log-likelihoods, generation with stop sequences, chat
templates) with the loop count added: every forward and every `generate()` call passes `num_loops`. It loads
any model the Auto classes resolve, Ouro checkpoints (no remote code) and looplm exports included.

    python -m looplm.hf.lm_eval_adapter run --model looplm \\
        --model_args pretrained=ByteDance/Ouro-1.4B,num_loops=8,dtype=bfloat16 --tasks gsm8k --batch_size 16

(the module registers `looplm` with lm-eval's registry, then hands over to lm-eval's own command line), or
from looplm: `looplm eval-lm CHECKPOINT --tasks gsm8k --depths 1,2,4,8`, which loads the model once, runs
every depth and writes `eval_lm.json`, `eval_lm.md` (a depth x metric table) and `eval_lm.png`.

Note: looplm's own LoopedTransformer exports have learned absolute positions and reject left padding, so run
generation tasks on them with batch_size 1. `trust_remote_code=True` is refused: it would load a checkpoint's
own Hub code (Ouro's does not run under transformers 5) instead of looplm's native class.
"""

from __future__ import annotations

import contextlib
import json
import logging
import operator
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import torch
from datasets.exceptions import DatasetGenerationError
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from ..checkpoint import loaded_at_step, write_result
from ..errors import UserError
from ..looped import check_looped, loop_count
from ..outputs import all_or_nothing
from .configuration_ouro import EXIT_DTYPES, check_exit_threshold
from .registry import register

OUTPUTS = ("eval_lm.json", "eval_lm.md", "eval_lm.png")  # what eval_depths writes in its folder


def _opt_loops(x: Any) -> int | None:
    """A num_loops model_arg: None, or an integer >= 1 (lm-eval parses "2.5" to a float, which int() would
    truncate to 2 loops without a word)."""
    if x in (None, "", "None", "none"):
        return None
    try:
        n = loop_count(int(x) if isinstance(x, str) and x.strip().isdigit() else x, 1)
    except ValueError as e:
        raise UserError(f"model_args {e}") from None
    return n


# lm-eval's hf settings that load a model: looplm's loader has loaded it, so they could not apply
LOADER_ARGS = ("subfolder", "parallelize", "max_memory_per_gpu", "max_cpu_memory", "offload_folder", "tp_plan",
               "peft", "delta", "autogptq", "gptqmodel", "gguf_file")


def _check_model_args(kwargs: dict[str, Any]) -> None:
    """Refuse a model_arg the looplm model cannot honour: a loader setting (a LoRA adapter, a GGUF file...) and a
    key lm-eval's hf model does not know (a misspelt num_loops): both were dropped without a word."""
    from inspect import signature

    known = set(signature(HFLM.__init__).parameters) - {"self", "kwargs"}
    loader = [k for k in LOADER_ARGS if kwargs.get(k) not in (None, False, "", "False", "false")]
    if loader:
        raise UserError(f"model_args {', '.join(loader)}: looplm loads the model itself (no remote code), so "
                        "these loading settings cannot apply; merge an adapter into the weights first")
    unknown = sorted(k for k in kwargs if k not in known)
    if unknown:
        raise UserError(f"model_args {', '.join(unknown)}: not a setting of the looplm model (num_loops, "
                        "exit_threshold, exit_dtype, and lm-eval's hf settings)")


def _opt_float(x: Any) -> float | None:
    return None if x in (None, "", "None", "none") else float(x)


def _is_true(x: Any) -> bool:
    """lm-eval parses model_args "true" to True; a caller may still hand over the string or 1."""
    return x is True or (isinstance(x, str) and x.strip().lower() in ("true", "1", "yes")) or (
        isinstance(x, int) and not isinstance(x, bool) and x == 1)


REMOTE_CODE_MESSAGE = (
    "trust_remote_code=True is not supported by the looplm model: looplm's native Ouro class is used only "
    "without remote code, and trust_remote_code would load the checkpoint's own Hub code instead (Ouro's does "
    "not run under transformers 5); drop trust_remote_code from model_args (lm-eval's --trust_remote_code flag "
    "adds it too)")


@register_model("looplm")
class LoopedLM(HFLM):
    """HFLM with a loop count: model_args `num_loops=N` (default: the checkpoint's own, e.g. Ouro's
    `total_ut_steps`), optional `exit_threshold=q` (Ouro's early exit; default: the checkpoint's
    `early_exit_threshold`) and `exit_dtype=model|float32` (the dtype of Ouro's exit rule; default: the
    checkpoint's `exit_dtype`). Change `num_loops` between evaluations to sweep depths without reloading."""

    def __init__(self, pretrained: Any, num_loops: int | str | None = None, exit_threshold: Any = None,
                 exit_dtype: str | None = None, **kwargs: Any) -> None:
        if _is_true(kwargs.get("trust_remote_code")):  # before any download or load
            raise UserError(REMOTE_CODE_MESSAGE)
        register()  # AutoConfig / AutoModelForCausalLM know "ouro" and "looplm"
        _check_model_args(kwargs)
        self.num_loops = _opt_loops(num_loops)
        try:
            self.exit_threshold = check_exit_threshold(_opt_float(exit_threshold))
        except ValueError as e:
            raise UserError(f"exit_threshold: {e}") from None
        self.exit_dtype = None if exit_dtype in (None, "", "None", "none") else str(exit_dtype)
        if self.exit_dtype is not None and self.exit_dtype not in EXIT_DTYPES:
            raise UserError(f"exit_dtype must be one of {', '.join(EXIT_DTYPES)}, got {exit_dtype!r}")
        kwargs.setdefault("backend", "causal")
        if kwargs["backend"] not in ("causal", "default"):  # seq2seq scored continuations against the wrong positions
            raise UserError(f"model_args backend={kwargs['backend']}: the looplm model is a causal LM (backend=causal)")
        if isinstance(pretrained, str):  # looplm's one loader: the checks every other command makes
            pretrained, kwargs = _load(pretrained, kwargs)
        else:
            try:
                check_looped(pretrained)
            except TypeError as e:
                raise UserError(str(e)) from None
        # lm-eval warns that a loaded model makes some arguments moot: the loader took them already
        hf_log = logging.getLogger(HFLM.__module__)
        level = hf_log.level
        hf_log.setLevel(logging.ERROR)
        try:
            super().__init__(pretrained=pretrained, **kwargs)
        finally:
            hf_log.setLevel(level)
        rows = self.model.get_input_embeddings().num_embeddings
        if len(self.tokenizer) > rows:  # ids past the embedding: an IndexError deep inside the first request
            raise UserError(f"the tokenizer has {len(self.tokenizer)} tokens but the model's embedding has {rows} "
                            "rows; give the model's own tokenizer (model_args tokenizer=...)")
        if (self.exit_threshold is not None or self.exit_dtype is not None) and not any(
                "early_exit_gate" in name for name, _ in self.model.named_modules()):
            raise UserError(f"{type(self.model).__name__} has no early-exit gate (a looplm export runs every loop); "
                            "exit_threshold and exit_dtype apply to Ouro models")

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        try:
            return super().apply_chat_template(chat_history, add_generation_prompt)
        except jinja2.TemplateError as e:  # the model's template is its own code; a task's templates are the task's
            why = str(e).strip().splitlines()[0][:200] if str(e).strip() else "no message"
            raise UserError(f"{CHAT_TEMPLATE} ({type(e).__name__}: {why})") from None

    def _loop_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        if self.num_loops is not None:
            kw["num_loops"] = self.num_loops
        if self.exit_threshold is not None:
            kw["exit_threshold"] = self.exit_threshold
        if self.exit_dtype is not None:
            kw["exit_dtype"] = self.exit_dtype
        return kw

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any], additional_config: dict[str, Any] | None = None
                            ) -> LoopedLM:
        # lm-eval's command line passes --device and --batch_size beside the model_args: the same key in both was
        # Python's "multiple values for keyword argument" traceback
        twice = sorted(k for k, v in (additional_config or {}).items() if v is not None and k in arg_dict)
        if twice:
            flags = ", ".join(f"--{k}" for k in twice)
            raise UserError(f"model_args {', '.join(f'{k}={arg_dict[k]}' for k in twice)}: lm-eval's command line "
                            f"passes {', '.join(twice)} itself; give it with {flags}, not in model_args")
        return super().create_from_arg_obj(arg_dict, additional_config)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict[str, Any] | None = None) -> LoopedLM:
        from lm_eval.utils import simple_parse_args_string

        _refuse_twice([kv.split("=", 1)[0].strip() for kv in arg_string.split(",") if kv.strip()])
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    def generate_until(self, requests: list[Any], *args: Any, **kwargs: Any) -> list[str]:
        try:
            return super().generate_until(requests, *args, **kwargs)
        except AssertionError as e:  # lm-eval's own check of a generation budget against the positions
            if "max tokens to generate" not in str(e):
                raise
            why = str(e).strip().rstrip(".")[:200]
            limit = f"model_args max_length={self._max_length}" if self._max_length else \
                f"the model's {self.max_length} positions"
            raise UserError(f"{GEN_BUDGET} {limit} ({why}); ask for fewer tokens (looplm eval-lm: --max-gen-toks; "
                            "lm-eval: --gen_kwargs max_gen_toks=N)") from None

    def tok_encode(self, string: str, *args: Any, **kwargs: Any) -> list[int]:
        with _encodable():
            return super().tok_encode(string, *args, **kwargs)

    def tok_batch_encode(self, strings: list[str], *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        with _encodable():
            return super().tok_batch_encode(strings, *args, **kwargs)

    def _encodes(self, text: str) -> bool:
        try:
            self.tokenizer.encode(text, add_special_tokens=False)
        except Exception as e:
            if type(e) is not Exception or "Missing [UNK] token" not in str(e):
                raise
            return False
        return True

    def _require_memory(self, batch: int, tokens: int, cached: int = 0) -> None:
        """Refuse a call whose loop count cannot fit, before it runs: with an exit rule every loop's (B, T, D)
        state of the `tokens` in one forward is kept, and a generation's KV cache (`cached` tokens) has a slot
        per (loop, layer), so memory grows with the loops (a million loops on a small model: hundreds of GB)."""
        from ..memory import require

        c = self.model.config
        n = self.num_loops or int(getattr(c, "total_ut_steps", getattr(c, "num_loops", 1)))  # Ouro; an export
        exit_rule = self.exit_threshold if self.exit_threshold is not None else getattr(c, "early_exit_threshold", None)
        kv = 2 * c.num_hidden_layers * getattr(c, "num_key_value_heads", c.num_attention_heads) \
            * getattr(c, "head_dim", c.hidden_size // c.num_attention_heads)
        per_seq = (c.hidden_size * tokens if exit_rule is not None else 0) + kv * cached
        require(n * batch * per_seq * torch.finfo(self.model.dtype).bits // 8,
                f"{n:,} loops on {batch} sequence(s) of {max(tokens, cached)} tokens (every loop's state"
                f"{' and KV cache' if cached else ''} is kept)")

    def _model_call(self, inps: torch.Tensor, attn_mask: torch.Tensor | None = None,
                    labels: torch.Tensor | None = None) -> torch.Tensor:
        self._require_memory(inps.shape[0], inps.shape[1])
        amp = getattr(self, "mixed_precision_dtype", None)
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=amp or torch.float32,
                                             enabled=amp is not None):
            return self.model(inps, use_cache=False, **self._loop_kwargs()).logits

    def _model_generate(self, context: torch.Tensor, max_length: int, stop: list[str], **generation_kwargs: Any
                        ) -> torch.Tensor:
        generation_kwargs.update(self._loop_kwargs())
        # a stop string the tokenizer cannot encode (a character-level export lacks "\n") can never be generated:
        # it cannot stop anything, so it is left out rather than failing lm-eval's stopping criteria
        stop = [s for s in stop or [] if self._encodes(s)]
        self._require_memory(context.shape[0], context.shape[1], cached=max_length)
        if getattr(self.model.config, "model_type", None) != "looplm" or context.shape[0] == 1:
            return super()._model_generate(context, max_length, stop, **generation_kwargs)
        # A looplm export has learned absolute positions: a left-padded prompt would be read at shifted positions.
        # Each prompt decodes alone, then the rows are laid out as the batch was (left pads, then prompt and
        # continuation), so the harness cuts every continuation where it expects it.
        mask = generation_kwargs.pop("attention_mask", None)
        pad = self.tokenizer.pad_token_id
        rows = []
        for i in range(context.shape[0]):
            real = mask[i].bool() if mask is not None else context[i] != pad
            k = int((~real).sum())  # left pads
            out = super()._model_generate(context[i : i + 1, k:], max_length - k, stop, **generation_kwargs)[0]
            rows.append(torch.cat([context[i, :k], out]))
        width = max(len(r) for r in rows)
        return torch.stack([torch.nn.functional.pad(r, (0, width - len(r)), value=pad) for r in rows])


GEN_BUDGET = "the generation budget does not fit"
CHAT_TEMPLATE = "its chat template cannot be used"
UNENCODABLE = ("a character is outside its vocabulary (an export of a character-level looplm run knows only the "
               "characters it was trained on)")


@contextlib.contextmanager
def _encodable() -> Iterator[None]:
    """A text the tokenizer cannot hold (the tokenizers library's plain Exception, "Missing [UNK]") as a user error,
    wherever lm-eval encodes it."""
    try:
        yield
    except Exception as e:
        if type(e) is not Exception or "Missing [UNK] token" not in str(e):
            raise
        raise UserError(f"the model's tokenizer cannot encode the task's text: {UNENCODABLE}") from None


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _load(path: str, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The model and tokenizer of `path` through looplm's loader (no remote code; damaged, partial or pickled
    weights and models that do not loop refused in one line), placed as lm-eval's own arguments ask."""
    from .finetune import load_pretrained, load_tokenizer

    kwargs = dict(kwargs)
    dtype = kwargs.pop("dtype", "auto")
    device = kwargs.pop("device", None)
    if device is None or (str(device).startswith("cuda") and not torch.cuda.is_available()):
        if device is not None:  # lm-eval's command line asks for cuda:0 unless told: as its hf model, use the CPU
            logging.getLogger(__name__).warning(f"device {device} is not available here; running on the CPU")
        device = "cuda" if torch.cuda.is_available() else "cpu"
    from ..train import resolve_device

    device = resolve_device(str(device))  # an unknown one (mps, CPU, meta) is one line, not torch's traceback
    revision = kwargs.pop("revision", None)
    revision = None if revision in (None, "", "main") else revision
    if isinstance(dtype, str) and dtype != "auto" and dtype not in _DTYPES:
        raise UserError(f"dtype must be auto or one of {', '.join(_DTYPES)}, got {dtype!r}")
    model = load_pretrained(path, revision, _DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype)
    model.to(device).eval()
    if kwargs.get("tokenizer") in (None, ""):
        kwargs["tokenizer"] = load_tokenizer(path, revision)
    elif isinstance(kwargs["tokenizer"], str):  # looplm's loader: no remote code, a bad folder said in one line
        kwargs["tokenizer"] = load_tokenizer(kwargs["tokenizer"])
    return model, kwargs


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


def _check_eval_args(tasks: Any, depths: Any, limit: Any, num_fewshot: Any, batch_size: Any,
                     max_gen_toks: Any) -> list[int]:
    """eval_depths' arguments, as the command line checks them (ValueError naming the argument): a list of
    distinct task names (a string would be read letter by letter), increasing distinct depths >= 1, a --limit
    that is a count >= 1 or a fraction in (0, 1), and counts that are integers (never bools). Returns the depths."""
    from ..evaluate import check_depths

    if isinstance(tasks, str) or not isinstance(tasks, (list, tuple)) or not tasks or not all(
            isinstance(t, str) and t.strip() for t in tasks) or len(set(tasks)) < len(tasks):
        raise ValueError(f"tasks must be a list of distinct lm-eval task names, got {tasks!r:.80}")
    depths = check_depths(depths, "evaluate")

    def count(v: Any, lo: int) -> bool:
        try:
            return not isinstance(v, bool) and operator.index(v) >= lo  # ints, numpy and torch integers
        except TypeError:
            return False

    if limit is not None and not (count(limit, 1) or (isinstance(limit, float) and 0 < limit < 1)):
        raise ValueError(f"limit must be a count >= 1 or a fraction in (0, 1), got {limit!r:.80}")
    for name, v, lo in (("num_fewshot", num_fewshot, 0), ("batch_size", batch_size, 1),
                        ("max_gen_toks", max_gen_toks, 1)):
        if v is not None and not count(v, lo):
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r:.80}")
    return depths


def eval_depths(pretrained: str, tasks: list[str], depths: list[int], out: str | Path,
                include_path: str | None = None, limit: float | None = None, num_fewshot: int | None = None,
                batch_size: int = 8, max_gen_toks: int | None = None, apply_chat_template: bool = False,
                device: str = "auto", dtype: str = "auto", model_kwargs: dict[str, Any] | None = None,
                exit_threshold: float | None = None, exit_dtype: str | None = None,
                replace: bool = True) -> dict[str, Any]:
    """Evaluate `tasks` at every loop count in `depths` with one loaded model; write json, markdown, png (each
    whole or not at all; without `replace`, never over a file that appeared meanwhile). Each row runs exactly
    its loop count unless `exit_threshold` asks for Ouro's early exit (in `exit_dtype`): a config's
    early_exit_threshold is not applied, since in low precision (or with saturated gates) the exit rule ends
    tokens before the last loop even at 1.0, and the deep rows would all be the same early exit."""
    if exit_dtype is not None and exit_threshold is None:
        raise UserError("--exit-dtype is the dtype of an exit rule: give --exit-threshold too")
    import lm_eval
    from lm_eval.tasks import TaskManager

    depths = _check_eval_args(tasks, depths, limit, num_fewshot, batch_size, max_gen_toks)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    if not Path(pretrained).exists() and Path(pretrained).is_absolute():
        raise UserError(f"model directory {pretrained} does not exist")
    # The model first: what is wrong with it (no loop, damaged or partial weights, foreign code) is said before
    # lm-eval indexes its tasks
    exit_kw = {"exit_threshold": exit_threshold, "exit_dtype": exit_dtype} if exit_threshold is not None else {}
    def load() -> LoopedLM:
        return LoopedLM(pretrained=pretrained, num_loops=depths[0], device=device, dtype=dtype, batch_size=batch_size,
                        **exit_kw, **(model_kwargs or {}))

    # a fine-tune's checkpoint says its step, read around the load (a run may still be training into it)
    lm, step = loaded_at_step(Path(pretrained), load) if Path(str(pretrained)).is_dir() else (load(), None)
    config_q = getattr(lm.model.config, "early_exit_threshold", None)
    if lm.exit_threshold is None and config_q is not None:
        lm.model.config.early_exit_threshold = None  # in memory only: every row runs its loops
    tm = None
    if include_path:  # indexing lm-eval's thousands of built-in tasks takes a while: skip it when not needed
        if not Path(include_path).is_dir():
            raise UserError(f"--include-path {include_path} is not a folder of task YAMLs")
        tm = TaskManager(include_path=include_path, include_defaults=False)
        if not all(t in tm.all_tasks for t in tasks):
            tm = None
    tm = tm or TaskManager(include_path=include_path)
    unknown = [t for t in tasks if t not in tm.all_tasks]
    if unknown:
        raise UserError(f"unknown lm-eval task(s) {', '.join(unknown)} (lm-eval lists its tasks with "
                        "`lm-eval ls tasks`; a local task needs --include-path)")
    rows, counts, shots = [], {}, {}
    for d in depths:
        lm.num_loops = d
        with _no_env_info():
            try:
                res = lm_eval.simple_evaluate(
                    model=lm, tasks=tasks, num_fewshot=num_fewshot, limit=limit, task_manager=tm,
                    apply_chat_template=apply_chat_template, log_samples=False, bootstrap_iters=0,
                    gen_kwargs={"max_gen_toks": max_gen_toks} if max_gen_toks else None)
            except UserError as e:  # the model's refusals, said in the command line's terms
                if GEN_BUDGET in str(e):
                    positions = getattr(lm.model.config, "max_position_embeddings", None)
                    raise UserError(f"{', '.join(tasks)}: the generation budget does not fit {pretrained}'s "
                                    f"{positions} positions; pass a --max-gen-toks below {positions}") from None
                if str(e).startswith(CHAT_TEMPLATE):
                    raise UserError(f"{pretrained}: {e}") from None
                if UNENCODABLE in str(e):
                    raise UserError(f"{pretrained}: its tokenizer cannot encode the text of {', '.join(tasks)}: "
                                    f"{UNENCODABLE}") from None
                raise
            except (DatasetGenerationError, StopIteration, ValueError) as e:
                if isinstance(e, ValueError) and NO_DATA not in str(e):
                    raise
                raise _unreadable_data(e, ", ".join(tasks)) from None
            except jinja2.TemplateError as e:  # a task's own templates (doc_to_text, ...) on its data
                why = str(e).strip().splitlines()[0][:200] if str(e).strip() else "no message"
                raise UserError(f"{', '.join(tasks)}: a task's prompt template fails on its data ({type(e).__name__}: "
                                f"{why}); check the task's doc_to_text, doc_to_target and doc_to_choice against its "
                                "data fields") from None
        rows.append({"loops": d, "metrics": {t: _metrics(r) for t, r in res["results"].items()}})
        # What ran, not what was asked: a task's YAML can fix its own number of shots over --num-fewshot.
        shots = {t: c.get("num_fewshot") for t, c in res.get("configs", {}).items()}
        # What was scored, not what was asked: a --limit above a task's size scores the whole task.
        counts = {t: {"original": int(c["original"]), "effective": int(c["effective"])}
                  for t, c in res.get("n-samples", {}).items()}
    out = Path(out)
    table = depth_table(rows)
    short = [f"{t} has {c['original']:,}" for t, c in counts.items()
             if isinstance(limit, int) and c["original"] < limit]
    if short:
        print(f"note: --limit {limit:,} is more examples than a task holds ({'; '.join(short)}); all of them were "
              "scored, and eval_lm.json records the counts under n_samples")
    # Which rule made the rows: recorded, and said when it is not "exactly that many loops" or when the config's
    # own rule was set aside
    exit_q = lm.exit_threshold
    exit_in = (lm.exit_dtype or getattr(lm.model.config, "exit_dtype", None) or "model") if exit_q is not None else None
    if exit_q is not None:
        print(f"note: early exit at threshold {exit_q} (exit rule in {exit_in}): each row is an early exit capped at "
              "its loop count, not that many loops")
    elif config_q is not None:
        print(f"note: the model's config.json sets early_exit_threshold={config_q}; every row ran exactly its loop "
              f"count (--exit-threshold {config_q} scores that exit rule instead)")
    overridden = {t: n for t, n in shots.items() if num_fewshot is not None and n != num_fewshot}
    if overridden:
        used = ", ".join(f"{t} ({n} shots, set by the task)" for t, n in overridden.items())
        print(f"note: --num-fewshot {num_fewshot} was not used by {used}; eval_lm.json records the shots each task "
              "used (num_fewshot_used)")
    result = {"model": str(pretrained), "step": step, "tasks": tasks, "depths": depths, "limit": limit,
              "num_fewshot": num_fewshot,
              "num_fewshot_used": shots,
              # every setting that changes the numbers, so two tables can be told apart
              "settings": {"dtype": dtype, "device": device, "batch_size": batch_size,
                           "apply_chat_template": apply_chat_template, "max_gen_toks": max_gen_toks,
                           "early_exit_threshold": exit_q, "exit_dtype": exit_in, **(model_kwargs or {})},
              "n_samples": counts, "rows": rows, "table": table}
    with all_or_nothing([out / f for f in OUTPUTS]):  # the three files are one result: all of them, or none
        write_result(out / "eval_lm.json", lambda f: f.write_text(json.dumps(result, indent=1) + "\n"), replace)
        write_result(out / "eval_lm.md", lambda f: f.write_text(f"# lm-eval by loop count: {pretrained}\n\n{table}\n"),
                     replace)
        plot_depths(rows, out / "eval_lm.png", title=f"{Path(str(pretrained)).name}: {', '.join(tasks)}",
                    replace=replace)
    return result


NO_DATA = "corresponds to no data"  # datasets' ValueError for a split whose file holds only blank lines


def _unreadable_data(e: Exception, tasks: str) -> UserError:
    """A task's data file that datasets cannot read (empty, only blank lines, or a line that is not JSON), said
    in one line."""
    why = "" if NO_DATA in str(e) else str(e.__cause__ or e).strip()
    why = why.splitlines()[0][:200] if why else "it holds no records"
    return UserError(f"{tasks}: a task's data cannot be read ({why}); check its data files")


def _refuse_twice(keys: list[str]) -> None:
    """model_args keys given more than once: lm-eval's parsers keep the last one, and which was meant is a guess."""
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise UserError(f"model_args {', '.join(twice)} given twice; give each once")


def _cli_model_args_keys(argv: list[str]) -> list[str]:
    """The model_args keys of lm-eval's command line, in order: `--model_args`/`-a` takes one or more values
    (`a=1,b=2` or `a=1 b=2`) and may be given again; its parser merges them into one dict, silently keeping the
    last of a repeated key. A JSON object value is read by lm-eval as one dict (its keys are unique)."""
    from lm_eval._cli.utils import split_top_level

    values, i = [], 0
    while i < len(argv):
        if argv[i] in ("--model_args", "-a"):
            i += 1
            while i < len(argv) and not argv[i].startswith("-"):
                values.append(argv[i])
                i += 1
            continue
        if argv[i].startswith("--model_args="):
            values.append(argv[i].split("=", 1)[1])
        i += 1
    return [item.split("=", 1)[0].strip() for v in values if not v.lstrip().startswith("{")
            for item in split_top_level(v) if item.strip()]


def _cli_evaluate() -> None:
    from lm_eval.__main__ import cli_evaluate

    _refuse_twice(_cli_model_args_keys(sys.argv[1:]))
    try:
        cli_evaluate()
    except (DatasetGenerationError, StopIteration, ValueError) as e:
        if isinstance(e, ValueError) and NO_DATA not in str(e):
            raise
        raise _unreadable_data(e, "--tasks") from None


if __name__ == "__main__":  # `python -m looplm.hf.lm_eval_adapter <lm_eval args>`: lm-eval's CLI, plus `looplm`
    from ..cli import run_command
    from ..errors import guarded

    # a refusal (remote code, a bad model_arg, a missing model) is one `error:` line, as in looplm's own CLI
    raise SystemExit(run_command(lambda: guarded(_cli_evaluate)))
