"""The text task's reading of a folder: files joined with a newline, and an error that says so."""

import pytest

from looplm.tasks.text import TextTask
from looplm.tasks.tokenizers import CharTokenizer


def test_a_folders_files_are_joined_with_a_newline_and_the_error_says_so(tmp_path):
    """A folder of files with no newline in them was refused for lacking '\\n', a character none of them holds:
    the newline looplm puts between files. The join is documented, and the error names it."""
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "a.txt").write_text("the lazy dog")
    (tmp_path / "two" / "b.txt").write_text("the quick fox")
    task = TextTask(str(tmp_path / "two"), window=4, test_fraction=0.3)
    assert task.tok.decode(task.train_ids.tolist() + task.test_ids.tolist()) == "the lazy dog\nthe quick fox"
    saved = CharTokenizer("".join(sorted(set("the lazy dog quick fox"))))
    with pytest.raises(ValueError, match=r"\('\\n'; a folder's files are joined with a newline between them\)"):
        TextTask(str(tmp_path / "two"), window=4, test_fraction=0.3, saved=saved)
