"""The HF fine-tune's memory check counts autograd's records of every layer run with a graph: with
loops.checkpoint_loops a million loops of a width-32 model passed an estimate of 1.7 GiB and used ~50 GB (each
checkpointed loop keeps ~47 KiB of graph records whatever the width, 30x its state). And running out of memory
reads as that, whatever raised it: an OSError with errno ENOMEM named the run folder, std::bad_alloc was a
traceback."""

import errno

import pytest
import torch

from looplm import memory
from looplm.config import Config
from looplm.errors import UserError, guarded

FREE = 16 * 2**30


def _config(loops: int) -> Config:
    return Config.from_dict({"model": {"name_or_path": "/nonexistent/m", "gradient_checkpointing": False},
                             "data": {"source": "/nonexistent/d.jsonl", "max_length": 16},
                             "loops": {"sampler": "fixed", "num_loops": loops, "max_loops": loops,
                                       "checkpoint_loops": True},
                             "train": {"steps": 1, "batch_size": 2, "device": "cpu", "threads": 1}})


def _export():
    pytest.importorskip("transformers")
    from looplm.hf.looplm_hf import LooplmConfig, LooplmForCausalLM

    torch.manual_seed(0)  # as the char-level export it was found with: one block of width 32
    return LooplmForCausalLM(LooplmConfig(vocab_size=16, d_model=32, n_heads=2, d_ff=64, n_core=1, max_seq_len=16))


def test_a_million_checkpointed_loops_are_refused_with_the_graph_records(monkeypatch):
    from looplm.hf.finetune import check_memory

    model = _export()
    monkeypatch.setattr(memory, "available_bytes", lambda: FREE)
    check_memory(model, _config(1000), 7, torch.device("cpu"))  # 40 MiB of records: fits
    # the states alone were 1e6 loops x 2 x 7 tokens x 32 floats = 1.7 GiB, which passed with 16 GiB free
    with pytest.raises(UserError, match=r"up to 1000000 loops with a graph need at least 3[89]\.\d GiB.*autograd's "
                                        r"records of its 1,000,000 layer passes alone: 38\.1 GiB"):
        check_memory(model, _config(1_000_000), 7, torch.device("cpu"))


def test_on_a_gpu_the_graph_records_are_host_memory(monkeypatch):
    from looplm.hf.finetune import check_memory

    model = _export()
    monkeypatch.setattr(memory, "available_bytes", lambda: FREE)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (80 * 2**30, 80 * 2**30))
    # the GPU holds the tensors (1.7 GiB of states); the 38 GiB of records do not fit the host's 16
    with pytest.raises(UserError, match=r"need at least 38\.1 GiB, and 16\.0 GiB are free \(autograd"):
        check_memory(model, _config(1_000_000), 7, torch.device("cuda", 0))


def test_the_native_check_counts_checkpointed_loops_and_their_records(monkeypatch):
    from looplm.config import load_config
    from looplm.train import check_memory

    def cfg(loops):
        return load_config("addition-prenorm-stars", [
            "model.d_model=32", "model.d_ff=64", "model.n_heads=2", "loops.sampler=fixed",
            f"loops.num_loops={loops}", f"loops.max_loops={loops}", "loops.checkpoint_loops=true"])

    monkeypatch.setattr(memory, "available_bytes", lambda: FREE)
    check_memory(cfg(1000), micro=2, seq_len=7)
    # it counted one loop with a graph under checkpoint_loops, neither the loops' inputs nor autograd's records
    with pytest.raises(UserError, match=r"up to 1000000 loops with a graph need at least 3[89]\.\d GiB.*autograd's "
                                        r"records of its 1,000,000 layer passes alone: 38\.1 GiB"):
        check_memory(cfg(1_000_000), micro=2, seq_len=7)


def _line(body, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = guarded(body)
    return code, capsys.readouterr().err


def _raise(e: BaseException):
    def body() -> None:
        raise e
    return body


def test_enomem_says_memory_ran_out_not_that_the_path_is_at_fault(capsys):
    code, err = _line(_raise(OSError(errno.ENOMEM, "Cannot allocate memory", "r_exp4")), capsys)
    assert code == 2 and err == ("error: out of memory (the system refused an allocation while using r_exp4, "
                                 "which is not at fault); lower the batch size, width or depths\n"), err
    code, err = _line(_raise(OSError(errno.ENOMEM, "Cannot allocate memory")), capsys)
    assert err == "error: out of memory (the system refused an allocation); lower the batch size, width or depths\n"
    code, err = _line(_raise(OSError(errno.ENOENT, "No such file or directory", "r_exp4")), capsys)
    assert err == "error: [Errno 2] No such file or directory: 'r_exp4'\n"  # other OS errors as they were


def test_cpp_bad_alloc_is_out_of_memory_not_a_traceback(capsys):
    code, err = _line(_raise(RuntimeError("std::bad_alloc")), capsys)
    assert code == 2 and err == "error: out of memory (std::bad_alloc); lower the batch size, width or depths\n"
    with pytest.raises(RuntimeError, match="a bug"):  # any other RuntimeError stays a bug's traceback
        guarded(_raise(RuntimeError("a bug")))


def test_enomem_inside_a_block_gets_the_blocks_hint():
    with pytest.raises(UserError, match=r"^out of memory \(\[Errno 12\] Cannot allocate memory: 'x'\); analyze fewer"):
        with memory.out_of_memory_hint("analyze fewer depths"):
            raise OSError(errno.ENOMEM, "Cannot allocate memory", "x")
