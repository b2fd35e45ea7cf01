"""What a bad-input case damages or prepares before it runs (tests/bad_input_cases.py names these in its rows):
each helper takes the case's scratch folder `<tmp>` and its copy of the tiny run `<copy>`, and its docstring is the
"before:" text of the case's row in docs/bad-inputs.md."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from looplm.cli import main


def _flip(rel: str) -> Callable[[Path, Path], None]:
    def prep(tmp: Path, copy: Path) -> None:
        """one byte flipped"""
        f = copy / rel
        raw = bytearray(f.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        f.write_bytes(bytes(raw))
    return prep


def _write(rel: str, content: str | bytes) -> Callable[[Path, Path], None]:
    def prep(tmp: Path, copy: Path) -> None:
        """the file overwritten"""
        (copy / rel).write_bytes(content if isinstance(content, bytes) else content.encode())
    return prep


def _rewrite_state(state: object) -> Callable[[Path, Path], None]:
    """Replace the trainer state with `state` and record it in the manifest, as a tool that rewrote both would."""
    def prep(tmp: Path, copy: Path) -> None:
        """trainer_state.pt replaced, manifest updated to match"""
        d = copy / "checkpoint"
        torch.save(state, d / "trainer_state.pt")
        m = json.loads((d / "manifest.json").read_text())
        raw = (d / "trainer_state.pt").read_bytes()
        m["files"]["trainer_state.pt"] = {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
        (d / "manifest.json").write_text(json.dumps(m))
    return prep


def _lose_latest(tmp: Path, copy: Path) -> None:
    """checkpoint/ deleted"""
    shutil.rmtree(copy / "checkpoint")


def _damage_all(tmp: Path, copy: Path) -> None:
    """a byte flipped in every checkpoint's weights"""
    for d in [copy / "checkpoint", *sorted((copy / "checkpoints").iterdir())]:
        _flip(str((d / "model.safetensors").relative_to(copy)))(tmp, copy)


def _symlink_loop(tmp: Path, copy: Path) -> None:
    """checkpoint/ replaced by a symlink to itself"""
    shutil.rmtree(copy / "checkpoint")
    (copy / "checkpoint").symlink_to(copy / "checkpoint")


def _metrics(text: str) -> Callable[[Path, Path], None]:
    def prep(tmp: Path, copy: Path) -> None:
        """a line inserted after the first in metrics.jsonl"""
        lines = (copy / "metrics.jsonl").read_text().splitlines()
        rest = lines[1:] or lines[:1]  # a record after it (blank lines are skipped: it would be the torn last line)
        (copy / "metrics.jsonl").write_text(lines[0] + "\n" + text + "\n" + "\n".join(rest) + "\n")
    return prep


def _hold_lock(tmp: Path, copy: Path) -> None:
    """another process holds the run's lock (.looplm.lock)"""
    code = ("import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); f.seek(0); "
            "f.truncate(); f.write('pid 4242 on otherhost since 2026-12-02 10:00:00\\n'); f.flush(); "
            "print('ready', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, str(copy / ".looplm.lock")], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    _HELD.append(p)


_HELD: list[subprocess.Popen] = []


def _remote_code_model(tmp: Path, copy: Path) -> None:
    """<tmp>/remote: config.json of an unknown model_type with auto_map, and evil.py that would write a file"""
    d = tmp / "remote"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "not-a-known-type", "auto_map": {
        "AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}}))
    (d / "evil.py").write_text(f"open({str(tmp / 'RAN')!r}, 'w').write('code ran')\n")


def _remote_code_tokenizer(tmp: Path, copy: Path) -> None:
    """<tmp>/exp: an export whose tokenizer_config.json names a tokenizer class in evil.py (auto_map)"""
    assert main(["export-hf", str(copy), "--out", str(tmp / "exp")]) == 0
    f = tmp / "exp" / "tokenizer_config.json"
    conf = json.loads(f.read_text())
    conf.update({"tokenizer_class": "EvilTokenizer", "auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", None]}})
    f.write_text(json.dumps(conf))
    (tmp / "exp" / "evil.py").write_text(f"open({str(tmp / 'RAN')!r}, 'w').write('code ran')\n")


def _dynamics_without_state_norm(tmp: Path, copy: Path) -> None:
    """<tmp>/d/dynamics.json: the run's dynamics.json without its state_norm series"""
    doc = json.loads((copy / "dynamics.json").read_text())
    del doc["metrics"]["state_norm"]
    (tmp / "d").mkdir()
    (tmp / "d" / "dynamics.json").write_text(json.dumps(doc))


def _checkpoints_gone(tmp: Path, copy: Path) -> None:
    """checkpoint/ and checkpoints/ removed (the log says steps 1 and 2 were trained and saved)"""
    shutil.rmtree(copy / "checkpoint")
    shutil.rmtree(copy / "checkpoints")


def _hf_base(tmp: Path) -> Path:
    """The tiny HF base model of the hf fixture (<base>), copied to <tmp>/m to be damaged."""
    from .hf_fixtures import save_tiny_base, tiny_chat_tokenizer

    return save_tiny_base(tmp / "m", tiny_chat_tokenizer())


def _llama(tmp: Path, copy: Path) -> None:
    """<tmp>/m: a tiny LlamaForCausalLM (it does not loop) with a chat tokenizer"""
    from transformers import LlamaConfig, LlamaForCausalLM

    from .hf_fixtures import tiny_chat_tokenizer

    tok = tiny_chat_tokenizer()
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(tmp / "m")
    tok.save_pretrained(tmp / "m")


def _hf_config_more_layers(tmp: Path, copy: Path) -> None:
    """<tmp>/m: the tiny base, its config.json asking for a third layer its weights do not hold"""
    f = _hf_base(tmp) / "config.json"
    conf = json.loads(f.read_text())
    conf.update(num_hidden_layers=3, layer_types=["full_attention"] * 3)
    f.write_text(json.dumps(conf))


def _hf_pickle(tmp: Path, copy: Path) -> None:
    """<tmp>/m: the tiny base with its weights as a pickle that would run a command"""
    import pickle

    class Evil:
        def __reduce__(self):
            return (subprocess.call, (["touch", str(tmp / "RAN")],))

    d = _hf_base(tmp)
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(pickle.dumps({"model.embed_tokens.weight": Evil()}))


def _hf_truncated(tmp: Path, copy: Path) -> None:
    """<tmp>/m: the tiny base with model.safetensors cut to half its size"""
    f = _hf_base(tmp) / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _hf_yarn(tmp: Path, copy: Path) -> None:
    """<tmp>/m: the tiny base with yarn RoPE scaling in its config"""
    f = _hf_base(tmp) / "config.json"
    conf = json.loads(f.read_text())
    conf["rope_scaling"] = {"rope_type": "yarn", "factor": 2.0}
    f.write_text(json.dumps(conf))


def _hfrun_flipped(tmp: Path, copy: Path) -> None:
    """<tmp>/ft: a copy of the fine-tune <hfrun>, one byte of its checkpoint's weights flipped"""
    shutil.copytree(PLACES["hfrun"], tmp / "ft")
    f = tmp / "ft" / "checkpoint" / "model.safetensors"
    raw = bytearray(f.read_bytes())
    raw[-100] ^= 0x40
    f.write_bytes(bytes(raw))


PLACES: dict[str, Path] = {}  # the fixtures' paths (<run>, <base>, <hfrun>), set by run_case before each prepare


def _hf_edit(what: str, edit: Callable[[Path], None]) -> Callable[[Path, Path], None]:
    def prep(tmp: Path, copy: Path) -> None:
        edit(_hf_base(tmp))
    prep.__doc__ = f"<tmp>/m: the tiny base, {what}"
    return prep


def _config_edit(**kw: object) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        conf = json.loads((d / "config.json").read_text())
        conf.update(kw)
        (d / "config.json").write_text(json.dumps(conf))
    return edit


def _nan_weights(d: Path) -> None:
    from safetensors.torch import load_file, save_file

    w = load_file(str(d / "model.safetensors"))
    w["model.norm.weight"] = torch.full_like(w["model.norm.weight"], float("nan"))
    save_file(w, str(d / "model.safetensors"), metadata={"format": "pt"})


def _huge_weights(d: Path) -> None:
    """finite weights whose forward overflows: every logit is inf or NaN"""
    from safetensors.torch import load_file, save_file

    w = load_file(str(d / "model.safetensors"))
    w["model.norm.weight"] = torch.full_like(w["model.norm.weight"], 3e38)
    w["lm_head.weight"] = torch.full_like(w["lm_head.weight"], 3e38)
    save_file(w, str(d / "model.safetensors"), metadata={"format": "pt"})


def _as_bin(cut: bool) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        from safetensors.torch import load_file

        w = load_file(str(d / "model.safetensors"))
        (d / "model.safetensors").unlink()
        torch.save(w, d / "pytorch_model.bin")
        if cut:
            f = d / "pytorch_model.bin"
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return edit


def _big_tokenizer(tmp: Path, copy: Path) -> None:
    """<tmp>/tok: a chat tokenizer of 400 tokens (the base model's embedding has 320 rows)"""
    from .hf_fixtures import tiny_chat_tokenizer

    tiny_chat_tokenizer(vocab_size=400).save_pretrained(tmp / "tok")


def _partial_run(tmp: Path, copy: Path) -> None:
    """<tmp>/partial holds config.yaml and metrics.jsonl, no checkpoint"""
    (tmp / "partial").mkdir()
    (tmp / "partial" / "metrics.jsonl").write_text('{"step": 1, "loops": 2, "ce": 2.0}\n')
    (tmp / "partial" / "config.yaml").write_text("model: {}\n")


def _foreign_dir(tmp: Path, copy: Path) -> None:
    """<tmp>/docs holds thesis.tex"""
    (tmp / "docs").mkdir()
    (tmp / "docs" / "thesis.tex").write_text("\\documentclass{article}\n")


def _replace_with_file(name: str) -> Callable[[Path, Path], None]:
    def prep(tmp: Path, copy: Path) -> None:
        shutil.rmtree(copy / name)
        (copy / name).write_text("not a folder\n")
    prep.__doc__ = f"{name}/ replaced by a file"
    return prep


def _manifest(edit: Callable[[dict], None], what: str) -> Callable[[Path, Path], None]:
    def prep(tmp: Path, copy: Path) -> None:
        f = copy / "checkpoint" / "manifest.json"
        m = json.loads(f.read_text())
        edit(m)
        f.write_text(json.dumps(m))
    prep.__doc__ = what
    return prep


def _dangling_link(tmp: Path, copy: Path) -> None:
    """<tmp>/dang: a symlink to a folder that does not exist"""
    (tmp / "dang").symlink_to(tmp / "nowhere")


def _export(tmp: Path, copy: Path) -> None:
    """<tmp>/exp: the run written by `looplm export-hf`"""
    assert main(["export-hf", str(copy), "--out", str(tmp / "exp")]) == 0


def _export_no_tokenizer(tmp: Path, copy: Path) -> None:
    """<tmp>/exp: the run written by `looplm export-hf`, its tokenizer files deleted"""
    assert main(["export-hf", str(copy), "--out", str(tmp / "exp")]) == 0
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (tmp / "exp" / f).unlink(missing_ok=True)


def _link_loop(tmp: Path, copy: Path) -> None:
    """<tmp>/loopa and <tmp>/loopb: symlinks to each other"""
    (tmp / "loopa").symlink_to(tmp / "loopb")
    (tmp / "loopb").symlink_to(tmp / "loopa")


def _runs_linked_into_corpus(tmp: Path, copy: Path) -> None:
    """<tmp>/corpus/runs: a symlink to <tmp>/runs, where the run goes"""
    (tmp / "runs").mkdir()
    (tmp / "corpus" / "runs").symlink_to(tmp / "runs")


def _tar_corpus(tmp: Path, copy: Path) -> None:
    """<tmp>/corpus/shard-00001: an uncompressed tar of a text file"""
    import io
    import tarfile

    (tmp / "corpus").mkdir()
    text = b"the quick brown fox jumps over the lazy dog\n" * 20
    with tarfile.open(tmp / "corpus" / "shard-00001", "w") as tar:
        member = tarfile.TarInfo("a.txt")
        member.size = len(text)
        tar.addfile(member, io.BytesIO(text))
