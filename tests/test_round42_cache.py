"""A model read from the Hugging Face cache (models--ORG--NAME/snapshots/REV/) gets no results written into the
cache by default: analyze and eval-lm wrote dynamics.json / eval-lm/ beside the cached weights, among files every
user of that cache shares."""

import pytest

pytest.importorskip("transformers")

from looplm.cli import main  # noqa: E402

from .hf_fixtures import save_tiny_base, tiny_chat_tokenizer  # noqa: E402


def files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("argv", [["analyze", "{m}", "--depths", "1,2", "--no-plot", "--no-progress"],
                                  ["eval-lm", "{m}", "--tasks", "gsm8k"]])
def test_a_cache_snapshot_gets_no_default_output(tmp_path, capsys, argv):
    snap = tmp_path / "hub" / "models--org--tiny" / "snapshots" / "0123abc"
    save_tiny_base(snap, tiny_chat_tokenizer())
    capsys.readouterr()  # the save's progress bar
    before = files(tmp_path)
    assert main([a.format(m=snap) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {snap} is a snapshot in the Hugging Face cache; give --out, a folder for the results "
                   "(they are not written into the cache)"], err
    assert files(tmp_path) == before


def test_a_model_folder_outside_the_cache_keeps_its_default(tmp_path):
    from looplm.outputs import default_out_dir

    model = tmp_path / "snapshots" / "tiny"  # a folder named snapshots, but not the hub's layout
    save_tiny_base(model, tiny_chat_tokenizer())
    assert default_out_dir(str(model)) == model
