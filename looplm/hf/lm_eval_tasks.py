"""A task's own faults in lm-eval (its data cannot be read, its YAML cannot build requests), said in one line."""

from __future__ import annotations

import os
import re
import traceback

from datasets.exceptions import DatasetGenerationError

from ..errors import UserError


def task_error(e: BaseException, tasks: str) -> BaseException:
    """A task's own fault, said in one line (UserError): its data file cannot be read, or lm-eval cannot build
    its requests from its YAML and data. Anything else is returned as it is."""
    if isinstance(e, (DatasetGenerationError, StopIteration)) or (isinstance(e, ValueError) and NO_DATA in str(e)):
        return _unreadable_data(e, tasks)
    if not _task_fault(e):
        return e
    if isinstance(e, ValueError) and "larger than population" in str(e):  # random.sample in lm-eval's sampler
        return UserError(f"{tasks}: the few-shot count asks for more examples than the task has documents to draw "
                         "them from; lower --num-fewshot (num_fewshot)")
    why = re.sub(r" at 0x[0-9a-f]+", "", str(e).strip().splitlines()[0][:200] if str(e).strip() else "")
    return UserError(f"{tasks}: lm-eval cannot load the task or build its requests from its YAML and data "
                     f"({type(e).__name__}: {why or 'no message'}); check the task's YAML against its data: its "
                     "!function names, splits, metric names, doc_to_text, doc_to_target (an index into doc_to_choice) "
                     "and doc_to_choice")


def _task_fault(e: BaseException) -> bool:
    """The error arose where lm-eval loads a task's YAML (its !function imports) or builds the task's requests
    from its YAML and data (a doc_to_target past its choices, a doc_to_choice naming no field, an unknown split or
    metric), not in looplm or in the model."""
    own = [f.f_code.co_filename.replace(os.sep, "/") for f, _ in traceback.walk_tb(e.__traceback__)]
    own = [f for f in own if "/lm_eval/" in f or "/looplm/" in f]
    return bool(own) and ("/lm_eval/tasks/" in own[-1] or "/lm_eval/config/" in own[-1] or own[-1].endswith(
        ("lm_eval/api/task.py", "lm_eval/api/samplers.py", "lm_eval/api/metrics.py", "lm_eval/api/registry.py",
         "lm_eval/utils.py")))


NO_DATA = "corresponds to no data"  # datasets' ValueError for a split whose file holds only blank lines


def _unreadable_data(e: Exception, tasks: str) -> UserError:
    """A task's data file that datasets cannot read (empty, blank lines only, a line that is not JSON), in a line."""
    why = "" if NO_DATA in str(e) else str(e.__cause__ or e).strip()
    why = why.splitlines()[0][:200] if why else "it holds no records"
    return UserError(f"{tasks}: a task's data cannot be read ({why}); check its data files")
