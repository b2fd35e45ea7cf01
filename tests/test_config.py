import re

import pytest

from looplm.config import Config, ConfigError, load_config, preset_names


def test_presets_load_and_differ():
    names = preset_names()
    assert {"addition-prenorm-stars", "addition-prenorm-fixed", "addition-prenorm-random"} <= set(names)
    stars, fixed, rand = (load_config(f"addition-prenorm-{n}") for n in ("stars", "fixed", "random"))
    assert stars.reg.kind == "jsrr" and stars.reg.weight == 0.1 and stars.loops.sampler == "lognormal"
    assert fixed.loops.sampler == "fixed" and fixed.loops.num_loops == 4 and fixed.reg.kind == "none"
    assert rand.reg.kind == "none" and rand.loops == stars.loops and rand.model == stars.model


def test_overrides_are_typed():
    cfg = load_config("addition-prenorm-stars", ["train.steps=7", "train.lr=3e-4",
                                                 "model.norm_placement=post_sandwich"])
    assert cfg.train.steps == 7 and cfg.train.lr == pytest.approx(3e-4)
    assert cfg.model.norm_placement == "post_sandwich"
    assert isinstance(load_config(None, ["train.lr=1"]).train.lr, float)  # int accepted for float


@pytest.mark.parametrize("override, words", [
    ("model.nope=1", ["model.nope", "valid keys", "d_model"]),
    ("nope.x=1", ["unknown config section", "model"]),
    ("model.norm_placement=middle", ["model.norm_placement", "pre_sandwich", "post_sandwich"]),
    ("loops.sampler=gauss", ["loops.sampler", "lognormal"]),
    ("reg.kind=magic", ["reg.kind", "jsrr_release"]),
    ("train.steps=many", ["train.steps", "int"]),
    ("train.steps=true", ["train.steps", "bool"]),
    ("loops.num_loops=0", ["loops.num_loops", ">= 1"]),
    ("loops.sigma=0", ["loops.sigma", "> 0"]),
    ("loops.sigma=-1", ["loops.sigma"]),
    ("loops.min_loops=9", ["min_loops", "max_loops"]),  # with max_loops=100 this is fine; see below
    ("reg.weight=1.5", ["reg.weight", "[0, 1]"]),
    ("model.n_heads=3", ["n_heads", "divisible"]),
    ("trainsteps=3", ["section.key"]),
])
def test_bad_values_name_the_key(override, words):
    if override == "loops.min_loops=9":
        with pytest.raises(ConfigError) as e:
            load_config(None, ["loops.max_loops=5", override])
    else:
        with pytest.raises(ConfigError) as e:
            load_config(None, [override])
    for w in words:
        assert w in str(e.value)


def test_deepnorm_needs_post_placement():
    with pytest.raises(ConfigError, match="deepnorm"):
        load_config(None, ["model.norm_type=deepnorm", "model.norm_placement=pre"])
    assert load_config(None, ["model.norm_type=deepnorm", "model.norm_placement=post"]).model.norm_type == "deepnorm"


def test_unknown_yaml_key_and_missing_preset(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  d_modle: 64\n")
    with pytest.raises(ConfigError, match="model.d_modle"):
        load_config(f)
    with pytest.raises(ConfigError, match="neither a file nor a preset"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("bad, words", [
    ([1, 2], "a config must be a mapping of sections, got list"),
    ({"modle": {}}, r"unknown config section\(s\) \['modle'\]; valid sections: model, loops, reg, data, train"),
    ({"model": [64]}, "section 'model' must be a mapping, got list"),
])
def test_malformed_config_dicts_name_the_problem(bad, words):
    with pytest.raises(ConfigError, match=words):
        Config.from_dict(bad)


def test_roundtrip_dict():
    cfg = load_config("addition-prenorm-stars")
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_yaml_scalars_follow_yaml_1_2(tmp_path):
    """YAML 1.1 (PyYAML's default) reads 017 as octal 15, 1:30 as 90, `yes` as True; configs use 1.2's core schema."""
    cfg = load_config("addition-prenorm-stars", ["train.steps=017", "train.seed=0x10", "train.lr=3e-4"])
    assert (cfg.train.steps, cfg.train.seed, cfg.train.lr) == (17, 16, 3e-4)
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  steps: 017\n  warmup_steps: 1_0\n")
    with pytest.raises(ConfigError, match="train.warmup_steps must be int, got str '1_0'"):
        load_config(f)
    f.write_text("train:\n  steps: 017\n")
    assert load_config(f).train.steps == 17
    for bad, words in (("train.steps=1:30", "got str '1:30'"), ("model.bias=yes", "got str 'yes'"),
                       ("model.bias=on", "got str 'on'")):
        with pytest.raises(ConfigError, match=words):
            load_config("addition-prenorm-stars", [bad])
    assert load_config("addition-prenorm-stars", ["model.bias=false"]).model.bias is False
    # a text value YAML typed (a file named 2024, a path with ": " read as a mapping) says how to give it as text
    for bad in ("data.path=2024", "data.path=/tmp/x: y.txt"):
        with pytest.raises(ConfigError, match=r"data.path must be str, got (int|dict) .*; for text, put it in YAML "
                                              r"quotes \(--set \"data.path='...'\""):
            load_config("text-fixed", [bad])
    # a run's config.yaml reads back as the config it holds: `1e5` or `0o17` (numbers in 1.2, not in 1.1) were
    # written bare and read back as 100000.0 and 15, so such a data.path made a run that could not be resumed
    for name in ("1e5", "2E3", "1e-3", "0o17", "017", "yes", "1:30", ".inf", "0x1F", "a: b", "plain"):
        cfg = load_config("text-fixed", [f"data.path='{name}'"])
        cfg.save_yaml(f)
        assert load_config(f) == cfg and load_config(f).to_yaml() == f.read_text(), name


def test_a_preset_name_is_the_preset_whatever_the_directory_holds(tmp_path, monkeypatch):
    """`cmd > addition-stars` leaves an empty file named like the preset, and a run directory is often named after
    its preset: neither replaces the preset. The local file is read when written as a path; an empty config file
    is refused rather than read as 'every default'."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "addition-prenorm-stars").write_text("")
    (tmp_path / "parity-fixed").mkdir()
    assert load_config("addition-prenorm-stars").reg.kind == "jsrr"
    assert load_config("parity-fixed").data.task == "parity"
    with pytest.raises(ConfigError, match="is empty"):
        load_config("./addition-prenorm-stars")
    (tmp_path / "addition-prenorm-stars").write_text("train:\n  steps: 7\n")
    assert load_config("./addition-prenorm-stars").train.steps == 7
    assert load_config("addition-prenorm-stars").train.steps != 7


def test_an_override_given_twice_is_refused_in_the_api_as_in_the_cli():
    with pytest.raises(ConfigError, match="train.steps given twice"):
        load_config("addition-prenorm-stars", ["train.steps=5", "train.steps=7"])
    # a record's prompt as its own answer: the model would be trained to copy it
    with pytest.raises(ConfigError, match="data.answer_field: must differ from data.prompt_field"):
        load_config("jsonl-stars", ["data.path=x.jsonl", "data.answer_field=prompt"])
    with pytest.raises(ConfigError, match="data.response_field: must differ from data.prompt_field"):
        load_config("ouro-math-stars", ["data.response_field=problem"])
    # one string, not a list, was read letter by letter: "override 't' must look like section.key=value"
    with pytest.raises(ConfigError, match="overrides must be a list of section.key=value strings, got one string"):
        load_config("addition-prenorm-stars", "train.steps=3")


def test_fit_checks_a_config_changed_after_it_was_built(tmp_path):
    """Fields set on a built Config (cfg.loops.min_loops = 3) are checked again by fit, before anything is written."""
    from looplm import fit

    cfg = load_config("addition-prenorm-stars", ["train.steps=2", "model.d_model=32", "model.d_ff=64"])
    cfg.loops.min_loops, cfg.loops.max_loops = 3, 2
    with pytest.raises(ConfigError, match="loops"):
        fit(cfg, tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_yaml_null_is_refused_with_the_keys_default_not_a_hint_to_quote_it(tmp_path):
    """`init_from: null` / `logger: null` were told to put the text in YAML quotes, which asks for a path named
    'null': null now says to leave the key out, and what the default is."""
    cases = {"train.init_from": "'' (none)", "train.logger": "'jsonl'", "train.steps": "3000"}
    for key, default in cases.items():
        with pytest.raises(ConfigError, match="^" + re.escape(
                f"null is not a value for {key}; leave the key out for its default, {default}") + "$"):
            load_config(None, [f"{key}=null"])
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  steps: 3\n  init_from: null\n")
    with pytest.raises(ConfigError, match="null is not a value for train.init_from"):
        load_config(str(f))
    assert load_config(None, ["model.d_model=32"]).train.init_from == ""


def test_cpu_with_an_index_is_a_device_as_torch_takes_it():
    """`--device cpu:0` and `train.device=cpu:0` were refused as unknown devices; torch takes cpu:N."""
    import torch

    from looplm.errors import UserError
    from looplm.hardware import resolve_device

    assert load_config(None, ["train.device=cpu:0"]).train.device == "cpu:0"
    assert resolve_device("cpu:0") == resolve_device("cpu:3") == torch.device("cpu")
    for bad in ("cpu:", "cpu:-1", "cpu:x", "CPU:0", "cpu:0:1", "cpu:١"):
        with pytest.raises(ConfigError, match="train.device="):
            load_config(None, [f"train.device={bad}"])
        with pytest.raises(UserError, match="unknown device"):
            resolve_device(bad)


def test_overrides_of_another_type_are_a_type_error_naming_it():
    """A dict of overrides was read by its keys ("override 'train.steps' must look like section.key=value")."""
    for bad, got in (({"train.steps": 3}, "dict {'train.steps': 3}"), (["train.steps=3", 5], "int 5"),
                     (iter(["train.steps=3"]), "list_iterator")):
        with pytest.raises(TypeError, match=re.escape(
                f"overrides must be a list of section.key=value strings (e.g. ['train.steps=3']), got {got}")):
            load_config("addition-prenorm-stars", bad)
    assert load_config("addition-prenorm-stars", ("train.steps=3",)).train.steps == 3


@pytest.mark.parametrize("value", ["p\x85q", "p\nq", "p\rq", '"p\x85q"'])
def test_a_line_break_in_a_set_value_is_refused_not_read_as_a_space(value):
    """YAML folds a line break in a scalar to a space, quoted or not: `--set data.prompt_field=p<U+0085>q` asked for
    the field 'p q' (and a data.path with one named another file). The escape inside double quotes is the way."""
    from looplm.config import ConfigError

    with pytest.raises(ConfigError, match=r"is a line break to YAML, which reads it as a space; write it as an escape "
                                          r"\(\\u00(85|0a|0d)\) inside YAML's double quotes"):
        load_config("jsonl-stars", [f"data.prompt_field={value}"])
    assert load_config("jsonl-stars", ['data.prompt_field="p\\u0085q"']).data.prompt_field == "p\x85q"
    assert load_config("jsonl-stars", ["data.prompt_field=p\u2028q"]).data.prompt_field == "p\u2028q"  # kept as is


def test_a_penalty_weight_of_one_says_the_task_is_left_out_of_the_loss():
    """reg.weight=1 (inside the documented [0, 1]) trains on the penalty alone, (1 - λ)·CE = 0: the run logged
    loss == reg and learned nothing of the task, with no word."""
    notes = load_config("addition-prenorm-stars", ["reg.weight=1", "reg.start_step=0"]).unreached(1000)
    assert notes == ["note: reg.weight=1 leaves the cross-entropy out of the loss, (1 - λ)·CE + λ·penalty, from step 1 "
                     "on: the model learns only the jsrr penalty, not the task"]
    assert load_config("addition-prenorm-stars", ["reg.weight=0.5", "reg.start_step=0"]).unreached(1000) == []
    late = load_config("addition-prenorm-stars", ["reg.weight=1", "reg.start_step=5"]).unreached(3)  # never applies
    assert not any("reg.weight" in n for n in late) and any("reg.start_step=5" in n for n in late)


@pytest.mark.parametrize("item,says", [
    ("data.task", r"^override 'data\.task' must look like section\.key=value$"),
    ("data.task=addition # the default", r"^--set data\.task=addition # the default: ' #' starts a YAML comment"),
    ("data.task=!!str text", r"^data\.task=text: the demo is the recipe on addition"),
    ("data.task= 'parity'", r"^data\.task=parity: the demo is the recipe on addition"),
    ("train.init_from", r"^override 'train\.init_from' must look like"),
])
def test_the_demo_reads_its_set_as_the_config_loader_does(tmp_path, item, says):
    """The demo's data.task check read --set by hand: no `=`, a YAML comment or a tag was taken for another task, and
    a user who asked for addition was told that the demo does only addition. The loader's own parser reads it now."""
    from looplm.demo import cmd_demo

    with pytest.raises(ConfigError, match=says):
        cmd_demo(str(tmp_path / "demo"), [item], progress=False)
    assert not (tmp_path / "demo").exists()


def test_the_demo_sweeps_a_smaller_split_whole_when_n_is_left_out(tmp_path, monkeypatch, capsys):
    """`demo --set data.test_size=16` (a setting the demo's message lists) was refused with "--n 1000", an option
    the user never gave: the default count was checked as if asked for. A default above what exists is used at the
    size that exists, with a note; an explicit --n above it is still refused."""
    import looplm.demo as demo
    from looplm.errors import UserError

    class Reached(Exception):
        pass

    def fit(*a, **kw):
        raise Reached

    monkeypatch.setattr(demo, "fit", fit)
    tiny = ["data.test_size=16", "model.d_model=32", "model.d_ff=64", "model.n_heads=2", "train.steps=2"]
    with pytest.raises(Reached):
        demo.cmd_demo(str(tmp_path / "demo"), tiny, progress=False)
    assert "the whole held-out split, 16 problems (data.test_size), fewer than --n's default 1000" in \
        capsys.readouterr().out
    with pytest.raises(UserError, match=r"^--n 17: the held-out split \(data\.test_size=16\) holds only 16"):
        demo.cmd_demo(str(tmp_path / "demo"), tiny, progress=False, n=17)


def test_a_tab_in_a_set_value_gets_the_quoting_hint_with_the_tab_escaped():
    """`--set data.path=my<TAB>file.txt` got PyYAML's token error ("found character '\\t' that cannot start any
    token") with the raw tab in the line and no way out; the value quoted for YAML is read with its tab."""
    with pytest.raises(ConfigError, match=r"^--set 'data\.path=my\\tfile\.txt': a tab here is not valid YAML; .*"
                                          r"""double quotes: --set 'data\.path="my\\tfile\.txt"'$""") as e:
        load_config("text-stars", ["data.path=my\tfile.txt"])
    assert "\t" not in str(e.value)
    with pytest.raises(ConfigError, match=r"^--set 'data\.test_size=16\\t': a tab around the value"):
        load_config("addition-stars", ["data.test_size=16\t"])
    assert load_config("text-stars", ['data.path="my\\tfile.txt"']).data.path == "my\tfile.txt"
