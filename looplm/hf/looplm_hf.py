"""looplm's LoopedTransformer as a transformers model (`model_type="looplm"`), so checkpoints trained with
looplm load through `AutoModelForCausalLM` and decode with `generate()`.

`LooplmForCausalLM.model` is the LoopedTransformer itself, so weight names are the looplm checkpoint's names
with a `model.` prefix. The model has learned absolute positions and no KV cache: `generate()` reruns the loop
on the whole prefix each step (exact; cheap at looplm's lengths), and prompts must not be left-padded.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, GenerationMixin, PretrainedConfig, PreTrainedModel

from .. import rundir
from ..config import ConfigError, ModelConfig
from ..errors import UserError
from ..looped import check_loop_kwargs, loop_count, run_loop
from ..model import LoopedTransformer
from ..outputs import check_out_folder, check_outside_data, not_a_file
from .configuration_ouro import check_default_loops, check_model_type, check_token_ids, loop_kwargs
from .flags import check_flag
from .generation import LoopGeneration
from .inputs import PACKING_KWARGS, check_unknown_kwargs, sdpa_only
from .modeling_ouro import OuroCausalLMOutput, causal_lm_loss, check_no_attentions, output_flag

_MODEL_FIELDS = [f.name for f in dataclasses.fields(ModelConfig)]
_KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


class LooplmConfig(PretrainedConfig):
    """The `model` section of a looplm config, plus `num_loops`: the default loop count at inference, and
    `tokenizer_vocab_size`: the ids the run's tokenizer can decode (0: all of `vocab_size`). A head wider than the
    tokenizer (the addition presets: 16 rows, 14 tokens) never predicts the ids past it, as `looplm generate`."""

    model_type = "looplm"
    attribute_map = {"hidden_size": "d_model", "num_attention_heads": "n_heads",
                     "max_position_embeddings": "max_seq_len"}

    def __init__(self, num_loops: int = 4, tokenizer_vocab_size: int = 0, **kwargs: Any) -> None:
        defaults = dataclasses.asdict(ModelConfig())
        for name in _MODEL_FIELDS:
            setattr(self, name, kwargs.pop(name, defaults[name]))
        self.num_loops = check_default_loops("num_loops", num_loops)  # (refused where it is written)
        width = tokenizer_vocab_size
        if isinstance(width, bool) or not isinstance(width, numbers.Integral) or width < 0 or (
                self.vocab_size >= 1 and width > self.vocab_size):
            raise ValueError(f"tokenizer_vocab_size must be an integer from 0 (every id) to vocab_size "
                             f"{self.vocab_size}, got {width!r}")
        self.tokenizer_vocab_size = int(width)
        if self.vocab_size >= 1:  # (0: the task's vocabulary, resolved when a run starts) as OuroConfig checks them
            check_token_ids(kwargs, self.vocab_size)
        self.num_hidden_layers = self.n_prelude + self.n_core + self.n_coda
        kwargs.setdefault("tie_word_embeddings", False)  # the head reads tok_emb directly; nothing to tie
        kwargs.setdefault("use_cache", False)
        super().__init__(**kwargs)
        self.model_config()  # validate now, with looplm's messages

    def model_config(self) -> ModelConfig:
        for f in dataclasses.fields(ModelConfig):  # ModelConfig's own checks compare: "32" < 1 named no field
            value, kind = getattr(self, f.name), type(f.default)
            if kind is bool:
                ok = isinstance(value, bool)
            else:
                ok = not isinstance(value, bool) and isinstance(value, {int: numbers.Integral, float: numbers.Real}.get(
                    kind, kind))
            if not ok:
                raise ValueError(f"invalid looplm model config: {f.name} must be {_KINDS[kind]}, got {value!r}")
        try:
            return ModelConfig(**{name: getattr(self, name) for name in _MODEL_FIELDS})
        except (ConfigError, TypeError) as e:
            raise ValueError(f"invalid looplm model config: {e}") from None

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> Any:
        check_model_type(cls, config_dict)  # an Ouro config.json: refused, not a random looplm model
        return super().from_dict(config_dict, **loop_kwargs(kwargs, ("num_loops",)))

    @classmethod
    def from_model_config(cls, cfg: ModelConfig, num_loops: int = 4, **kwargs: Any) -> LooplmConfig:
        return cls(num_loops=num_loops, **dataclasses.asdict(cfg), **kwargs)


class LooplmForCausalLM(LoopGeneration, PreTrainedModel, GenerationMixin):
    config_class = LooplmConfig
    config: LooplmConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["Block"]
    _supports_sdpa = True  # (LoopedTransformer's attention is F.scaled_dot_product_attention)

    def get_correct_attn_implementation(self, requested_attention: str | None, is_init_check: bool = False) -> str:
        return sdpa_only(type(self).__name__, requested_attention)

    def __init__(self, config: LooplmConfig) -> None:
        super().__init__(config)
        self.model = LoopedTransformer(config.model_config())
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        """LoopedTransformer initializes itself (with its residual-branch scaling); keep that."""

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # no KV cache: generate() must not create one

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.model.tok_emb

    def set_input_embeddings(self, value: torch.nn.Embedding) -> None:
        self.model.tok_emb = value

    def resize_token_embeddings(self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None,
                                mean_resizing: bool = True) -> torch.nn.Embedding:
        """transformers' resize, with the vocabulary fields it does not know of kept in step: the inner model's
        vocab_size (its forward refused the new ids) and tokenizer_vocab_size. The `new_num_tokens` asked for are
        the tokenizer's (tokens added for chat turns), so they are readable; rows padded past them are not. (Left
        at the export's width, every reader masked the added tokens to -inf: a fine-tune taught a turn-end token
        the model could then never emit.)"""
        old = self.config.tokenizer_vocab_size or self.config.vocab_size  # (before transformers sets vocab_size)
        emb = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        if new_num_tokens is None and pad_to_multiple_of is None:
            return emb  # (transformers' way to read the embedding: nothing resized)
        rows = emb.num_embeddings
        self.model.cfg = dataclasses.replace(self.model.cfg, vocab_size=rows)
        self.config.vocab_size = rows
        self.config.tokenizer_vocab_size = min(rows, old if new_num_tokens is None else new_num_tokens)
        return emb

    # The looped-model protocol (looplm.looped), delegated to the LoopedTransformer.
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        return self.model.embed(input_ids, attention_mask)

    def step(self, h: torch.Tensor, ctx, loop: int = 0) -> torch.Tensor:
        return self.model.step(h, ctx, loop)

    def readout(self, h: torch.Tensor, ctx) -> torch.Tensor:
        return self.model.readout(h, ctx)

    def loop_units(self) -> list[torch.nn.Module]:
        return self.model.loop_units()

    @property
    def pointwise_readout(self) -> bool:
        return self.model.pointwise_readout

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                                      num_loops: int | None = None, token_type_ids: Any = None,
                                      **kwargs: Any) -> dict[str, Any]:
        # Without a cache, every step sees the whole sequence (never only the newest token). generate()'s
        # output_hidden_states / output_attentions go on to forward, which refuses them (they were dropped here).
        asked = {k: kwargs[k] for k in ("output_hidden_states", "output_attentions") if k in kwargs}
        return {"input_ids": input_ids, "attention_mask": attention_mask, "num_loops": num_loops,
                "token_type_ids": token_type_ids, **asked}  # (the forward checks them: one segment)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, num_loops: int | None = None, logits_to_keep: int = 0,
                output_loop_logits: bool = False, return_dict: bool | None = None, num_items_in_batch: Any = None,
                position_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                output_hidden_states: bool | None = None, output_attentions: bool | None = None,
                token_type_ids: Any = None, **kwargs: Any) -> OuroCausalLMOutput | tuple:
        """Logits after `num_loops` loops (default `config.num_loops`). `labels` are shifted inside (-100 is
        ignored); `num_items_in_batch` (HF Trainer) makes the loss the summed token CE divided by it.

        transformers' other arguments are honoured or refused, never dropped (**kwargs took them without a word):
        `position_ids` only as the positions the model reads anyway, no `inputs_embeds`, hidden states or
        attention weights."""
        if input_ids is None:
            raise ValueError("LooplmForCausalLM needs input_ids")
        if inputs_embeds is not None:
            raise ValueError("LooplmForCausalLM takes input_ids, not inputs_embeds (its embed adds the learned "
                             "positions to the token embeddings)")
        if output_flag("output_hidden_states", output_hidden_states, self.config):
            raise ValueError("LooplmForCausalLM returns no hidden_states: drop output_hidden_states=True (and "
                             "config.output_hidden_states); for each loop's output pass output_loop_logits=True, "
                             "or run the loop yourself with model.embed / model.step / model.readout")
        check_no_attentions("LooplmForCausalLM", output_attentions, self.config)
        check_default_positions(position_ids, input_ids, attention_mask)
        gate = ("exit_threshold", "exit_dtype", "use_weighted_exit")
        asked = [k for k in gate
                 if kwargs.get(k) is not None and kwargs.get(k) is not False]  # 0.0 == False: not `in (None, False)`
        if asked:  # Ouro's early-exit arguments: this model has no gate, and would run every loop without a word
            raise ValueError(f"LooplmForCausalLM has no early-exit gate: {', '.join(asked)} cannot apply (it runs "
                             "every loop)")
        check_loop_kwargs({k: v for k, v in kwargs.items() if k not in gate})
        packed = sorted(k for k in PACKING_KWARGS if kwargs.get(k) is not None)
        if packed:  # (taken by **kwargs, the packed sequences attended across each other)
            raise ValueError(f"LooplmForCausalLM runs one sequence a row (learned absolute positions): packed "
                             f"sequences ({', '.join(packed)}, as DataCollatorWithFlattening gives) cannot apply; put "
                             "each sequence in its own padded row")
        check_unknown_kwargs("LooplmForCausalLM", {k: v for k, v in kwargs.items() if k not in gate + PACKING_KWARGS},
                             token_type_ids)  # (named, so that generate() passes them on)
        output_loop_logits = check_flag("output_loop_logits", output_loop_logits)  # ("no" returned them)
        return_dict = check_flag("return_dict", return_dict, optional=True)
        if attention_mask is not None and attention_mask.numel():
            m = attention_mask.bool()
            # Only right padding is harmless (causal attention never looks right); left padding would shift the
            # learned positions.
            if (m[:, 1:] & ~m[:, :-1]).any():
                raise ValueError("LooplmForCausalLM reads padding only after a row's last token (learned absolute "
                                 "positions): a left-padded batch shifts them, and generate() on a right-padded "
                                 "batch writes new tokens after the pads; generate prompts of different lengths "
                                 "one at a time")
        n = loop_count(num_loops, self.config.num_loops)  # (set after loading: checked here)
        h0, ctx = self.model.embed(input_ids)
        states: list[torch.Tensor] = []
        h = run_loop(self.model, h0, ctx, n, keep=(lambda t, s: states.append(s)) if output_loop_logits else None)
        logits = self._readable(self.model.readout(h, ctx))
        loop_logits = tuple(self._readable(self.model.readout(s, ctx)) for s in states) if output_loop_logits else None
        if logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels, num_items_in_batch, input_ids.shape)
        out = OuroCausalLMOutput(loss=loss, logits=logits, loop_logits=loop_logits)
        return out.to_tuple() if return_dict is False else out

    def _readable(self, logits: torch.Tensor) -> torch.Tensor:
        """-inf past the tokenizer's ids: generate() (greedy or sampled), a loss and eval-lm's scores see the
        distribution over the ids the tokenizer can decode, as `looplm generate` and `looplm sweep` choose (a
        padded id decodes to '' and was chosen at some depths)."""
        width = int(getattr(self.config, "tokenizer_vocab_size", 0) or 0)
        if 0 < width < logits.shape[-1]:
            logits = logits.clone()
            logits[..., width:] = float("-inf")
        return logits


def check_default_positions(position_ids: Any, input_ids: torch.Tensor, attention_mask: Any) -> None:
    """Accept position_ids only where they are the positions the model reads anyway, 0..T-1 along each row (at
    its real tokens: a pad's position is never read). Learned absolute positions and one sequence a row:
    packed sequences (positions restarting inside a row, from DataCollatorWithFlattening or padding-free
    training) ran at 0..T-1 attending across sequences, and trained on wrong positions without a word."""
    if position_ids is None:
        return
    pos = torch.as_tensor(position_ids, device=input_ids.device)
    try:
        differ = (pos != torch.arange(input_ids.shape[-1], device=pos.device)).expand(input_ids.shape)
    except RuntimeError:
        raise ValueError(f"position_ids of shape {tuple(pos.shape)} do not fit input_ids of shape "
                         f"{tuple(input_ids.shape)}") from None
    if torch.is_tensor(attention_mask) and attention_mask.shape == input_ids.shape:
        differ = differ & attention_mask.bool()
    if bool(differ.any()):
        raise ValueError("LooplmForCausalLM runs each row at positions 0, 1, ..., T-1 (learned absolute positions, "
                         "one sequence a row): other position_ids (packed sequences, as DataCollatorWithFlattening "
                         "or padding-free training give) cannot apply; put each sequence in its own padded row "
                         "and pass no position_ids")


def _writer() -> str:
    """The export as the caller named it (a Python caller was told of --out and export-hf)."""
    return rundir.flag("export-hf", "convert_checkpoint")


def check_new_model_dir(out: Path) -> None:
    """An export writes a new model directory: never over a file, or into a folder that holds anything."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "is not empty" if out.is_dir() else f"is {not_a_file(out) or 'a file'}"  # /dev/stdout: no file
        raise UserError(f"{rundir.out_flag()} {out} exists and {what}; {_writer()} writes a new model directory "
                        "(choose a new or empty one)")
    check_out_folder(out)


def convert_checkpoint(checkpoint: str | Path, out: str | Path, num_loops: int | None = None,
                       eos_token_id: int | None = None, pad_token_id: int | None = None) -> Path:
    """Write a looplm checkpoint (run directory or its checkpoint/ folder) as an HF model directory, with its
    tokenizer in transformers' form (`AutoTokenizer` loads it and encodes exactly as training did).

    The default loop count is the checkpoint's `loops.num_loops`; EOS/PAD default to the tokenizer's ids.
    """
    from .. import checkpoint as ckpt
    from ..tasks import make_task, saved_tokenizer, tokenizers
    from .tokenizer import as_hf_tokenizer

    check_new_model_dir(Path(out))

    model, cfg = ckpt.load_model(checkpoint, "cpu")
    check_outside_data(Path(out), cfg)  # (a text run's corpus folder: the export would be read as its data)
    # The tokenizer saved with the checkpoint: a file task's data need not be where it was when training ran.
    tok = saved_tokenizer(checkpoint) or make_task(cfg).tok
    eos = tokenizers.EOS if eos_token_id is None else eos_token_id
    pad = tokenizers.PAD if pad_token_id is None else pad_token_id
    # (0 was `num_loops or ...`: the run's depth, without a word, where -3 was refused)
    hf_cfg = LooplmConfig.from_model_config(cfg.model, num_loops=cfg.loops.num_loops if num_loops is None
                                            else num_loops, eos_token_id=eos, pad_token_id=pad,
                                            tokenizer_vocab_size=min(tok.vocab_size, cfg.model.vocab_size))
    hf = LooplmForCausalLM(hf_cfg)
    hf.model.load_state_dict(model.state_dict(), strict=True)
    hf.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad, use_cache=False,
                                            max_length=cfg.model.max_seq_len)
    hf_tok = as_hf_tokenizer(tok, cfg.model.max_seq_len)  # before writing anything: a failure leaves no half export
    out = Path(out)
    from ..outputs import folders_held, umask_mode
    from .finetune import quiet_transformers

    # Written aside, then moved into place: an interrupted export (Ctrl-C, SIGTERM, a full disk) leaves no half
    # model directory, which would read as a damaged model and block the rerun. A new --out is written beside it
    # and renamed; an empty folder the user prepared (its mode, group, a symlink to it, `.`) is kept, and the
    # files are moved into it from a folder inside it.
    prepared = out.is_dir()
    part = out / f".export.{os.getpid()}" if prepared else out.parent / f".{out.name}.{os.getpid()}.export"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with quiet_transformers():  # no progress bar: the command prints its own line
            hf.save_pretrained(part)
            hf_tok.save_pretrained(part)
        for weights in part.glob("*.safetensors"):
            umask_mode(weights)
        with folders_held([out]):  # two exports into one --out take turns; the second finds it taken
            if any(not f.name.startswith(".export.") for f in out.iterdir()) if out.is_dir() else out.exists():
                raise UserError(f"{rundir.out_flag()} {out} was written by another command meanwhile; {_writer()} "
                                "writes a new model directory (choose a new or empty one)")
            if prepared:
                for f in sorted(part.iterdir()):
                    os.replace(f, out / f.name)
            else:
                part.rename(out)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(part, ignore_errors=True)
    return out
