"""STARS fine-tuning of a pretrained looped LM (Ouro, or a looplm export): what is its own.

The training loop, the objective, the schedule, the checkpoint writer and the metrics are looplm's one
trainer (`looplm.train.fit`); this module gives it
- the model and tokenizer, loaded with looplm's own code (never the directory's: `trust_remote_code=False`);
- the data: chat or prompt/response records tokenized with assistant-only targets (looplm.hf.data.ChatTask);
- the checkpoint's model files: an HF model directory (config, safetensors, generation config, tokenizer), so
  a checkpoint loads with `from_pretrained` as it is.

The paper's Ouro setting is the default for a pretrained model's run (config.HF_DEFAULTS): loop counts
round(lognormal(1.7, 0.4)) clipped to [1, 16], JSRR with λ = 0.1, lr 1e-6. Plain SFT is `reg.kind=none`.
Weights stay float32 (master weights); on CUDA the forward runs under bf16 autocast.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..config import Config, ConfigError
from ..errors import UserError, emptiness, rank_zero, special_kind
from ..records import lone_surrogate
from ..tasks import save_fingerprint
from ..train import Run
from .chat import CHATML_TEMPLATE, TemplateError, assistant_spans, end_of_turn_token, no_default_template
from .data import ChatTask, build_examples, check_format, load_records, past_positions, quiet_hub
from .data_hints import folder_template
from .paths import expand_home, refuse_missing

TEMPLATE_LIMIT = 2**20  # characters of a data.chat_template file


def chat_template(spec: str | None, named: dict[str, str] | None = None) -> str | None:
    """data.chat_template: None (the tokenizer's own), the name of one of the tokenizer's `named` templates
    (tokenizer_config.json's list of {name, template}), `chatml`, a .jinja file, or a Jinja string. A named template
    called `chatml` is the tokenizer's own: it was passed over for looplm's built-in ChatML without a word."""
    if spec is None:
        return None
    if not spec.strip():  # ("" was read as the folder ".", and refused as one)
        raise ConfigError(f"data.chat_template is {emptiness(spec)}; leave it out (the tokenizer's own template), "
                          "or give chatml, a template file or a Jinja template")
    if named and spec in named:
        return named[spec]
    if spec == "chatml":
        return CHATML_TEMPLATE
    p = Path(spec).expanduser()
    if spec.endswith(".jinja") or (len(spec) < 300 and p.is_file()):
        if special_kind(p):  # (a link to) /dev/zero was read until memory ran out, said as "lower the batch size"
            raise ConfigError(f"data.chat_template: {p} is {special_kind(p)}, not a template file")
        try:
            # at most the limit (a file in /proc says its size is 0); a BOM (Notepad's "UTF-8 with BOM") is no part
            # of the template: read as text, it opened every example and every later prompt
            with p.open(encoding="utf-8-sig") as f:
                text = f.read(TEMPLATE_LIMIT + 1)
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"data.chat_template: template file {p} cannot be read ({e})") from None
        if len(text) > TEMPLATE_LIMIT:
            raise ConfigError(f"data.chat_template: {p} is longer than {TEMPLATE_LIMIT:,} characters, which no chat "
                              "template is (the largest published ones are tens of thousands); check the path")
        _refuse_non_template(text, p)
        return text
    if not named and spec in ("default", "tool_use", "rag"):  # names a tokenizer_config.json list of templates has
        raise ConfigError(f"data.chat_template={spec!r}: the tokenizer has no named chat templates (its template, if "
                          "any, is one string); leave data.chat_template out to use its own template, or give chatml, "
                          "a template file or a Jinja template")
    if "{{" not in spec and "{%" not in spec:  # a mistyped name would otherwise render as constant text
        names = f"one of the tokenizer's named templates ({', '.join(sorted(named))}), " if named else ""
        folder = f"; {folder_template(p)}" if len(spec) < 300 and p.is_dir() else ""
        raise ConfigError(f"data.chat_template={spec!r} is neither chatml, {names}a template file, nor a Jinja "
                          "template (text with {{ ... }} or {% ... %})" + folder)
    return spec


def _check_system_prompt(tokenizer: Any, template: str | None, prompt: str | None) -> None:
    """A template that refuses system turns (Gemma 2's) named the first record, whose system turn was
    data.system_prompt's: that setting is tried on its own first."""
    if not prompt:
        return
    try:
        assistant_spans(tokenizer, [{"role": "system", "content": prompt}, {"role": "user", "content": "1"},
                                    {"role": "assistant", "content": "2"}], template)
    except TemplateError as e:
        raise TemplateError(f"data.system_prompt: {e}") from None


def no_stop(tokenizer: Any, template: str | None) -> str | None:
    """For a template whose turn end is no special token (end_of_turn_token found none): what keeps the fine-tune
    from stopping, or None where the turn still ends in eos_token. ChatML on a tokenizer without <|im_end|> (GPT-2's,
    Pythia's) trained its text pieces, never eos, and generation, which stops at eos only, ran to max_new_tokens.
    A note, not a refusal: stop strings (lm-eval's `until`, vLLM's `stop`) still end such a reply."""
    text, spans = assistant_spans(tokenizer, [{"role": "user", "content": "1"}, {"role": "assistant", "content": "2"}],
                                  template)
    end = text[spans[-1][0] + 1:spans[-1][1]] if spans else ""  # after the reply "2"
    if tokenizer.eos_token and tokenizer.eos_token in end:
        return None
    how = f"with {end!r}, which is no special token of the tokenizer," if end else "with nothing after its reply,"
    return (f"the chat template ends an assistant turn {how} and not with eos_token {tokenizer.eos_token!r}: the "
            "model never learns to end a reply with a token generate() stops at, only with text; add the end-of-turn "
            "marker to the tokenizer as a special token, or use a template that ends a turn with eos_token (stop "
            "strings, such as lm-eval's `until`, still stop it)")


def _refuse_non_template(text: str, path: Path) -> None:
    """A template file that is JSON (a tokenizer_config.json holding a chat_template key, a data file) or holds no
    Jinja was rendered as a template: its text became every example, and the error was about the data."""
    try:
        doc = json.loads(text)
    except ValueError:
        first = text.lstrip().split("\n", 1)[0]
        try:  # a JSONL data file: its first line is a JSON object
            doc = json.loads(first) if first.startswith("{") else None
        except ValueError:
            doc = None
    if isinstance(doc, dict) and isinstance(doc.get("chat_template"), str):
        raise ConfigError(f"data.chat_template: {path} is a JSON file, not a template; it holds a chat_template key: "
                          "leave data.chat_template unset to use the tokenizer's own (model.tokenizer names its "
                          "folder), or write that template to a .jinja file and name the file")
    if doc is not None or ("{{" not in text and "{%" not in text):
        what = "a JSON file" if doc is not None else "a file with no Jinja"
        raise ConfigError(f"data.chat_template: {path} is {what}, not a chat template (text with {{{{ ... }}}} or "
                          "{% ... %}); name a .jinja template file, chatml, or a Jinja string")


def _refuse_native_run(path: str) -> None:
    """model.name_or_path must name a pretrained HF model, not a run of looplm's own model."""
    from ..checkpoint import CheckpointError, load_config

    if not Path(path).exists():
        return  # a hub id
    try:
        kind = load_config(path).kind
    except CheckpointError:  # an HF model directory (or nothing looplm reads): transformers decides
        return
    if kind == "native":
        raise ConfigError(f"model.name_or_path: {path} is a run of looplm's own model, not a pretrained HF model; "
                          f"fine-tune it with `looplm train` and train.init_from={path}, or convert it with "
                          "`looplm export-hf` first")


def check_model_type(path: str, revision: str | None = None) -> None:
    """Refuse a model whose type transformers (with looplm's registrations) does not know: loading it would need
    the directory's own code, which looplm never runs."""
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig

    from .registry import register

    register()
    from .analysis import config_problem

    problem = config_problem(path)
    if problem is not None:
        raise UserError(problem)
    try:
        with quiet_hub(), quiet_transformers():
            AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=False)
    except OSError as e:
        if Path(path).exists():
            raise
        what = f"revision {revision!r} of {path}" if revision else path  # (a cached model at another revision)
        raise UserError(f"{what} is neither a local model directory nor a hub model that can be reached "
                        f"({str(e).strip().splitlines()[0][:160]})") from None
    except (ValueError, TypeError, KeyError, ZeroDivisionError) as e:  # (the config class's refusals)
        # transformers asks for trust_remote_code when the model type is not one it knows
        if isinstance(e, ValueError) and any(s in str(e) for s in ("trust_remote_code", "Unrecognized model",
                                                                    "does not recognize")):
            raise UserError(f"{path}: its model type needs the directory's own code, which looplm never runs; "
                            "looplm loads Ouro and looplm exports natively") from None
        where = Path(path) / "config.json" if Path(path).is_dir() else path  # a value its config class refuses
        raise UserError(f"{where}: {_first_line(e)}") from None
    except StrictDataclassError as e:  # transformers' own validators (layer_types): no ValueError, a traceback
        where = Path(path) / "config.json" if Path(path).is_dir() else path
        said = (str(e.__cause__ or e).strip().splitlines() or [type(e).__name__])[0]  # whole: ends with the value
        raise UserError(f"{where}: {said.replace('`', '')}") from None


def check_local(path: str, revision: str | None = None) -> None:
    """What a local model directory must be before anything is parsed: not a revision (that names a hub
    branch), and, when it is a looplm checkpoint (a manifest), every file whole."""
    from ..checkpoint import MANIFEST, verify

    p = Path(path)
    if not p.exists():
        refuse_missing(path)  # ./x, ../x, a/b/c: no hub id, a mistyped folder
        return  # a hub id
    if revision:
        raise ConfigError(f"model.revision={revision!r} chooses a hub revision; {path} is a local directory")
    if not p.is_dir():
        raise UserError(f"{path} is a file, not a model directory")
    if not (p / "config.json").is_file():
        from .analysis import find_model_dir

        hint = (" (a `looplm finetune` run: its model is in checkpoint/)" if find_model_dir(p) is not None else
                " (a run of looplm's own model: `looplm export-hf` converts it)" if (p / "checkpoint").is_dir() else "")
        raise UserError(f"{path} has no config.json: not a Hugging Face model directory{hint}")
    if (p / MANIFEST).is_file():
        verify(p)  # a fine-tune's checkpoint: damaged files are refused, as --resume refuses them


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """A load without transformers' progress bar, load report and torch's pickle warnings on stderr: a command
    prints its own one line (what is wrong with a load is raised, from the loading info, not logged)."""
    import warnings

    from transformers.utils import logging as tf_logging

    bar, level = tf_logging.is_progress_bar_enabled(), tf_logging.get_verbosity()
    tf_logging.disable_progress_bar()
    tf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        tf_logging.set_verbosity(level)
        if bar:
            tf_logging.enable_progress_bar()


def load_pretrained(path: str, revision: str | None = None, dtype: torch.dtype | str = torch.float32) -> Any:
    """A looped HF causal LM through looplm's registered classes; the directory's own code never runs. Every
    user error is one UserError: a damaged checkpoint, weights that do not cover the model its config describes
    (transformers would initialize the rest at random), a pickle (never unpickled past plain tensors), a
    truncated safetensors file, and a model that does not loop."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    from ..looped import check_looped, eval_mode
    from .configuration_ouro import check_token_ids

    check_local(path, revision)
    check_model_type(path, revision)
    check_generation_config(path)
    try:
        with quiet_transformers():
            model, info = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, revision=revision,
                                                               trust_remote_code=False, output_loading_info=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):  # not a pickle at all: random bytes, a cut-off file
            raise UserError(f"{path}: its weights file is damaged or not a weights file ({_first_line(e)})") from None
        named = re.search(r"GLOBAL ([\w.]+)", str(e))  # torch's weights-only unpickler stopped there: nothing ran
        raise UserError(f"{path}: its weights are a pickle holding more than plain tensors"
                        f"{f' ({named.group(1)})' if named else ''}, which looplm never loads; convert them to "
                        "safetensors") from None
    except SafetensorError as e:
        raise UserError(f"{path}: a safetensors file is damaged or incomplete ({e})") from None
    except RuntimeError as e:
        if "ignore_mismatched_sizes" in str(e):  # its report is one that quiet_transformers kept off stderr
            raise UserError(f"{path}: its weights have other shapes than the model its config describes (a "
                            "config.json of another model size?)") from None
        if "PytorchStreamReader" in str(e) or "zip archive" in str(e):
            raise UserError(f"{path}: its pytorch_model.bin is damaged or incomplete ({_first_line(e)})") from None
        raise
    missing, wrong = sorted(info.get("missing_keys") or []), sorted(info.get("mismatched_keys") or [], key=str)
    # tensors the config has no place for (weights of a bigger model under a smaller config) would be dropped;
    # rotary frequency buffers that old checkpoints carry are recomputed, not weights
    extra = sorted(k for k in info.get("unexpected_keys") or [] if not k.endswith("inv_freq"))
    if missing or wrong or extra:
        shown = ", ".join(str(k if isinstance(k, str) else k[0]) for k in [*missing, *wrong, *extra][:4])
        raise UserError(f"{path}: its weights do not match the model its config describes ({len(missing)} missing, "
                        f"{len(wrong)} of another shape, {len(extra)} it has no place for: {shown}"
                        f"{', ...' if len(missing) + len(wrong) + len(extra) > 4 else ''})")
    bad = [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:  # every logit would be NaN, and a multiple-choice score would still come out (argmax of NaNs)
        raise UserError(f"{path}: its weights are not finite ({len(bad)} tensor(s): {', '.join(bad[:3])}"
                        f"{', ...' if len(bad) > 3 else ''}); looplm does not score or train such a model")
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    if getattr(model.config, "tie_word_embeddings", False) and head is not None and head.weight is not emb.weight:
        # the file held its own head, which transformers kept: say so in the config, or a later tie_weights()
        # (lm-eval's) would swap in the embedding and score a model that exists nowhere on disk
        model.config.tie_word_embeddings = False
    try:
        check_looped(model)
    except TypeError as e:
        raise UserError(f"{path}: {e}") from None
    try:  # config.json's ids are checked by its config class; a string "0" here was a TypeError in generate()
        check_token_ids(model.generation_config, model.get_input_embeddings().num_embeddings)
    except ValueError as e:
        where = Path(path) / "generation_config.json" if Path(path).is_dir() else f"{path}'s generation config"
        raise UserError(f"{where}: {e}") from None
    # finite weights under a config that makes every logit NaN (a rope_theta or an eps no check knows of): scored
    # anyway, a multiple-choice argmax of NaNs came out as 100%. One forward of two tokens finds it.
    with torch.no_grad(), eval_mode(model):  # (each submodule's mode back, even if the forward raises)
        # one loop: a config's NaN shows there, and its default depth (total_ut_steps: 200000) took minutes
        logits = model(torch.tensor([[1, 2]]) % model.get_input_embeddings().num_embeddings, num_loops=1,
                       use_cache=False).logits
    readable = logits[..., : getattr(model.config, "tokenizer_vocab_size", 0) or None]  # an export's padded ids: -inf
    if not bool(torch.isfinite(readable).all()):
        raise UserError(f"{path}: its logits are not finite on a two-token input, though its weights are (a value "
                        "in config.json such as rope_theta or rms_norm_eps, or weights so large that the forward "
                        "overflows); looplm does not score or train such a model")
    return model


def check_generation_config(path: str) -> None:
    """A local model directory's generation_config.json as transformers reads it with the model, refused in one
    line naming the file: its own refusal (`max_new_tokens` -5) named no file, and a list pad_token_id was a
    TypeError traceback inside its checks."""
    from transformers import GenerationConfig

    from .configuration_ouro import check_token_ids

    f = Path(path) / "generation_config.json"
    if not f.is_file():
        return
    try:
        gen, conf = json.loads(f.read_text()), json.loads((Path(path) / "config.json").read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{f}: not valid JSON ({_first_line(e)})") from None
    try:
        vocab = conf.get("vocab_size") if isinstance(conf, dict) else None
        if isinstance(gen, dict) and isinstance(vocab, int) and not isinstance(vocab, bool):
            check_token_ids(gen, vocab)
        with quiet_transformers():
            GenerationConfig.from_pretrained(path)
    except (ValueError, TypeError) as e:
        raise UserError(f"{f}: {_first_line(e).replace('`', '')}") from None


def check_vocab(tokenizer: Any, model: Any, named: str, hint: str) -> None:
    """Refuse a tokenizer with more tokens than the model's embedding has rows: an id past them was an IndexError
    deep inside the first forward (finetune, eval-lm and analyze alike)."""
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise UserError(f"{named} has {len(tokenizer)} tokens but the model's embedding has {rows} rows; {hint}")


def check_readable_targets(model: Any, examples: list, tokenizer: Any, src: str) -> None:
    """Refuse targets at ids past an export's tokenizer_vocab_size: every reader (forward, generate, eval-lm)
    masks them to -inf, so the fine-tune would teach a token the model can never emit (a turn-end token added by
    an older resize_token_embeddings), and analyze refuses the same targets. Refused, not widened: the config
    is the model's own word on which ids it decodes."""
    width = getattr(model.config, "tokenizer_vocab_size", 0) or 0
    past = sorted({i for e in examples for i in e.labels if i >= width}) if width else []
    if past:
        shown = ", ".join(f"{i} {tokenizer.convert_ids_to_tokens(i)!r}" for i in past[:4])
        raise UserError(f"{src}: the targets hold token id(s) {shown} at or past its tokenizer_vocab_size {width}, "
                        "which every reader masks (the model could never emit them); set tokenizer_vocab_size to "
                        f"{len(tokenizer)} in its config.json, or redo resize_token_embeddings with this looplm")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def require_tokenizer(path: str | Path) -> None:
    """A local folder without tokenizer files (an export of looplm's own character-level model has none)
    would reach transformers' fallbacks, whose error is about installing sentencepiece: say what is missing."""
    p = Path(path)
    if p.is_dir() and not any((p / f).is_file() for f in TOKENIZER_FILES):
        raise UserError(f"{p} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); copy one in, "
                        "or (finetune) name one with model.tokenizer")


def load_tokenizer(path: str, revision: str | None = None) -> Any:
    """The tokenizer of an HF model directory or hub id; one that needs the directory's own code is refused."""
    from transformers import AutoTokenizer

    require_tokenizer(path)
    if Path(path).is_file():
        raise UserError(f"{path} is a file, not a tokenizer (give a model directory or a folder with tokenizer.json)")
    try:
        with quiet_hub(), quiet_transformers():
            tok = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=False)
    except (OSError, ValueError) as e:
        if not Path(path).exists() and (path.startswith(("/", ".", "~")) or path.count("/") > 1):
            # a path that is not there (transformers reads it as a hub id, and replies about repo id syntax)
            raise UserError(f"{path}: no such tokenizer folder") from None
        if not Path(path).exists():
            raise UserError(f"{path} is neither a local folder nor a hub tokenizer that can be reached "
                            f"({_first_line(e)[:160]})") from None
        if isinstance(e, OSError):
            raise
        if isinstance(e, UnicodeDecodeError):  # the codec's message named neither the folder nor the file
            from .tokenizer import not_utf8

            bad = not_utf8(path) if Path(path).is_dir() else None
            raise UserError(f"{path}: its tokenizer files are not valid UTF-8 ({bad or _first_line(e)})") from None
        # transformers asks for trust_remote_code when the tokenizer class is the folder's own
        if "trust_remote_code" in str(e):
            raise UserError(f"{path}: its tokenizer needs the directory's own code, which looplm never runs; give "
                            "a folder whose tokenizer transformers knows (tokenizer.json)") from None
        if isinstance(e, json.JSONDecodeError) or "JSON" in str(e) or "Expecting" in str(e):
            raise UserError(f"{path}: its tokenizer files are not valid JSON ({_first_line(e)})") from None
        raise
    except Exception as e:
        if type(e) is Exception:  # the tokenizers library raises plain Exception for a malformed tokenizer.json
            raise UserError(f"{path}: its tokenizer files cannot be read ({_first_line(e)})") from None
        raise
    limit = getattr(tok, "model_max_length", None)
    if isinstance(limit, bool) or not isinstance(limit, int | float):  # compared with every encoding's length:
        # a string was a TypeError traceback in the first tokenizer call (finetune, eval-lm, analyze)
        where = Path(path) / "tokenizer_config.json" if Path(path).is_dir() else f"{path}'s tokenizer_config.json"
        raise UserError(f"{where}: model_max_length must be an integer (the longest input in tokens), got {limit!r}")
    # transformers reads chat_template.jinja as UTF-8 and keeps a BOM (an editor's "UTF-8 with BOM") as text that
    # every training example and prompt (eval-lm, analyze, the adapter) would start with
    if isinstance(tok.chat_template, str):
        tok.chat_template = tok.chat_template.removeprefix("\ufeff")
    elif isinstance(tok.chat_template, dict):
        tok.chat_template = {k: v.removeprefix("\ufeff") if isinstance(v, str) else v
                             for k, v in tok.chat_template.items()}
    return tok


def check_memory(model: Any, cfg: Config, longest: int, device: torch.device) -> None:
    """Refuse, before the run starts, a fine-tune whose gradients, AdamW state and activations cannot fit beside its
    loaded weights: the native runs' estimate (`looplm.train.check_memory`, float32 activations, a lower bound that
    leaves attention's own memory out) for an HF model's layers, on micro-batches of `longest` tokens (a micro-batch
    is padded to its longest row). Without it loops.max_loops=100000 allocated until the machine's memory was gone.
    With model.gradient_checkpointing each layer keeps only its input (and the norm that ends an Ouro loop two
    floats a token), one layer recomputed at a time; with loops.checkpoint_loops each loop keeps only its input.
    Every layer run with a graph also costs autograd's records of it (`memory.GRAPH_BYTES_PER_LAYER`), which is
    what a checkpointed loop of a narrow model mostly holds."""
    from .. import memory
    from ..loops import training_range

    c, lp, t = model.config, cfg.loops, cfg.train
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    shard = t.batch_size // world
    micro = min(t.micro_batch_size or shard, shard)  # as the trainer splits this process's share
    width, d_ff = c.hidden_size, getattr(c, "intermediate_size", None) or getattr(c, "d_ff", 0)
    looped = getattr(c, "n_core", None) or c.num_hidden_layers  # Ouro loops its whole stack
    per_layer = 10 * width + 2 * d_ff  # floats a layer keeps per token for its backward (the native count)
    deepest = training_range(lp)[1]
    span = min(lp.backprop_loops or deepest, deepest)  # the loops a step backpropagates through
    loop, top = (width * (looped + 2), per_layer) if cfg.model.gradient_checkpointing else (per_layer * looped, 0)
    if lp.checkpoint_loops:
        loop, top = width, top + loop
    floats = span * loop + top + (c.num_hidden_layers - looped) * per_layer  # (a looplm export's prelude and coda)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    state = 12 * trained // (world if t.strategy == "fsdp" else 1)  # gradients and AdamW's two moments (sharded)
    # autograd's own bookkeeping, per layer run with a graph whatever its width, checkpointed or not: at width 32
    # with loops.checkpoint_loops it was ~30x the states counted, and a million loops passed (it is host memory)
    passes = span * looped + c.num_hidden_layers - looped
    try:
        memory.require_training(
            state + 4 * micro * longest * floats, passes,
            f"{trained:,} trained parameters ({c.num_hidden_layers} layers of width {width}) with micro-batches of "
            f"{micro} sequences of up to {longest} tokens and up to {span} loops with a graph", device)
    except UserError as e:
        layers = getattr(model, "supports_gradient_checkpointing", False) and not cfg.model.gradient_checkpointing
        more = [f"{k}=true" for k, off in (("model.gradient_checkpointing", layers),  # (a looplm export has none)
                                           ("loops.checkpoint_loops", not lp.checkpoint_loops)) if off]
        raise UserError(f"{e}; lower loops.max_loops (or loops.backprop_loops), train.micro_batch_size or "
                        f"data.max_length{', or set ' + ' or '.join(more) if more else ''}") from None


def hf_run(cfg: Config, device: torch.device, resume_from: Path | None) -> Run:
    """The pretrained model (or the run's own checkpoint), its tokenizer and the chat task, for `fit`."""
    from ..checkpoint import RUN_CONFIG, verify

    m, d, t = cfg.model, cfg.data, cfg.train
    for key in ("system_prompt", "chat_template"):  # text of every render: the tokenizer's TypeError traceback
        if lone_surrogate(getattr(d, key), key) is not None:
            raise ConfigError(f"data.{key} holds a lone surrogate escape (\\ud800 to \\udfff: valid in YAML and "
                              "JSON, but no character, so no tokenizer encodes it); write it without one")
    if resume_from is not None:
        verify(resume_from)  # every file against the manifest before transformers parses any of them
    # ~ expanded as in data.source (a YAML config reaches no shell; `~/models/x` was taken for a hub id)
    src = str(resume_from) if resume_from is not None else expand_home(m.name_or_path, "model.name_or_path")
    tok_src = str(resume_from) if resume_from is not None else (
        expand_home(m.tokenizer, "model.tokenizer") if m.tokenizer else src)
    rev = None if resume_from is not None else m.revision
    _refuse_native_run(src)
    check_local(src, rev)
    check_model_type(src, rev)
    tokenizer = load_tokenizer(tok_src, rev)
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"tokenizer {tok_src} is not a fast tokenizer; assistant masks need character offsets")
    templates = tokenizer.chat_template if isinstance(getattr(tokenizer, "chat_template", None), dict) else None
    template = chat_template(d.chat_template, templates)
    if template is None and not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"data.chat_template: tokenizer {tok_src} has no chat template; set one (e.g. chatml)")
    if template is None and no_default_template(tokenizer):
        raise ConfigError(f"data.chat_template: tokenizer {tok_src}: {no_default_template(tokenizer)}, or choose "
                          "one with data.chat_template=NAME")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise UserError("the tokenizer has neither a pad nor an eos token to pad with")
    records = load_records(d.source, d.split, d.config_name, d.max_samples, d.subset, t.seed)
    check_format(records, d)
    named = f"the chat template of {tok_src}"
    if d.chat_template is not None:  # a name, a file, or a Jinja string (shortened)
        shown = d.chat_template if len(d.chat_template) <= 200 else d.chat_template[:40] + "..."
        named = f"data.chat_template={shown!r}"
    try:  # a two-turn conversation first: a broken template says so before any record is read
        eot = end_of_turn_token(tokenizer, template)
        _check_system_prompt(tokenizer, template, d.system_prompt)
        examples, stats = build_examples(records, tokenizer, d.max_length, d.overlong, template, fmt=d.format,
                                         messages_field=d.messages_field, prompt_field=d.prompt_field,
                                         response_field=d.response_field, system_prompt=d.system_prompt)
    except TemplateError as e:
        raise ConfigError(f"{named}: {e}") from None
    if rank_zero():
        print(stats.summary(d.max_length, d.overlong))
    torch.manual_seed(t.seed)
    model = load_pretrained(src, rev).to(device)
    # found now, before the run's directory exists, not at the first step that meets them
    check_vocab(tokenizer, model, f"the tokenizer {tok_src}", "give the model's own tokenizer (model.tokenizer)")
    check_readable_targets(model, examples, tokenizer, src)
    # past its position table a model trains on positions it was never built for: a looplm export's learned ones
    # cannot go further, Ouro's rotary ones run on without an error (analyze and lm-eval stop there)
    positions = next((v for k in ("max_seq_len", "max_position_embeddings")
                      if isinstance(v := getattr(model.config, k, None), int)), None)
    longest = max(len(e.input_ids) for e in examples)
    if positions is not None and longest > positions:
        raise ConfigError(past_positions(examples, positions, d.overlong, src))
    if (said := pad_first(model, examples, pad_id)) and rank_zero():
        print(f"note: {said}")
    if template is not None:  # saved with the checkpoints; a tokenizer's named templates stay (a resume names one)
        tokenizer.chat_template = {**templates, "default": template} if templates else template
    if eot is None and rank_zero():
        print(f"note: {no_stop(tokenizer, template)}")
    if eot is not None:  # stop generation at the template's end of turn, not only at the base eos token
        gc = model.generation_config
        eos = gc.eos_token_id if isinstance(gc.eos_token_id, list) else [gc.eos_token_id]
        gc.eos_token_id = sorted({e for e in eos if e is not None} | {eot})
    if m.gradient_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise ConfigError(f"model.gradient_checkpointing: {type(model).__name__} does not support per-layer "
                              "checkpointing; set it to false (loops.checkpoint_loops recomputes whole loops)")
        (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    gate = [p for name, p in model.named_parameters() if "early_exit_gate" in name]
    if gate and not m.freeze_exit_gate:  # the objective never reads the gate: it would not train, and DDP would
        raise ConfigError("model.freeze_exit_gate=false: this objective (CE after the sampled loops, plus the "  # fail
                          "penalty) never reads the early-exit gate, so its weights would get no gradient and stay as "
                          "they are; leave it true")
    for p in gate:
        p.requires_grad_(False)
    check_memory(model, cfg, longest, device)

    task = ChatTask(examples, pad_id, t.seed)
    task.paths = [d.source]
    # the digest is of the encoded examples: an edited template file changes them as an edited data file does
    task.made_from = f"{d.source} through {named} (data.max_length={d.max_length})"
    if "strftime_now" in str(template or tokenizer.chat_template):  # (a date_string it ignores: chat.DATE)
        task.made_from += " (its chat template writes the day's date, strftime_now, which changes what it renders)"
    if cfg.loops.sampler == "fixed":  # trained at exactly this depth: the checkpoint's default depth at inference
        field = "total_ut_steps" if hasattr(model.config, "total_ut_steps") else "num_loops"  # Ouro; an export
        setattr(model.config, field, cfg.loops.num_loops)
        if getattr(model.generation_config, "num_loops", None) is not None:  # the base's own: generate() reads it
            model.generation_config.num_loops = cfg.loops.num_loops  # before the config, so it moves with the depth

    def write_model(folder: Path, weights: dict[str, torch.Tensor]) -> None:
        with quiet_transformers():  # no progress bar per checkpoint
            model.save_pretrained(folder, state_dict=weights, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        (folder / RUN_CONFIG).write_text(cfg.to_json())
        (folder / "data_stats.json").write_text(json.dumps(stats.to_json(), indent=1) + "\n")
        save_fingerprint(task, folder)

    return Run(model, task, write_model)


def pad_first(model: Any, examples: list, pad_id: int) -> str | None:
    """Why steps may be non-finite, or None: examples that open with the pad id (a template's bos_token where bos is
    the pad token, Ouro's id 0) start from its embedding row, which padding_idx keeps at zero; an exactly-zero state
    at position 0 (causal attention sees only itself there) meets RMSNorm's backward at 1/sqrt(eps), and a few loops
    (5 of the tiny test model) overflow its gradients to inf, every such step skipped as non-finite."""
    emb = model.get_input_embeddings()
    if getattr(emb, "padding_idx", None) != pad_id:
        return None
    n = sum(1 for e in examples if len(e.input_ids) and int(e.input_ids[0]) == pad_id)
    if not n:
        return None
    return (f"{n} of {len(examples)} examples open with the pad token (id {pad_id}; the chat template's bos_token is "
            "the pad token here, as in Ouro), whose embedding is kept at zero: at more loops their gradients can "
            "overflow, and such steps are skipped as non-finite; use a chat template without bos_token, or give the "
            "tokenizer a pad token distinct from bos")

