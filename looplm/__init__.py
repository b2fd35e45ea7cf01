"""looplm: looped (depth-recurrent) language models and STARS, stability-driven recurrent scaling.

The public API is small on purpose: configs, the looped-model protocol and its one loop, the model, samplers,
regularizers, tasks, the trainer and depth sweeps. Submodules hold the rest.
"""

from .config import Config, ConfigError, load_config
from .errors import UserError
from .evaluate import parse_depths, sweep
from .generate import generate
from .looped import LoopedModel, check_looped, phi, run_loop
from .loops import sample_loops
from .model import LoopedTransformer, twice_differentiable
from .regularizers import fixed_point_residual, hutchinson, jsrr, jsrr_release, power_penalty
from .tasks import AdditionTask, Batch, CharTokenizer, read_addition_jsonl
from .train import fit, train

__version__ = "0.1.0"

__all__ = [
    "AdditionTask", "Batch", "CharTokenizer", "Config", "ConfigError", "LoopedModel", "LoopedTransformer",
    "UserError", "check_looped", "fit", "fixed_point_residual", "generate", "hutchinson", "jsrr", "jsrr_release",
    "load_config", "parse_depths", "phi", "power_penalty", "read_addition_jsonl", "run_loop", "sample_loops",
    "sweep", "train", "twice_differentiable",
]
