"""lm-evaluation-harness at any loop count: the `looplm` model type (the depth sweep is looplm.hf.lm_eval_depths).

`LoopedLM` is lm-eval's HF model (`HFLM`: batching, log-likelihoods, generation with stop sequences, chat
templates) with the loop count added: every forward and `generate()` passes `num_loops`. It loads any model the Auto
classes resolve, Ouro checkpoints (no remote code) and looplm exports included. `python -m looplm.hf.lm_eval_adapter
run --model looplm --model_args pretrained=ByteDance/Ouro-1.4B,num_loops=8 --tasks gsm8k` registers `looplm`, then
hands over to lm-eval's own command line; `looplm eval-lm CHECKPOINT --tasks gsm8k --depths 1,2,4,8` loads the model
once, runs every depth and writes `eval_lm.json`, `eval_lm.md` (a depth x metric table) and `eval_lm.png`.

Note: looplm's own LoopedTransformer exports have learned absolute positions and reject left padding, so run
generation tasks on them with batch_size 1. `trust_remote_code=True` is refused: it would load a checkpoint's
own Hub code (Ouro's does not run under transformers 5) instead of looplm's native class."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import torch
from datasets.exceptions import DatasetGenerationError
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from ..errors import UserError
from ..looped import check_looped, loop_count
from .chat import DATE, DroppedPart, TemplateError, check_drops, no_default_template, template_failure
from .configuration_ouro import EXIT_DTYPES, check_exit_threshold
from .generation import LOOP_KEYS, request_settings_only, set_aside
from .lm_eval_tasks import task_error
from .lm_eval_tokens import EndOfText, take_attn_implementation
from .paths import expand_home
from .registry import register


def _opt_loops(x: Any) -> int | None:
    """A num_loops model_arg: None, or an integer >= 1 (lm-eval parses "2.5" to a float, which int() would
    truncate to 2 loops without a word). A whole float is its integer: lm-eval makes one of `num_loops= 3` (a
    space after `=`), which was refused as "got 3.0", a value never typed. An empty `num_loops=` (a sweep's unset
    `$N`) is refused: it scored the default depth as if it were the one asked for."""
    if isinstance(x, str) and not x.strip():
        raise UserError("model_args num_loops= has no value: give a loop count (num_loops=4), or leave num_loops "
                        "out for the model's own depth")
    if x in (None, "None", "none"):
        return None
    if isinstance(x, float) and x.is_integer():
        x = int(x)
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
    take_attn_implementation(kwargs)
    loader = [k for k in LOADER_ARGS if kwargs.get(k) not in (None, False, "", "False", "false")]
    if loader:
        raise UserError(f"model_args {', '.join(loader)}: looplm loads the model itself (no remote code), so "
                        "these loading settings cannot apply; merge an adapter into the weights first")
    unknown = sorted(k for k in kwargs if k not in known)
    if unknown:
        raise UserError(f"model_args {', '.join(unknown)}: not a setting of the looplm model (num_loops, "
                        "exit_threshold, exit_dtype, use_weighted_exit, and lm-eval's hf settings)")


def _is_true(x: Any) -> bool:
    """lm-eval parses model_args "true" to True; a caller may still hand over the string or 1."""
    return x is True or (isinstance(x, str) and x.strip().lower() in ("true", "1", "yes")) or (
        isinstance(x, int) and not isinstance(x, bool) and x == 1)


REMOTE_CODE_MESSAGE = (
    "trust_remote_code=True is not supported by the looplm model: looplm's native Ouro class is used only "
    "without remote code, and trust_remote_code would load the checkpoint's own Hub code instead (Ouro's does "
    "not run under transformers 5); drop trust_remote_code from model_args (lm-eval's --trust_remote_code flag "
    "adds it too)")


def _weighted_arg(value: Any, exit_threshold: float | None) -> bool:
    """model_args use_weighted_exit: True or False (lm-eval parses "true"; None is False). With an exit_threshold
    too, the model took the weighted average and set the threshold aside without a word."""
    weighted = False if value in (None, "", "None", "none") else _is_true(value)
    if not weighted and value not in (None, "", "None", "none", False, 0, "False", "false", "0", "no"):
        raise UserError(f"model_args use_weighted_exit must be True or False, got {value!r:.40}")
    if weighted and exit_threshold is not None:
        raise UserError("model_args use_weighted_exit and exit_threshold are two exit rules (the exit-weighted "
                        "average of the loops' logits, or the first loop past the threshold); give one")
    return weighted


@register_model("looplm")
class LoopedLM(EndOfText, HFLM):
    """HFLM with a loop count: model_args `num_loops=N` (default: the checkpoint's own, e.g. Ouro's
    `total_ut_steps`), optional `exit_threshold=q` (Ouro's early exit; default: the checkpoint's
    `early_exit_threshold`), `use_weighted_exit=True` (Ouro's exit-weighted average of the loops' logits, for
    log-likelihoods and generation alike) and `exit_dtype=model|float32` (the dtype of Ouro's exit rule; default:
    the checkpoint's `exit_dtype`). Change `num_loops` between evaluations to sweep depths without reloading."""

    loop_settings: dict[str, str] | None = None  # where a caller gives each loop setting (None: model_args)

    def __init__(self, pretrained: Any, num_loops: int | str | None = None, exit_threshold: Any = None,
                 exit_dtype: str | None = None, use_weighted_exit: Any = None, **kwargs: Any) -> None:
        if _is_true(kwargs.get("trust_remote_code")):  # before any download or load
            raise UserError(REMOTE_CODE_MESSAGE)
        register()  # AutoConfig / AutoModelForCausalLM know "ouro" and "looplm"
        _check_model_args(kwargs)
        if isinstance(pretrained, str | os.PathLike):  # one rule for every HF path: ~ is the home folder
            pretrained = expand_home(pretrained, "pretrained")
        self.num_loops = _opt_loops(num_loops)
        self._template_checked: set[tuple] = set()  # the role sequences check_chat_template found whole
        # what the refusals name the model by (`looplm eval-lm` gives the same string)
        self._named = pretrained if isinstance(pretrained, str) else (
            getattr(pretrained, "name_or_path", None) or type(pretrained).__name__)
        try:
            self.exit_threshold = check_exit_threshold(
                None if exit_threshold in (None, "", "None", "none") else float(exit_threshold))
        except ValueError as e:
            raise UserError(f"exit_threshold: {e}") from None
        self.use_weighted_exit = _weighted_arg(use_weighted_exit, self.exit_threshold)
        for key in ("softmax_dtype", "mixed_precision_dtype"):  # lm-eval's getattr(torch, name): a traceback
            check_dtype_arg(key, kwargs.get(key), auto=False)
        check_max_length(kwargs.get("max_length"))
        self.exit_dtype = None if exit_dtype in (None, "", "None", "none") else str(exit_dtype)
        if self.exit_dtype is not None and self.exit_dtype not in EXIT_DTYPES:
            raise UserError(f"exit_dtype must be one of {', '.join(EXIT_DTYPES)}, got {exit_dtype!r}")
        # lm-eval's logits cache runs requests whose inputs are equal once, and reads a shorter continuation's
        # log-probabilities from the start of the longer one's positions, not the end: rolling windows of repeated
        # text then scored differently at each batch size. Off, each request is scored on its own positions.
        if _is_true(kwargs.get("logits_cache")):
            raise UserError("model_args logits_cache=True: lm-eval's logits cache scores a continuation that shares "
                            "its input with a longer one at the wrong positions; looplm runs without it")
        kwargs["logits_cache"] = False
        kwargs.setdefault("backend", "causal")
        if kwargs["backend"] not in ("causal", "default"):  # seq2seq scored continuations against the wrong positions
            raise UserError(f"model_args backend={kwargs['backend']}: the looplm model is a causal LM (backend=causal)")
        named_tok = kwargs.get("tokenizer") is not None  # model_args tokenizer=... (eval-lm has no model_args)
        if isinstance(pretrained, str):  # looplm's one loader: the checks every other command makes
            pretrained, kwargs = _load(pretrained, kwargs)
        else:
            try:
                check_looped(pretrained)
            except TypeError as e:
                raise UserError(str(e)) from None
        tok = kwargs.get("tokenizer")  # lm-eval adds a pad token to one with none to pad with: a row past the table
        no_pad = tok is not None and not isinstance(tok, str) and all(
            getattr(tok, f"{k}_token", None) is None for k in ("pad", "eos", "unk"))
        # lm-eval warns that a loaded model makes some arguments moot: the loader took them already
        hf_log = logging.getLogger(HFLM.__module__)
        level = hf_log.level
        hf_log.setLevel(logging.ERROR)
        try:
            super().__init__(pretrained=pretrained, **kwargs)
        finally:
            hf_log.setLevel(level)
        # a dated template (Llama 3.x) gets the date training rendered, chat.DATE (strftime_now's was today's)
        self.chat_template_args = {"date_string": DATE, **(getattr(self, "chat_template_args", None) or {})}
        table = getattr(self.model.config, "max_position_embeddings", None)
        if self.model.config.model_type == "looplm" and self._max_length and table and self._max_length > table:
            # learned positions stop there (Ouro's rotary ones do not): a longer context failed inside the model
            raise UserError(f"model_args max_length={self._max_length} is more than the model's {table} positions "
                            f"(a looplm export's learned position table); give at most {table}")
        if no_pad and len(self.tokenizer) > self.model.get_input_embeddings().num_embeddings:
            raise UserError(f"the tokenizer has neither a pad, an eos nor an unk token to pad with, so lm-eval added "
                            f"one ({self.tokenizer.pad_token}) that the model's embedding has no row for; give the "
                            "tokenizer a pad token (pad_token in its tokenizer_config.json)")
        check_token_id("prefix_token_id", kwargs.get("prefix_token_id"), len(self.tokenizer))
        self.take_model_eos()  # a tokenizer without an eos token: the model's own eos id is lm-eval's end of text
        from .finetune import check_vocab
        # the hint named model_args even to `looplm eval-lm`, which has none: there the model directory's own
        # tokenizer is the one too large
        check_vocab(self.tokenizer, self.model, "the tokenizer", "give the model's own tokenizer (model_args "
                    "tokenizer=...)" if named_tok else "the model directory's tokenizer and weights are of two "
                    "models, or its tokenizer_config.json adds a token its vocabulary lacks (a pad_token, say)")
        if (self.exit_threshold is not None or self.exit_dtype is not None or self.use_weighted_exit) and not any(
                "early_exit_gate" in name for name, _ in self.model.named_modules()):
            raise UserError(f"{type(self.model).__name__} has no early-exit gate (a looplm export runs every loop); "
                            "exit_threshold, use_weighted_exit and exit_dtype apply to Ouro models")
        aside = set_aside(self.model.generation_config)
        if aside:  # generate() alone would read them: generation and log-likelihood tasks at two settings, and a
            # max_new_tokens, num_beams or penalty changed every "greedy, max_gen_toks" completion without a word
            logging.getLogger(__name__).warning(
                f"the model's generation config sets {', '.join(f'{k}={v!r}' for k, v in aside.items())}; the "
                "looplm model generates with each request's own settings (the task's generation_kwargs, "
                "max_gen_toks) and the model_args loop settings (num_loops, exit_threshold) or the model config's "
                "own, not these")

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if not getattr(self.tokenizer, "chat_template", None):  # transformers' paragraph named neither model nor flag
            raise UserError(f"{self._named}: {NO_CHAT_TEMPLATE}; run without --apply_chat_template, or add one "
                            "(chat_template.jinja in the model directory)")
        # (lm-eval checks a name given to --apply_chat_template, then calls this without it)
        if no_default_template(self.tokenizer):
            raise UserError(f"{self._named}: " + no_default_template(self.tokenizer, "lm-eval has none to use: it does "
                            "not pass a name given to --apply_chat_template on to the tokenizer"))
        self.check_chat_template(chat_history)
        try:
            return super().apply_chat_template(chat_history, add_generation_prompt)
        except Exception as e:  # the model's template is its own code, whatever it raises (a task's are the task's)
            raise UserError(f"{self._named}: {CHAT_TEMPLATE} ({template_failure(e)})") from None

    def check_chat_template(self, chat_history: list[dict[str, str]]) -> None:
        """Refuse a chat template that renders a prompt without part of it (looplm.hf.chat's drop check, as finetune
        and analyze make): every task was scored on prompts without their question. Once per sequence of roles
        (what a template writes depends on the roles); a conversation the template fails on is checked without its
        system turn, as lm-eval then renders it."""
        shape = tuple((m.get("role"), bool(str(m.get("content") or "").strip())) for m in chat_history)
        if shape in self._template_checked:
            return
        fix = ("evaluate without the chat template, or give the model one that writes that turn (chat_template.jinja "
               "in the model directory)")
        for history in (chat_history, [m for m in chat_history if m.get("role") != "system"]):
            try:
                check_drops(self.tokenizer, history, fix)
                break
            except DroppedPart as e:
                raise UserError(f"{self._named}: {CHAT_TEMPLATE}: {e}") from None
            except TemplateError:  # the template fails on it: lm-eval renders it again without the system turn,
                continue  # and says a failure there itself
        self._template_checked.add(shape)

    def _loop_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        cfg = self.model.config
        # always a count: without one, generate() would take a generation config's num_loops and the forward the
        # model config's, scoring generation and log-likelihood tasks of one run at two depths
        n = self.num_loops if self.num_loops is not None else default_loops(cfg)
        if n is not None:
            kw["num_loops"] = n
        if hasattr(cfg, "early_exit_threshold"):  # Ouro: always said (None: its config's rule, as the forward's),
            kw["exit_threshold"] = self.exit_threshold  # or generate() would take a generation config's own
        if self.exit_dtype is not None:
            kw["exit_dtype"] = self.exit_dtype
        if self.use_weighted_exit:  # the forward (log-likelihoods) and generate() both take it
            kw["use_weighted_exit"] = True
        return kw

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any], additional_config: dict[str, Any] | None = None
                            ) -> LoopedLM:
        if "pretrained" not in arg_dict:  # a TypeError ("missing 'pretrained'") in the constructor otherwise
            raise UserError("model_args has no pretrained=...: the looplm model needs a model directory or hub id")
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
        self.prompts_cut = {"cut": 0, "longest": 0, "room": None}  # what lm-eval's left truncation took (below)
        try:
            return super().generate_until(requests, *args, **kwargs)
        except AssertionError as e:  # lm-eval's own check of a generation budget against the positions
            if "max tokens to generate" not in str(e):
                raise
            why = str(e).strip().rstrip(".")[:200]
            limit = f"model_args max_length={self._max_length}" if self._max_length else \
                f"the model's {self.max_length} positions"
            # a budget just below the positions leaves the prompts a few positions, cut from the left: name the room
            self.longest_prompt = max((len(self.tok_encode(r.args[0])) for r in requests), default=0)
            raise UserError(f"{GEN_BUDGET} {limit} ({why}); ask for fewer tokens, leaving room for the prompts "
                            f"(the longest is {self.longest_prompt} tokens; lm-eval cuts a prompt from the left to "
                            "the positions minus the budget) (looplm eval-lm: --max-gen-toks; lm-eval: --gen_kwargs "
                            "max_gen_toks=N)") from None

    def _loglikelihood_tokens(self, requests: list[Any], *args: Any, **kwargs: Any) -> list[Any]:
        # lm-eval asserts these (a bare AssertionError traceback): a continuation that cannot fit the positions
        # (an export's short table), or one that renders as no tokens (an empty answer choice)
        longest = max((len(cont) for _, _, cont in requests), default=0)
        if longest > self.max_length:
            limit = f"model_args max_length={self._max_length}" if self._max_length else \
                f"the model's {self.max_length} positions"
            raise UserError(f"{CONTINUATION} of {longest} tokens does not fit {limit}; "
                            "the model cannot score it") from None
        if any(not cont for _, _, cont in requests):
            raise UserError(f"{CONTINUATION} is empty: nothing to score; check the "
                            "task's doc_to_choice and doc_to_target") from None
        return super()._loglikelihood_tokens(requests, *args, **kwargs)

    def tok_encode(self, string: str, *args: Any, **kwargs: Any) -> list[int]:
        with _encodable():
            return super().tok_encode(string, *args, **kwargs)

    def tok_batch_encode(self, strings: list[str], *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        room = kwargs.pop("left_truncate_len", None)  # lm-eval's cut says only the batch's padded length: count it
        with _encodable():
            ids, mask = super().tok_batch_encode(strings, *args, **kwargs)
        if room and ids.shape[1] > room:
            lengths = mask.sum(1).tolist()
            cut = getattr(self, "prompts_cut", None) or {"cut": 0, "longest": 0}
            self.prompts_cut = {"cut": cut["cut"] + sum(n > room for n in lengths),
                                "longest": max([cut["longest"], *lengths]), "room": room}
            ids, mask = ids[:, -room:], mask[:, -room:]
        return ids, mask

    def _encodes(self, text: str) -> bool:
        try:
            with _encodable():
                self.tokenizer.encode(text, add_special_tokens=False)
        except UserError:
            return False
        return True

    def _require_memory(self, batch: int, tokens: int, cached: int = 0) -> None:
        """Refuse a call whose loop count cannot fit, before it runs: with an exit rule every loop's (B, T, D)
        state of the `tokens` in one forward is kept, and a generation's KV cache (`cached` tokens) has a slot
        per (loop, layer), so memory grows with the loops (a million loops on a small model: hundreds of GB)."""
        from ..memory import require

        c = self.model.config
        n = self.num_loops or int(default_loops(c) or 1)
        exit_rule = self.exit_threshold if self.exit_threshold is not None else getattr(c, "early_exit_threshold", None)
        exit_rule = True if self.use_weighted_exit else exit_rule  # (every loop's state is kept too)
        kv = 2 * c.num_hidden_layers * getattr(c, "num_key_value_heads", c.num_attention_heads) \
            * getattr(c, "head_dim", c.hidden_size // c.num_attention_heads)
        per_seq = (c.hidden_size * tokens if exit_rule is not None else 0) + kv * cached
        require(n * batch * per_seq * torch.finfo(self.model.dtype).bits // 8,
                f"{n:,} loops on {batch} sequence(s) of {max(tokens, cached)} tokens (every loop's state"
                f"{' and KV cache' if cached else ''} is kept)", next(self.model.parameters()).device)

    def _model_call(self, inps: torch.Tensor, attn_mask: torch.Tensor | None = None,
                    labels: torch.Tensor | None = None) -> torch.Tensor:
        self._require_memory(inps.shape[0], inps.shape[1])
        amp = getattr(self, "mixed_precision_dtype", None)
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=amp or torch.float32,
                                             enabled=amp is not None):
            return self.model(inps, use_cache=False, **self._loop_kwargs()).logits

    def _model_generate(self, context: torch.Tensor, max_length: int, stop: list[str], **generation_kwargs: Any
                        ) -> torch.Tensor:
        asked = sorted(k for k in LOOP_KEYS if k in generation_kwargs)
        if asked:  # a task's generation_kwargs or --gen_kwargs: they were overwritten by the model's, without a word
            # (`looplm eval-lm` has no model_args: it names its own options in loop_settings)
            where = (", ".join(self.loop_settings[k] for k in asked) if self.loop_settings else
                     f"{', '.join(asked)} in model_args")
            raise UserError(f"gen_kwargs {', '.join(f'{k}={generation_kwargs[k]}' for k in asked)}: the looplm model "
                            "runs every request of a run (generation and log-likelihood) with the run's loop "
                            f"settings; give {where}")
        generation_kwargs.update(self._loop_kwargs())
        # a stop string the tokenizer cannot encode (a character-level export lacks "\n") can never be generated:
        # it cannot stop anything, so it is left out rather than failing lm-eval's stopping criteria
        stop = [s for s in stop or [] if self._encodes(s)]
        self._require_memory(context.shape[0], context.shape[1], cached=max_length)
        with request_settings_only(self.model):
            return self._generate_rows(context, max_length, stop, **generation_kwargs)

    def _generate_rows(self, context: torch.Tensor, max_length: int, stop: list[str], **generation_kwargs: Any
                       ) -> torch.Tensor:
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
NO_CHAT_TEMPLATE = "its tokenizer has no chat template"
CONTINUATION = "a continuation (an answer choice or target)"
UNENCODABLE = ("a character is outside its vocabulary (an export of a character-level looplm run knows only the "
               "characters it was trained on)")


def default_loops(config: Any) -> int | None:
    """The loop count a forward runs without `num_loops`: Ouro's total_ut_steps (a stray `num_loops` key in an
    Ouro config.json is not read by the model, and was taken as the depth here), an export's num_loops."""
    n = getattr(config, "total_ut_steps", None) if hasattr(config, "total_ut_steps") else None
    return n if n is not None else getattr(config, "num_loops", None)


@contextlib.contextmanager
def _encodable() -> Iterator[None]:
    """A text the tokenizer cannot hold (tokenizers' plain Exception "Missing [UNK]") as a UserError, wherever."""
    try:
        yield
    except Exception as e:
        if type(e) is not Exception or "Missing [UNK] token" not in str(e):
            raise
        raise UserError(f"the model's tokenizer cannot encode the task's text: {UNENCODABLE}") from None


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_dtype_arg(key: str, value: Any, auto: bool = True) -> None:
    """A model_args dtype (dtype; softmax_dtype and mixed_precision_dtype, which have no auto): None, a torch
    dtype (a caller's), or the name of one of _DTYPES."""
    if isinstance(value, str) and not (auto and value == "auto") and value not in _DTYPES:
        raise UserError(f"{key} must be {'auto or ' if auto else ''}one of {', '.join(_DTYPES)}, got {value!r}")


def check_max_length(value: Any) -> None:
    """model_args max_length: None (the model's positions) or a whole number >= 1. lm-eval reads 0 as unset (the
    default, without a word) and refused -3 only when scoring, after the load, as "-3.0"."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        # (lm-eval's parser reads a negative whole number as a float: "-3" arrives as -3.0)
        said = int(value) if isinstance(value, float) and value.is_integer() and value < 0 else value
        raise UserError(f"model_args max_length must be a whole number of tokens >= 1 (leave it out for the model's "
                        f"own length), got {said!r}")


def check_token_id(key: str, value: Any, vocab: int) -> None:
    """model_args prefix_token_id (lm-eval's hf setting, the token a rolling window starts with): None or a token
    id of the tokenizer. 99999 was an IndexError traceback in the embedding, -5 a TypeError in the decode."""
    if value is None:
        return
    said = int(value) if isinstance(value, float) and value.is_integer() else value  # lm-eval reads "-5" as -5.0
    if isinstance(said, bool) or not isinstance(said, int) or not 0 <= said < vocab:
        raise UserError(f"model_args {key} must be a token id of the tokenizer (0..{vocab - 1}), got {said!r}")


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
    from ..hardware import resolve_device

    device = resolve_device(str(device))  # an unknown one (mps, CPU, meta) is one line, not torch's traceback
    revision = kwargs.pop("revision", None)
    revision = None if revision in (None, "", "main") else revision
    check_dtype_arg("dtype", dtype)
    model = load_pretrained(path, revision, _DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype)
    model.to(device).eval()
    if kwargs.get("tokenizer") in (None, ""):
        kwargs["tokenizer"] = load_tokenizer(path, revision)
    elif isinstance(kwargs["tokenizer"], str):  # looplm's loader: no remote code, a bad folder said in one line
        kwargs["tokenizer"] = load_tokenizer(kwargs["tokenizer"])
    return model, kwargs


def _refuse_twice(keys: list[str]) -> None:
    """model_args keys given more than once: lm-eval's parsers keep the last one, and which was meant is a guess."""
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise UserError(f"model_args {', '.join(twice)} given twice; give each once")


def _config_has_model_args(argv: list[str]) -> str | None:
    """The --config/-C YAML file of lm-eval's command line, when it holds model_args (None otherwise). The file is
    read strictly: a key given twice in it (lm-eval's reader keeps the last), or in its model_args string, is
    refused."""
    from ..config_files import parse_yaml

    # the path as argparse reads it, in every spelling it takes: `--config F`, `--config=F`, `-C F`, `-CF`, `-C=F`
    # and abbreviations such as `--confi F` (a scan of argv missed some, and the file's model_args were then dropped)
    find = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    find.add_argument("--config", "-C")
    try:
        path = find.parse_known_args(argv)[0].config
    except argparse.ArgumentError:  # `--config` with no file: lm-eval says so
        return None
    if path is None:
        return None
    try:
        doc = parse_yaml(open(path, encoding="utf-8").read(), path)
    except (OSError, UnicodeDecodeError):
        return None  # lm-eval says what is wrong with the file
    args = doc.get("model_args") if isinstance(doc, dict) else None
    if isinstance(args, str):
        _refuse_twice([kv.split("=", 1)[0].strip() for kv in args.split(",") if kv.strip()])
    return path if args else None


@contextlib.contextmanager
def _model_args_once() -> Iterator[None]:
    """lm-eval's command line merges every `--model_args` value (`a=1,b=2`, `a=1 b=2`, a JSON object, an
    abbreviation such as `--model_ar`, `-aKEY=V`, the option given again) into one dict, keeping the last of a
    repeated key with at most a log line. Its parsing action is wrapped while the command line is read, so that a
    key given twice, in any of those spellings, is refused."""
    try:
        from lm_eval._cli.utils import MergeDictAction, split_top_level
    except ImportError:  # another lm-eval layout: create_from_arg_string still checks the one-string form
        yield
        return
    merge = MergeDictAction.__call__

    def keys_of(value: str) -> list[str]:
        if value.lstrip().startswith("{"):
            objects: list[list[str]] = []  # the keys of each object, innermost first: the outer one is last
            try:
                json.loads(value, object_pairs_hook=lambda kv: objects.append([k for k, _ in kv]) or dict(kv))
            except ValueError:
                return []  # not JSON after all: lm-eval reads it as key=value
            return objects[-1] if objects else []
        return [item.split("=", 1)[0].strip() for item in split_top_level(value) if item.strip()]

    def once(self: Any, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        config = _config_has_model_args(sys.argv[1:]) if self.dest == "model_args" else None
        if config:  # lm-eval then drops the file's model_args whole (a num_loops there is silently not applied)
            raise UserError(f"model_args given both in --config ({config}) and with "
                            f"{option_string or '--model_args'}: lm-eval would keep only the command line's and "
                            "drop the file's; give them in one place")
        if self.dest == "model_args" and values:
            seen = list(getattr(namespace, self.dest, None) or {})
            for v in [values] if isinstance(values, str) else values:
                seen += keys_of(v)
            _refuse_twice(seen)
        merge(self, parser, namespace, values, option_string)

    MergeDictAction.__call__ = once
    try:
        yield
    finally:
        MergeDictAction.__call__ = merge


def _with_run_system(evaluate: Any) -> Any:
    """simple_evaluate giving a fine-tune's chat prompts its data.system_prompt unless told another (as eval-lm)."""
    from lm_eval.utils import simple_parse_args_string

    from .analysis import run_system_prompt

    def with_system(**kw: Any) -> Any:
        margs = kw.get("model_args") or ""
        path = str((margs if isinstance(margs, dict) else simple_parse_args_string(margs)).get("pretrained") or "")
        system = run_system_prompt(path) if kw.get("apply_chat_template") and os.path.isdir(path) else None
        if system and kw.get("system_instruction") is None:  # (they were scored without it)
            print(f"note: the run's data.system_prompt ({system!r:.60}) opens every prompt, as in fine-tuning "
                  "(--system_instruction gives another)")
            kw["system_instruction"] = system
        return evaluate(**kw)

    return with_system


def _cli_evaluate() -> None:
    import lm_eval
    from lm_eval.__main__ import cli_evaluate

    _config_has_model_args(sys.argv[1:])  # its own keys checked before lm-eval reads it
    lm_eval.simple_evaluate = _with_run_system(lm_eval.simple_evaluate)  # (lm-eval's command line calls it)
    try:
        with _model_args_once():
            cli_evaluate()
    except (DatasetGenerationError, StopIteration, IndexError, KeyError, TypeError, ValueError, ImportError,
            AttributeError, SyntaxError) as e:
        if "does not recognize this architecture" in str(e) and any(f"`{t}`" in str(e) for t in ("ouro", "looplm")):
            # transformers' advice, to upgrade it, does not help: the architecture is looplm's own
            raise UserError("lm-eval's hf model does not know this model's architecture (ouro or looplm), and "
                            "upgrading transformers does not help; run it with --model looplm") from None
        told = task_error(e, "--tasks")
        if told is e:
            raise
        raise told from None


if __name__ == "__main__":  # `python -m looplm.hf.lm_eval_adapter <lm_eval args>`: lm-eval's CLI, plus `looplm`
    from ..errors import command, guarded, run_command

    # a refusal (remote code, a bad model_arg, a missing model) is one `error:` line, as in looplm's own CLI; the
    # model is loaded whole in this one process, so a RANK left in the environment does not silence it
    with command("lm-eval"):
        raise SystemExit(run_command(lambda: guarded(_cli_evaluate)))
