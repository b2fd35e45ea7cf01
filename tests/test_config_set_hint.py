"""The quoting hint for a `--set` value with a YAML comment in it is a shell argument that gives the value back."""

import os
import shutil
import subprocess

import pytest

from looplm.config_files import parse_set_value
from looplm.errors import ConfigError


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("value", [
    'Say "hi" # then $x',  # the hint's shell double quotes ended at "hi" and expanded $x
    "books #2.txt",
    "'books' #2.txt",
    "a\\b # c`echo d` $(echo e) !x 'f'",
])
def test_the_comment_hint_is_shell_safe(value):
    item = f"data.system_prompt={value}"
    with pytest.raises(ConfigError) as e:
        parse_set_value(item, "data.system_prompt", value)
    hint = str(e.value).split("inside the shell's quotes: --set ", 1)[1]
    # the hint as bash reads it (one argument, nothing expanded), then as --set reads that argument
    out = subprocess.run(["bash", "-c", f'printf "%s\\0" {hint}'], capture_output=True, text=True, check=True,
                         env={**os.environ, "x": "EXPANDED"}).stdout
    (arg,) = out.split("\0")[:-1]
    key, raw = arg.split("=", 1)
    assert key == "data.system_prompt" and parse_set_value(arg, key, raw) == value
