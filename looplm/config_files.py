"""Config files: YAML read strictly (YAML 1.2's core schema, not PyYAML's 1.1) and the shipped presets."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, a_device, not_there


# --- YAML, read strictly -------------------------------------------------------------------------------------
# PyYAML implements YAML 1.1, where `017` is octal 15, `1:30` is sexagesimal 90 and `yes`/`off` are booleans, and a
# duplicate key silently keeps the last value. Configs are read with YAML 1.2's core schema instead: integers are
# decimal (or 0x/0o), floats are written as floats, booleans are true/false, and duplicate or non-string keys are
# refused with the file and line.
class _StrictLoader(yaml.SafeLoader):
    pass


_StrictLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                                                 "tag:yaml.org,2002:bool")]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_BOOL12 = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT12 = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT12 = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL12, list("tTfF"))
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:int", _INT12, list("-+0123456789"))
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT12, list("-+.0123456789"))


class _BadScalar(ConfigError):
    """A scalar its explicit tag cannot read; each mapping it sits in adds its key on the way out, so the message
    names the dotted key and the line."""

    def __init__(self, line: int, what: str):
        super().__init__(what)
        self.line, self.what, self.keys = line, what, []

    def __str__(self) -> str:
        return f"line {self.line}: {'.'.join(self.keys)}: {self.what}" if self.keys else self.what


def _typed12(tag: str, rule: re.Pattern, read: Any, spelled: str) -> Any:
    """The constructor of `tag` that reads only YAML 1.2's spelling (`rule`). The implicit resolvers above already
    keep to it, but an explicit tag (`!!int 1:30`, `!!float 1_000`, `!!bool yes`) went to PyYAML's 1.1 reader:
    sexagesimal 90, underscores and yes/no came back, and a bad value was Python's int() message with no key."""
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        s = loader.construct_scalar(node)
        if not isinstance(s, str) or not rule.match(s):
            raise _BadScalar(node.start_mark.line + 1, f"!!{tag} {s!r} is not a YAML 1.2 {tag} (looplm reads "
                                                       f"YAML 1.2, not 1.1's 1:30, 1_000, 0b11 or yes); {spelled}")
        return read(loader, node)
    return construct


def _int12(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    s = loader.construct_scalar(node)
    return int(s, 0) if s.lstrip("+-").startswith(("0x", "0o")) else int(s)


def _mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    out: dict = {}
    for k_node, v_node in node.value:
        key = loader.construct_object(k_node, deep=True)
        where = f"line {k_node.start_mark.line + 1}"
        if not isinstance(key, str):
            raise ConfigError(f"{where}: a config key must be a name, got {type(key).__name__} {key!r}")
        if key in out:
            raise ConfigError(f"{where}: duplicate key {key!r}")
        try:
            out[key] = loader.construct_object(v_node, deep=True)
        except _BadScalar as e:
            e.keys.insert(0, key)
            raise
    return out


_StrictLoader.add_constructor("tag:yaml.org,2002:int",
                              _typed12("int", _INT12, _int12, "write it in decimal, 0x... or 0o..."))
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _typed12(
    "float", _FLOAT12, yaml.SafeLoader.construct_yaml_float, "write it as 3, 0.5, 1e-3 or .inf"))
_StrictLoader.add_constructor("tag:yaml.org,2002:bool",
                              _typed12("bool", _BOOL12, yaml.SafeLoader.construct_yaml_bool, "write true or false"))
_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def parse_yaml(text: str, where: str) -> Any:
    """YAML text read with the strict 1.2-style rules above; errors name `where`."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}{_jinja_hint(text, where)}") from None
    except yaml.YAMLError as e:
        mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None) or str(e)
        if "tag:yaml.org,2002:merge" in problem:  # the safe loader's word for `<<: *anchor`
            problem = "merge keys (<<: *anchor) are not supported; write the keys out"
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        if mark is not None and problem.startswith("found character '\\t'"):  # PyYAML's word printed the raw tab
            lines = text.splitlines()
            indent = mark.line >= len(lines) or not lines[mark.line][:mark.column].strip()
            said = (": YAML indents with spaces, not tabs" if indent else
                    f", column {mark.column + 1}: a tab here is not valid YAML; write spaces")
            raise ConfigError(f"{where}: line {mark.line + 1}{said}") from None
        raise ConfigError(f"{where}: not valid YAML{at}: {problem}{_jinja_hint(text, where)}") from None


def _jinja_hint(text: str, where: str) -> str:
    """The quoting hint text settings get, for a --set value that starts like a Jinja template (`{{ ... }}`,
    `{% ... %}`, data.chat_template's inline form): YAML reads `{` as a flow mapping, and its error blamed a config
    key or YAML syntax."""
    s = text.lstrip()
    # (and a value that opens with one of YAML's indicators: `@x.jsonl` "cannot start any token", `*x` an alias)
    if not (where.startswith("--set ") and (s.startswith(("{{", "{%")) or s[:1] in _INDICATORS)) or s[:2] == "!!":
        return ""
    key = where.removeprefix("--set ").split("=", 1)[0].strip()
    what = "a Jinja template" if s[:1] == "{" else f"{s[0]} starts YAML syntax"
    return f"; for text ({what}), put it in YAML quotes, each ' in it written '': --set \"{key}='...'\""


_INDICATORS = "@`%!&*|>"  # what YAML reads as syntax at a plain value's start (a !! tag is meant as one)


def _has_comment(raw: str) -> bool:
    """Whether YAML would read part of a `--set` value as a comment: a `#` after white space (or first), outside
    a quoted scalar (`'books' #2.txt` too)."""
    s = raw.strip()
    if s[:1] in ("'", '"'):
        pattern = r"'(?:[^']|'')*'" if s[0] == "'" else r'"(?:[^"\\]|\\.)*"'
        m = re.match(pattern, s)
        s = s[m.end():] if m else ""
    return re.search(r"(?:^|\s)#", s) is not None


def parse_set_value(item: str, key: str, raw: str) -> Any:
    """The value of `--set key=raw` (`item`) as the config reads it: a YAML scalar, refused where YAML would read
    part of it as something else."""
    if _has_comment(raw):  # YAML reads ` #...` as a comment: `data.path=books #2.txt` trained on `books`
        # YAML's double quotes inside the shell's single quotes: a " or $ of the value in the shell's double quotes
        # ended the string or was expanded (`Say "hi" # then $x`); shlex writes a ' of the value as '"'"'
        quoted = '"' + raw.strip().replace("\\", "\\\\").replace('"', '\\"') + '"'
        raise ConfigError(f"--set {item}: ' #' starts a YAML comment, which would drop the rest of the value; "
                          f"quote the value for YAML inside the shell's quotes: --set {shlex.quote(f'{key}={quoted}')}")
    v = raw.strip()
    breaks = sorted({c for c in v if c in "\n\r\x85"})
    if breaks:  # YAML folds a line break (NEL, U+0085, too) to a space, quoted or not: `p\x85q` was read as `p q`
        esc = {ord(c): f"\\u{ord(c):04x}" for c in breaks}
        example = v.replace("\\", "\\\\").replace('"', '\\"').translate(esc)
        said = f": --set '{key}=\"{example}\"'" if v[:1] not in ("'", '"') and "'" not in v else ""
        raise ConfigError(f"--set {item!r}: {', '.join(f'U+{ord(c):04X}' for c in breaks)} is a line break to YAML, "
                          f"which reads it as a space; write it as an escape ({', '.join(esc.values())}) inside "
                          f"YAML's double quotes{said}")
    if not v:
        return raw
    if v[0] == "&":  # a YAML anchor, of no use in one value: `&x` was null ("null is not a value"), `&a b` was b
        quoted = v.replace("'", "''")
        raise ConfigError(f"--set {item}: & starts a YAML anchor, which is not part of the value; for text, put it "
                          f"in YAML quotes: --set \"{key}='{quoted}'\"")
    try:
        return parse_yaml(raw, f"--set {item}")
    except ConfigError:
        if "\t" not in raw:
            raise
    if "\t" not in v:  # only around the value
        raise ConfigError(f"--set {item!r}: a tab around the value is not valid YAML; remove it") from None
    # PyYAML's token error ("found character '\t' that cannot start any token") printed the raw tab, with no way
    # out: a tab is kept inside YAML's quotes, and \t in double quotes is one.
    example = v.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t")
    said = f": --set '{key}=\"{example}\"'" if v[:1] not in ("'", '"') and "'" not in v else ""
    raise ConfigError(f"--set {item!r}: a tab here is not valid YAML; quote the value for YAML inside the shell's "
                      f"quotes, writing the tab as \\t inside YAML's double quotes{said}") from None


class _QuotingDumper(yaml.SafeDumper):
    pass


# PyYAML's writer quotes a string only where YAML 1.1 would read it as another type, so `1e5` or `0o17` (no number
# in 1.1, numbers in 1.2) were written bare, and a run's config.yaml holding such a path read back as a float: the
# run could not be resumed or recognised. Strings the strict reader would type are quoted too.
_QuotingDumper.yaml_implicit_resolvers = {
    k: [*yaml.SafeDumper.yaml_implicit_resolvers.get(k, []), *_StrictLoader.yaml_implicit_resolvers.get(k, [])]
    for k in {*yaml.SafeDumper.yaml_implicit_resolvers, *_StrictLoader.yaml_implicit_resolvers}}


def dump_yaml(data: Any) -> str:
    """`data` as YAML that `parse_yaml` reads back as `data` (keys in their order)."""
    return yaml.dump(data, Dumper=_QuotingDumper, sort_keys=False)


PRESET_DIR = Path(__file__).parent / "presets"


_NOTED: set[str] = set()  # local files said once per process (a sweep of seeds loads its preset once per seed)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


# what a run trained with fit(model=...) has in its config.yaml's model section
MODULE_MODEL = "whose model section is not its model: the run trained its own module, {}, with fit(model=...)"


def own_module(run: Path) -> str | None:
    """The class of the user's own module that run directory `run` trained (its checkpoint/module.json names it), or
    None. Such a run's config.yaml still has a model section, describing a LoopedTransformer the run never had."""
    try:
        name = json.loads((run / "checkpoint" / "module.json").read_text()).get("module")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def read_yaml_config(path_or_preset: str | Path) -> dict:
    """The mapping in a YAML file, or in the shipped preset `<name>.yaml` for a preset name.

    A bare preset name always means the preset, whatever the current directory holds: a shell redirect
    (`... > addition-stars`) or a run directory named after its preset must not replace it. A local file of that
    name is read when written as a path (`./addition-stars`). A `Path` is a path first (pathlib drops the `./`): one
    that names no file, but a preset, is the preset (`Path("addition-stars")` was refused as "neither a file nor a
    preset" in a message that listed it among the presets)."""
    p = Path(path_or_preset)
    is_name = "/" not in str(path_or_preset) and p.suffix == "" and (isinstance(path_or_preset, str) or not p.exists())
    candidate = PRESET_DIR / f"{path_or_preset}.yaml"
    if is_name and candidate.is_file():
        p = candidate
        # (an edited copy of the preset beside the command trained the shipped one without a word)
        local = next((f for f in (Path(f"{path_or_preset}.yaml"), Path(str(path_or_preset))) if f.is_file()), None)
        if local is not None and str(local) not in _NOTED:
            _NOTED.add(str(local))
            print(f"note: ./{local} exists and is not read: --config {path_or_preset} is the shipped preset; "
                  f"--config ./{local} reads it", file=sys.stderr)
    elif not p.exists():
        if not_there(p) != "does not exist":  # a link leads nowhere or a ~ was not expanded: say so, not "no preset"
            raise ConfigError(f"config {p} {not_there(p)}")
        raise ConfigError(f"config {str(path_or_preset)!r} is neither a file nor a preset; "
                          f"presets: {', '.join(preset_names())}")
    if p.is_dir():
        # a Path that names a run directory called after its preset: the user meant the preset, so say how to get it
        hint = f"; for the preset, pass the string {p.name!r}" if p == Path(p.name) and candidate.is_file() else ""
        if (p / "config.yaml").is_file():
            own = own_module(p)
            hint = f"; a run's settings are its {p / 'config.yaml'}" + (f" ({MODULE_MODEL.format(own)})" if own else "")
        raise ConfigError(f"config {p} is a directory; give a YAML file or a preset name{hint}")
    if a_device(p):  # /dev/zero was read until memory ran out
        raise ConfigError(f"config {p} is a device, not a YAML file")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config {p} cannot be read: {e}") from None
    doc = parse_yaml(text, str(p))
    if isinstance(doc, dict) and "model_type" in doc and "architectures" in doc:  # 25 "unknown config sections"
        raise ConfigError(f"config {p} is a Hugging Face model's config.json (model_type {doc['model_type']!r}), not "
                          "a looplm config; a run's settings are in its config.yaml")
    if doc is None:  # all defaults is never what an empty file means: a truncated or mistaken file
        raise ConfigError(f"config {p} is empty; give a preset name or a YAML file with the settings")
    return doc
