"""The bad-input table's rows for pretrained models (the hf extra): finetune, eval-lm, analyze and export-hf on
HF model directories and fine-tune runs. tests/test_bad_inputs.py runs them with the rows of
tests/bad_input_cases.py."""

from __future__ import annotations

import json
from pathlib import Path

from .bad_input_cases import FT, FT_YAML, GOOD_CHAT, Case, chat, template
from .bad_input_damage import (
    _as_bin,
    _big_tokenizer,
    _config_edit,
    _dangling_link,
    _export,
    _export_no_tokenizer,
    _hf_config_more_layers,
    _hf_edit,
    _hf_pickle,
    _hf_truncated,
    _hf_yarn,
    _hfrun_flipped,
    _huge_weights,
    _llama,
    _nan_weights,
    _remote_code_model,
    _remote_code_tokenizer,
)

# a hub card's YAML naming two configs, each with its own train files (openai/gsm8k's main and socratic)
GH_CARD = ("---\nconfigs:\n- config_name: main\n  data_files:\n  - split: train\n    path: main/train.jsonl\n"
           "- config_name: socratic\n  data_files:\n  - split: train\n    path: socratic/train.jsonl\n---\n")


def _string_eos(d: Path) -> None:
    f = d / "generation_config.json"
    f.write_text(json.dumps({**json.loads(f.read_text()), "eos_token_id": "0"}))


def _json_edit(file: str, **kw: object):
    def edit(d: Path) -> None:
        (d / file).write_text(json.dumps({**json.loads((d / file).read_text()), **kw}))
    return edit


def _no_chat_template(d: Path) -> None:
    (d / "chat_template.jinja").unlink()


def _named_templates(d: Path) -> None:
    from .hf_fixtures import name_templates

    name_templates(d)


def _tokenizer_400(d: Path) -> None:
    from .hf_fixtures import tiny_chat_tokenizer

    tiny_chat_tokenizer(vocab_size=400).save_pretrained(d)


def _zero_template(tmp: Path, copy: Path) -> None:
    """<tmp>/z.jinja: a link to /dev/zero"""
    (tmp / "z.jinja").symlink_to("/dev/zero")


def _assistant_only(d: Path) -> None:
    (d / "chat_template.jinja").write_text(
        "{% for m in messages %}{% if m.role == 'assistant' %}<|im_start|>assistant\n{{ m.content }}<|im_end|>\n"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


_WEATHER = ('{"messages": [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "%s", '
            '"tool_calls": [{"type": "function", "function": {"name": "get_weather", "%s": {"city": "Paris"}}}]}, '
            '{"role": "tool", "content": "20"}, {"role": "assistant", "content": "It is 20."}]}')

def _string_args(arguments: str) -> str:
    """_WEATHER with its call's arguments the JSON string `arguments` (OpenAI's format)"""
    return (_WEATHER % ("", "arguments")).replace('{"city": "Paris"}', json.dumps(arguments))


def _struct_arguments(tmp: Path, copy: Path) -> None:
    """<tmp>/tc.parquet: two records whose tool calls have other argument keys (Arrow unifies them)"""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(_WEATHER % ("", "arguments")) for _ in range(2)]
    rows[1]["messages"][1]["tool_calls"][0]["function"]["arguments"] = {"query": "news", "limit": 3}
    pq.write_table(pa.Table.from_pylist(rows), tmp / "tc.parquet")


# DeepSeek-R1's assistant branch: only what follows </think> is written
_R1 = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' and '</think>' in m.content %}"
       "{{ m.content.split('</think>')[-1] }}{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
       "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

HF_CASES: dict[str, Case] = {
    "hf-finetune-export-chatml": Case("hf", "finetune a character-level export with the chatml template (its "
                                      "markers are characters the export does not know)", FT, {
        "ft.yaml": FT_YAML.replace("{base}\n", "{tmp}/exp\n  gradient_checkpointing: false\n").replace(
            "max_length: 256\n", "max_length: 256\n  chat_template: chatml\n"),
        "chat.jsonl": '{"messages": [{"role": "user", "content": "1+1="}, {"role": "assistant", "content": "2"}]}\n'},
        prepare=_export, hf=True),
    "hf-finetune-native-config": Case("hf", "finetune with a config for looplm's own model",
                                      ["finetune", "--config", "addition-prenorm-stars", "--out", "{tmp}/ft"], hf=True),
    "hf-finetune-init-from": Case("hf", "train.init_from for a pretrained model", FT,
                                  {"ft.yaml": FT_YAML + "  init_from: x\n", "chat.jsonl": GOOD_CHAT + "\n"}, hf=True),
    "hf-finetune-eval-every": Case("hf", "train.eval_every for chat data", FT,
                                   {"ft.yaml": FT_YAML + "  eval_every: 5\n", "chat.jsonl": GOOD_CHAT + "\n"},
                                   hf=True),
    "hf-finetune-remote-code": Case("hf", "a model directory that needs its own code", [
        "finetune", "--config", "{tmp}/r.yaml", "--out", "{tmp}/ft", "--no-progress"],
        {"r.yaml": "model:\n  name_or_path: {tmp}/remote\ndata:\n  source: {tmp}/chat.jsonl\ntrain:\n  steps: 1\n",
         "chat.jsonl": GOOD_CHAT + "\n"}, prepare=_remote_code_model, hf=True),
    "hf-eval-not-looped": Case("hf", "eval-lm on a model that does not loop (its loop count would be ignored)", [
        "eval-lm", "{tmp}/m", "--tasks", "x", "--out", "{tmp}/e"], prepare=_llama, hf=True),
    "hf-finetune-not-looped": Case("hf", "finetune a model that does not loop", FT, {
        "ft.yaml": FT_YAML.replace("{base}", "{tmp}/m"), "chat.jsonl": GOOD_CHAT + "\n"}, prepare=_llama, hf=True),
    "hf-eval-weights-missing": Case("hf", "eval-lm on a model whose weights lack a layer its config asks for", [
        "eval-lm", "{tmp}/m", "--tasks", "x", "--out", "{tmp}/e"], prepare=_hf_config_more_layers, hf=True),
    "hf-finetune-weights-missing": Case("hf", "finetune a model whose weights lack a layer its config asks for", FT, {
        "ft.yaml": FT_YAML.replace("{base}", "{tmp}/m"), "chat.jsonl": GOOD_CHAT + "\n"},
        prepare=_hf_config_more_layers, hf=True),
    "hf-eval-pickle": Case("hf", "eval-lm on weights that are a pickle running a command", [
        "eval-lm", "{tmp}/m", "--tasks", "x", "--out", "{tmp}/e"], prepare=_hf_pickle, hf=True),
    "hf-analyze-pickle": Case("hf", "analyze weights that are a pickle running a command", [
        "analyze", "{tmp}/m", "--data", "{tmp}/chat.jsonl", "--no-progress", "--out", "{tmp}/a"],
        {"chat.jsonl": GOOD_CHAT + "\n"}, prepare=_hf_pickle, hf=True),
    "hf-eval-truncated": Case("hf", "eval-lm on a truncated model.safetensors", [
        "eval-lm", "{tmp}/m", "--tasks", "x", "--out", "{tmp}/e"], prepare=_hf_truncated, hf=True),
    "hf-eval-yarn": Case("hf", "eval-lm on a config with a RoPE scaling Ouro does not have", [
        "eval-lm", "{tmp}/m", "--tasks", "x", "--out", "{tmp}/e"], prepare=_hf_yarn, hf=True),
    "hf-eval-flipped-checkpoint": Case("hf", "eval-lm on a fine-tune whose checkpoint fails its manifest", [
        "eval-lm", "{tmp}/ft", "--tasks", "x", "--out", "{tmp}/e"], prepare=_hfrun_flipped, hf=True),
    "hf-analyze-flipped-checkpoint": Case("hf", "analyze a fine-tune whose checkpoint fails its manifest", [
        "analyze", "{tmp}/ft", "--data", "{tmp}/chat.jsonl", "--no-progress", "--out", "{tmp}/a"],
        {"chat.jsonl": GOOD_CHAT + "\n"}, prepare=_hfrun_flipped, hf=True),
    "hf-finetune-local-revision": Case("hf", "model.revision for a local model directory (a hub option)", FT, {
        "ft.yaml": FT_YAML.replace("  max_length: 256\n", "  max_length: 256\n").replace(
            "{base}\n", "{base}\n  revision: no-such-branch\n"), "chat.jsonl": GOOD_CHAT + "\n"}, hf=True),
    "hf-finetune-from-run-dir": Case("hf", "finetune from a fine-tune's run directory (its model is in checkpoint/)",
                                     FT, {"ft.yaml": FT_YAML.replace("{base}", "{hfrun}"),
                                          "chat.jsonl": GOOD_CHAT + "\n"}, hf=True),
    "hf-finetune-tokenizer-too-big": Case("hf", "model.tokenizer with more tokens than the model's embedding", FT, {
        "ft.yaml": FT_YAML.replace("{base}\n", "{base}\n  tokenizer: {tmp}/tok\n"),
        "chat.jsonl": GOOD_CHAT + "\n"}, prepare=_big_tokenizer, hf=True),
    "hf-finetune-tokenizer-missing": Case("hf", "model.tokenizer naming a folder that does not exist", FT, {
        "ft.yaml": FT_YAML.replace("{base}\n", "{base}\n  tokenizer: {tmp}/no-such-tokenizer\n"),
        "chat.jsonl": GOOD_CHAT + "\n"}, hf=True),
    "hf-finetune-tokenizer-file": Case("hf", "model.tokenizer naming a file (the data, by mistake)", FT, {
        "ft.yaml": FT_YAML.replace("{base}\n", "{base}\n  tokenizer: {tmp}/chat.jsonl\n"),
        "chat.jsonl": GOOD_CHAT + "\n"}, hf=True),
    "hf-resume-other-seed": Case("hf", "finetune --resume with another seed (the hint names the run's own settings "
                                 "file, not the model's config.json)", [
        "finetune", "--config", "{hfrun}/config.yaml", "--out", "{hfrun}", "--resume", "--no-progress", "--set",
        "train.seed=5"], hf=True),
    "hf-eval-nan-weights": Case("hf", "eval-lm on a model whose weights hold NaN (every score would be an argmax of "
                                "NaNs)", ["eval-lm", "{tmp}/m", "--tasks", "x", "--out", "{tmp}/e"],
                                prepare=_hf_edit("a weight set to NaN", _nan_weights), hf=True),
    "hf-analyze-nan-weights": Case("hf", "analyze a model whose weights hold NaN", [
        "analyze", "{tmp}/m", "--data", "{tmp}/chat.jsonl", "--no-progress", "--out", "{tmp}/a"],
        {"chat.jsonl": GOOD_CHAT + "\n"}, prepare=_hf_edit("a weight set to NaN", _nan_weights), hf=True),
    "hf-eval-config-fewer-layers": Case("hf", "eval-lm on weights of 2 layers under a config of 1 (the second would "
                                        "be dropped)", ["eval-lm", "{tmp}/m", "--tasks", "x", "--out", "{tmp}/e"],
                                        prepare=_hf_edit("its config.json saying 1 layer", _config_edit(
                                            num_hidden_layers=1, layer_types=["full_attention"],
                                            max_window_layers=1)), hf=True),
    "hf-finetune-config-other-shape": Case("hf", "finetune weights of another width than the config's", FT, {
        "ft.yaml": FT_YAML.replace("{base}", "{tmp}/m"), "chat.jsonl": GOOD_CHAT + "\n"},
        prepare=_hf_edit("its config.json with intermediate_size 48 (weights: 64)", _config_edit(
            intermediate_size=48)), hf=True),
    "hf-finetune-out-inside-data": Case("hf", "finetune --out inside its data.source folder (the run's own files "
                                        "would be read as data)", [
        "finetune", "--config", "{tmp}/ft.yaml", "--out", "{tmp}/data/run", "--no-progress"], {
        "ft.yaml": FT_YAML.replace("{tmp}/chat.jsonl", "{tmp}/data"), "data/chat.jsonl": GOOD_CHAT + "\n"},
        hf=True),
    "hf-finetune-steps-and-epochs-set": Case("hf", "finetune with --set train.epochs=3 beside the file's steps: 1 "
                                             "(the epochs were dropped in silence)", [
        *FT, "--set", "train.epochs=3"], {"ft.yaml": FT_YAML, "chat.jsonl": GOOD_CHAT + "\n"}, hf=True),
    "hf-finetune-steps-and-epochs-in-file": Case("hf", "a fine-tune config file that sets both train.steps and "
                                                 "train.epochs", FT, {
        "ft.yaml": FT_YAML.replace("steps: 1\n", "steps: 1\n  epochs: 2\n"), "chat.jsonl": GOOD_CHAT + "\n"},
        hf=True),
    "hf-eval-exit-on-export": Case("hf", "eval-lm --exit-threshold on a looplm export (no exit gate: the rows would "
                                   "be every loop, recorded as early exits)", [
        "eval-lm", "{tmp}/exp", "--tasks", "x", "--exit-threshold", "0", "--out", "{tmp}/e"], prepare=_export,
        hf=True),
    "hf-eval-exit-threshold-negative": Case("hf", "eval-lm on a model whose config.json sets early_exit_threshold -3 "
                                            "(every row would quietly be loop 1)", [
        "eval-lm", "{tmp}/m", "--tasks", "x", "--out", "{tmp}/e"],
        prepare=_hf_edit("its config.json with early_exit_threshold -3", _config_edit(early_exit_threshold=-3)),
        hf=True),
    "hf-eval-exit-threshold-nan": Case("hf", "eval-lm on a model whose config.json sets early_exit_threshold NaN "
                                       "(never reached: quietly the last loop)", [
        "eval-lm", "{tmp}/m", "--tasks", "x", "--out", "{tmp}/e"],
        prepare=_hf_edit("its config.json with early_exit_threshold NaN", _config_edit(
            early_exit_threshold=float("nan"))), hf=True),
    "hf-eval-loops-fraction": Case("hf", "eval-lm on a model whose config.json sets total_ut_steps 2.5 (2 loops ran)", [
        "eval-lm", "{tmp}/m", "--tasks", "x", "--out", "{tmp}/e"],
        prepare=_hf_edit("its config.json with total_ut_steps 2.5", _config_edit(total_ut_steps=2.5)), hf=True),
    "hf-finetune-fields-unused": Case("hf", "data.response_field set, but format auto trains the records' own "
                                      "messages (the field went unused)", [*FT, "--set", "data.response_field=target"],
                                      {"ft.yaml": FT_YAML, "chat.jsonl": GOOD_CHAT[:-1] + ', "problem": "1+1?", '
                                       '"target": "2"}\n'}, hf=True),
    "hf-finetune-messages-field-unused": Case("hf", "data.messages_field names a field no record has (auto read "
                                              "them as problem/solution)", [*FT, "--set", "data.messages_field=conv"],
                                              {"ft.yaml": FT_YAML, "chat.jsonl": '{"problem": "1+1?", "solution": '
                                               '"#### 2"}\n'}, hf=True),
    "hf-eval-rope-theta-zero": Case("hf", "eval-lm on a model whose config.json sets rope_theta 0 (every logit NaN: "
                                    "a multiple-choice task scored 100%)", ["eval-lm", "{tmp}/m", "--tasks", "x",
                                                                            "--out", "{tmp}/e"],
                                    prepare=_hf_edit("its config.json with rope_theta 0", _config_edit(rope_theta=0)),
                                    hf=True),
    "hf-eval-logits-overflow": Case("hf", "eval-lm on finite weights whose logits overflow (inf and NaN: scored as "
                                    "if fine)", ["eval-lm", "{tmp}/m", "--tasks", "x", "--out", "{tmp}/e"],
                                    prepare=_hf_edit("weights set to 3e38", _huge_weights), hf=True),
    "hf-eval-bad-activation": Case("hf", "eval-lm on a model whose config.json names no activation (a KeyError "
                                   "traceback)", ["eval-lm", "{tmp}/m", "--tasks", "x", "--out", "{tmp}/e"],
                                   prepare=_hf_edit("its config.json with hidden_act foo",
                                                    _config_edit(hidden_act="foo")), hf=True),
    "hf-eval-kv-heads-zero": Case("hf", "eval-lm on a model whose config.json sets num_key_value_heads 0 (a "
                                  "ZeroDivisionError traceback)", ["eval-lm", "{tmp}/m", "--tasks", "x", "--out",
                                                                   "{tmp}/e"],
                                  prepare=_hf_edit("its config.json with num_key_value_heads 0",
                                                   _config_edit(num_key_value_heads=0)), hf=True),
    "hf-eval-bin-truncated": Case("hf", "eval-lm on a truncated pytorch_model.bin", [
        "eval-lm", "{tmp}/m", "--tasks", "x", "--out", "{tmp}/e"],
        prepare=_hf_edit("its weights as pytorch_model.bin, cut to half", _as_bin(True)), hf=True),
    "hf-eval-config-not-json": Case("hf", "eval-lm on a model directory whose config.json is not JSON", [
        "eval-lm", "{tmp}/m", "--tasks", "x", "--out", "{tmp}/e"],
        prepare=_hf_edit("config.json cut to '{'", lambda d: (d / "config.json").write_text("{")), hf=True),
    "hf-finetune-config-no-model-type": Case("hf", "finetune a model directory whose config.json has no model_type",
                                             FT, {"ft.yaml": FT_YAML.replace("{base}", "{tmp}/m"),
                                                  "chat.jsonl": GOOD_CHAT + "\n"},
                                             prepare=_hf_edit("model_type removed from config.json", lambda d: (
                                                 d / "config.json").write_text(json.dumps(
                                                     {k: v for k, v in json.loads((d / "config.json").read_text())
                                                      .items() if k != "model_type"}))), hf=True),
    "hf-eval-tokenizer-not-json": Case("hf", "eval-lm on a model directory whose tokenizer.json is not JSON", [
        "eval-lm", "{tmp}/m", "--tasks", "x", "--out", "{tmp}/e"],
        prepare=_hf_edit("tokenizer.json cut to its first 20 characters", lambda d: (d / "tokenizer.json").write_text(
            (d / "tokenizer.json").read_text()[:20])), hf=True),
    "hf-analyze-export-unknown-char": Case("hf", "analyze an export on records with characters outside its vocabulary",
                                           ["analyze", "{tmp}/exp", "--data", "{tmp}/chat.jsonl", "--no-progress",
                                            "--out", "{tmp}/a"], {"chat.jsonl": GOOD_CHAT + "\n"}, prepare=_export,
                                           hf=True),
    "hf-analyze-export-too-long": Case("hf", "analyze an export on records all longer than its positions (no longer "
                                       "limit can help)", ["analyze", "{tmp}/exp", "--data", "{tmp}/long.jsonl",
                                                           "--no-progress", "--out", "{tmp}/a"],
                                       {"long.jsonl": '{"problem": "1234567+1234567=", "solution": "2469134"}\n'},
                                       prepare=_export, hf=True),
    "hf-finetune-unfrozen-gate": Case("hf", "model.freeze_exit_gate=false (the objective never reads the gate: it "
                                      "would not train, and DDP would fail at step 2)", FT, {
        "ft.yaml": FT_YAML.replace("{base}\n", "{base}\n  freeze_exit_gate: false\n"), "chat.jsonl": GOOD_CHAT + "\n"},
        hf=True),
    "hf-analyze-broken-template": Case("hf", "analyze a model whose chat template does not parse", [
        "analyze", "{tmp}/m", "--data", "{tmp}/chat.jsonl", "--no-progress", "--out", "{tmp}/a"],
        {"chat.jsonl": GOOD_CHAT + "\n"}, prepare=_hf_edit("a chat template that does not parse", lambda d: (
            d / "chat_template.jinja").write_text("{% for m in messages %}")), hf=True),
    "hf-eval-out-unwritable": Case("hf", "eval-lm --out where nothing can be written (found before the work)", [
        "eval-lm", "{base}", "--tasks", "x", "--out", "/proc/looplm-eval"], hf=True),
    "hf-analyze-remote-code-tokenizer": Case("hf", "analyze an export whose tokenizer needs its own code", [
        "analyze", "{tmp}/exp", "--data", "{tmp}/chat.jsonl", "--no-progress", "--out", "{tmp}/a"],
        {"chat.jsonl": GOOD_CHAT + "\n"}, prepare=_remote_code_tokenizer, hf=True),
    "hf-analyze-remote-code": Case("hf", "analyze a model directory that needs its own code", [
        "analyze", "{tmp}/remote", "--data", "{tmp}/chat.jsonl", "--no-progress"], {"chat.jsonl": GOOD_CHAT + "\n"},
        prepare=_remote_code_model, hf=True),
    "hf-finetune-split-local": Case("hf", "data.split for a local file (a hub option)", FT, {
        "ft.yaml": FT_YAML.replace("  max_length: 256\n", "  max_length: 256\n  split: test\n"),
        "chat.jsonl": GOOD_CHAT + "\n"}, hf=True),
    "hf-finetune-config-name-local": Case("hf", "data.config_name for a local file (a hub option)", FT, {
        "ft.yaml": FT_YAML.replace("  max_length: 256\n", "  max_length: 256\n  config_name: main\n"),
        "chat.jsonl": GOOD_CHAT + "\n"}, hf=True),
    "hf-analyze-export-no-tokenizer": Case("hf", "analyze an export whose tokenizer files were deleted", [
        "analyze", "{tmp}/exp", "--data", "{tmp}/chat.jsonl", "--no-progress", "--out", "{tmp}/a"],
        {"chat.jsonl": GOOD_CHAT + "\n"}, prepare=_export_no_tokenizer, hf=True),
    "hf-analyze-no-data": Case("hf", "analyze an HF model without --data", ["analyze", "{base}", "--no-progress",
                               "--out", "{tmp}/a"], hf=True),
    "hf-analyze-data-missing": Case("hf", "analyze an HF model with a --data file that does not exist", [
        "analyze", "{base}", "--data", "{tmp}/none.jsonl", "--no-progress", "--out", "{tmp}/a"], hf=True),
    "hf-analyze-n-above-data": Case("hf", "analyze more records than the --data file holds", [
        "analyze", "{base}", "--data", "{tmp}/chat.jsonl", "--n", "10", "--no-progress", "--out", "{tmp}/a"],
        {"chat.jsonl": (GOOD_CHAT + "\n") * 3}, hf=True),
    "hf-finetune-native-run": Case("hf", "finetune from a run of looplm's own model", FT, {
        "ft.yaml": FT_YAML.replace("{base}", "{run}"), "chat.jsonl": GOOD_CHAT + "\n"}, hf=True),
    "hf-eval-limit-fraction": Case("hf", "eval-lm with --limit 1.5", ["eval-lm", "{base}", "--tasks", "x",
                                   "--limit", "1.5"], hf=True),
    "hf-export-loops-huge": Case("hf", "export-hf with a trillion loops", ["export-hf", "{run}", "--out", "{tmp}/x",
                                 "--loops", "1000000000000"], hf=True),
    "hf-eval-native-run": Case("hf", "eval-lm on a run of looplm's own model", ["eval-lm", "{run}", "--tasks", "x",
                               "--out", "{tmp}/e"], hf=True),
    "hf-eval-export-no-tokenizer": Case("hf", "eval-lm on an export whose tokenizer files were deleted", [
        "eval-lm", "{tmp}/exp", "--tasks", "x", "--out", "{tmp}/e"], prepare=_export_no_tokenizer, hf=True),
    "hf-eval-unknown-task": Case("hf", "eval-lm with an unknown task", ["eval-lm", "{base}", "--tasks",
                                 "no_such_task_xyz", "--out", "{tmp}/e"], hf=True),
    "hf-eval-missing-model": Case("hf", "eval-lm on a model directory that does not exist", [
        "eval-lm", "{tmp}/nope", "--tasks", "x", "--out", "{tmp}/e"], hf=True),
    "hf-eval-dtype": Case("hf", "eval-lm with an unknown dtype", ["eval-lm", "{base}", "--tasks", "x", "--dtype",
                          "bogus"], hf=True),
    "hf-eval-batch-zero": Case("hf", "eval-lm with batch size 0", ["eval-lm", "{base}", "--tasks", "x",
                               "--batch-size", "0"], hf=True),
    "hf-export-out-under-a-file": Case("hf", "export-hf --out inside a path that is a file", [
        "export-hf", "{run}", "--out", "{tmp}/afile/x"], {"afile": "not a folder\n"}, hf=True),
    "hf-export-out-dangling-link": Case("hf", "export-hf --out a symlink to nothing", [
        "export-hf", "{run}", "--out", "{tmp}/dang"], prepare=_dangling_link, hf=True),
    "hf-export-loops-zero": Case("hf", "export-hf with 0 loops", ["export-hf", "{run}", "--out", "{tmp}/x",
                                 "--loops", "0"], hf=True),
    "hf-sweep-on-finetune": Case("hf", "sweep a fine-tuned HF checkpoint (a task sweep needs looplm's own model)",
                                 ["sweep", "{hfrun}", "--no-progress", "--out", "{tmp}/s.json"], hf=True),
    "hf-finetune-source-loader-name": Case("hf", "data.source json: datasets' loader name, not data (it read every "
                                           "data file under the working folder)", FT, {
        "ft.yaml": FT_YAML.replace("source: {tmp}/chat.jsonl", "source: json"), "chat.jsonl": GOOD_CHAT + "\n"},
        hf=True),
    "hf-finetune-folder-ndjson": Case("hf", "a data folder holding an .ndjson file (JSON Lines under another name, "
                                      "left out)", FT, {
        "ft.yaml": FT_YAML.replace("source: {tmp}/chat.jsonl", "source: {tmp}/d"), "d/a.jsonl": GOOD_CHAT + "\n",
        "d/b.ndjson": GOOD_CHAT + "\n"}, hf=True),
    "hf-resume-kind-mismatch": Case("hf", "--resume a fine-tune with a config for looplm's own model", [
        "train", "--config", "addition-prenorm-stars", "--out", "{hfrun}", "--resume", "--no-progress"], hf=True),
    "chat-template-drops-system": Case("data", "data.system_prompt with a chat template that writes no system turn",
                                       FT, {**(t := template(
        "{% for m in messages %}{% if m.role != 'system' %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")),
        "ft.yaml": t["ft.yaml"].replace("  max_length: 256\n", "  max_length: 256\n  system_prompt: Be a tutor.\n")},
        hf=True),
    "hf-eval-generation-config-string-id": Case("hf", "eval-lm on a model whose generation_config.json has a string "
                                                "token id", ["eval-lm", "{tmp}/m", "--tasks", "x", "--out", "{tmp}/e"],
                                                prepare=_hf_edit('its generation_config.json with eos_token_id "0"',
                                                                 _string_eos), hf=True),
    "hf-eval-no-chat-template": Case("hf", "eval-lm --apply-chat-template on a model with no chat template", [
        "eval-lm", "{tmp}/m", "--tasks", "x", "--apply-chat-template", "--out", "{tmp}/e"],
        prepare=_hf_edit("its chat_template.jinja removed", _no_chat_template), hf=True),
    "hf-analyze-tokenizer-too-big": Case("hf", "analyze a model directory whose tokenizer has more tokens than its "
                                         "embedding", [
        "analyze", "{tmp}/m", "--data", "{tmp}/chat.jsonl", "--no-progress", "--out", "{tmp}/a"],
        {"chat.jsonl": GOOD_CHAT + "\n"}, prepare=_hf_edit("its tokenizer replaced by one of 400 tokens",
                                                            _tokenizer_400),
        hf=True),
    "hf-finetune-chat-template-data-file": Case("hf", "data.chat_template naming the data file (no template in it)",
                                                FT, {"ft.yaml": FT_YAML.replace("max_length: 256\n", "max_length: 256\n"
                                                                                "  chat_template: {tmp}/chat.jsonl\n"),
                                                     "chat.jsonl": GOOD_CHAT + "\n"}, hf=True),
    "hf-analyze-layer-types": Case("hf", "analyze a model whose config.json layer_types has one entry for two "
                                   "layers", ["analyze", "{tmp}/m", "--data", "{tmp}/chat.jsonl", "--no-progress",
                                              "--out", "{tmp}/a"], {"chat.jsonl": GOOD_CHAT + "\n"},
                                   prepare=_hf_edit('its config.json with layer_types ["full_attention"]',
                                                    _config_edit(layer_types=["full_attention"])), hf=True),
    "hf-eval-generation-config-pad-list": Case("hf", "eval-lm on a model whose generation_config.json has a list "
                                               "pad_token_id", ["eval-lm", "{tmp}/m", "--tasks", "x", "--out",
                                                                "{tmp}/e"],
                                               prepare=_hf_edit("its generation_config.json with pad_token_id [0, 2]",
                                                                _json_edit("generation_config.json",
                                                                           pad_token_id=[0, 2])), hf=True),
    "hf-eval-model-max-length-string": Case("hf", "eval-lm on a model whose tokenizer_config.json has a string "
                                            "model_max_length", ["eval-lm", "{tmp}/m", "--tasks", "x", "--out",
                                                                 "{tmp}/e"],
                                            prepare=_hf_edit('its tokenizer_config.json with model_max_length "abc"',
                                                             _json_edit("tokenizer_config.json",
                                                                        model_max_length="abc")), hf=True),
    "chat-capital-role": Case("data", "a chat record whose roles are capitalised (User, Assistant)", FT, chat(
        GOOD_CHAT, '{"messages": [{"role": "User", "content": "2+2?"}, {"role": "Assistant", "content": "4"}]}'),
        hf=True),
    "hf-finetune-lone-surrogate": Case("data", "a chat record whose content holds a lone surrogate escape (\\ud800: "
                                       "valid JSON, no character)", FT, chat(
        '{"messages": [{"role": "user", "content": "a\\ud800b"}, {"role": "assistant", "content": "c"}]}'), hf=True),
    "hf-analyze-lone-surrogate": Case("hf", "analyze records whose answer holds a lone surrogate escape", [
        "analyze", "{base}", "--data", "{tmp}/qa.jsonl", "--no-progress", "--out", "{tmp}/a"],
        {"qa.jsonl": '{"question": "1+1?", "answer": "2\\udc00"}\n'}, hf=True),
    "hf-eval-sliding-layer": Case("hf", "eval-lm on a model whose config.json has a sliding_attention layer (generate "
                                  "failed in transformers' cache; scoring ran full attention)", [
        "eval-lm", "{tmp}/m", "--tasks", "x", "--out", "{tmp}/e"],
        prepare=_hf_edit('its config.json with layer_types ["sliding_attention", "full_attention"]', _config_edit(
            layer_types=["sliding_attention", "full_attention"], sliding_window=4)), hf=True),
    "hf-finetune-named-templates": Case("hf", "finetune a model whose tokenizer has named chat templates and none "
                                        "called default", FT, {"ft.yaml": FT_YAML.replace("{base}", "{tmp}/m"),
                                                               "chat.jsonl": GOOD_CHAT + "\n"},
                                        prepare=_hf_edit("named chat templates rag and tool_use, no default",
                                                         _named_templates), hf=True),
    "hf-analyze-named-templates": Case("hf", "analyze a model whose tokenizer has named chat templates and none "
                                       "called default (analyze takes no template name)", [
        "analyze", "{tmp}/m", "--data", "{tmp}/chat.jsonl", "--no-progress", "--out", "{tmp}/a"],
        {"chat.jsonl": GOOD_CHAT + "\n"},
        prepare=_hf_edit("named chat templates rag and tool_use, no default", _named_templates), hf=True),
    "hf-finetune-system-prompt-surrogate": Case("data", "data.system_prompt holding a lone surrogate escape", FT, {
        "ft.yaml": FT_YAML.replace("  max_length: 256\n", "  max_length: 256\n  system_prompt: \"a\\ud800b\"\n"),
        "chat.jsonl": GOOD_CHAT + "\n"}, hf=True),
    "hf-finetune-template-surrogate": Case("data", "a data.chat_template string holding a lone surrogate escape", FT, {
        "ft.yaml": FT_YAML.replace("  max_length: 256\n", "  max_length: 256\n  chat_template: \"{% for m in "
                                   "messages %}\\ud800{{ m.content }}{% endfor %}\"\n"),
        "chat.jsonl": GOOD_CHAT + "\n"}, hf=True),
    "hf-finetune-tool-calls-string": Case("data", "a chat record whose tool_calls is a JSON string (a stringified "
                                          "export; every template dropped it)", FT, chat(
        GOOD_CHAT, '{"messages": [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "", '
        '"tool_calls": "[{\\"type\\": \\"function\\"}]"}, {"role": "tool", "content": "20"}, {"role": '
        '"assistant", "content": "It is 20."}]}'), hf=True),
    "hf-finetune-function-call": Case("data", "a chat record in OpenAI's legacy function-calling format "
                                      "(function_call, role function), which ChatML drops", FT, chat(
        '{"messages": [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "Checking.", '
        '"function_call": {"name": "get_weather", "arguments": "{}"}}, {"role": "function", "name": "get_weather", '
        '"content": "20"}, {"role": "assistant", "content": "It is 20."}]}'), hf=True),
    "hf-finetune-role-dropped": Case("data", "a chat record with an ipython turn the template does not write", FT, {
        **template("{% for m in messages %}{% if m.role in ['user', 'assistant'] %}<|im_start|>{{ m.role }}\n"
                   "{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
                   "<|im_start|>assistant\n{% endif %}"),
        "chat.jsonl": '{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "Run."}, '
                      '{"role": "ipython", "content": "4"}, {"role": "assistant", "content": "It is 4."}]}\n'},
        hf=True),
    "hf-finetune-reasoning-dropped": Case("data", "a chat record with reasoning_content, which ChatML drops", FT,
                                          chat('{"messages": [{"role": "user", "content": "2+3?"}, {"role": '
                                               '"assistant", "content": "#### 5", "reasoning_content": "2 and 3 '
                                               'make 5."}]}'), hf=True),
    "hf-finetune-system-prompt-refused": Case("data", "data.system_prompt with a template that refuses system turns "
                                              "(the first record was named)", FT, {
        **(t := template("{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}"
                         "{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")),
        "ft.yaml": t["ft.yaml"].replace("t.jinja\n", "t.jinja\n  system_prompt: Be brief.\n")}, hf=True),
    "hf-eval-template-drops-question": Case("hf", "eval-lm --apply-chat-template on a model whose chat template "
                                            "drops the user turn (every prompt lost its question)", [
        "eval-lm", "{tmp}/m", "--tasks", "x", "--apply-chat-template", "--out", "{tmp}/e"],
        prepare=_hf_edit("a chat template that writes only assistant turns", _assistant_only), hf=True),
    "hf-finetune-tool-call-text-dropped": Case("data", "a chat record with text beside its tool call, under a "
                                               "template that writes only the call (Llama 3.1's)", FT, {
        **template("{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}{{ m.tool_calls[0].function"
                   ".name }}{{ m.tool_calls[0].function.arguments | tojson }}{% else %}{{ m.content }}{% endif %}<|im_"
                   "end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"),
        "chat.jsonl": _WEATHER % ("Let me look that up.", "arguments") + "\n"}, hf=True),
    "hf-finetune-tool-call-parameters": Case("data", "a chat record whose tool call has `parameters` for `arguments`",
                                             FT, chat(_WEATHER % ("", "parameters")), hf=True),
    "hf-finetune-reasoning-not-string": Case("data", "a chat record whose reasoning_content is a list (it passed the "
                                             "drop check)", FT, chat(
        '{"messages": [{"role": "user", "content": "2+3?"}, {"role": "assistant", "content": "#### 5", '
        '"reasoning_content": ["2 and 3", "make 5"]}]}'), hf=True),
    "hf-finetune-template-device": Case("hf", "data.chat_template a .jinja link to /dev/zero (read until memory ran "
                                        "out)", FT, {"ft.yaml": FT_YAML.replace("  max_length: 256\n", "  max_length: "
                                                     "256\n  chat_template: {tmp}/z.jinja\n"),
                                                     "chat.jsonl": GOOD_CHAT + "\n"},
                                        prepare=_zero_template, hf=True),
    "hf-finetune-think-dropped": Case("data", "a chat record whose content holds <think> reasoning, under an "
                                      "R1-style template that keeps only what follows </think>", FT, {
        **template(_R1), "chat.jsonl": '{"messages": [{"role": "user", "content": "2+3?"}, {"role": "assistant", '
                                       '"content": "<think>2 and 3 make 5.</think> #### 5"}]}\n'}, hf=True),
    "hf-finetune-arguments-not-json": Case("data", "a chat record whose tool call's arguments are a string but no "
                                           "JSON object", FT, chat((_WEATHER % ("", "arguments")).replace(
                                               '{"city": "Paris"}', '"Paris"')), hf=True),
    "hf-finetune-arguments-nan": Case("data", "a chat record whose tool call's JSON-string arguments hold NaN "
                                      "(read as a float, trained as no JSON)", FT, chat(_string_args('{"x": NaN}')),
                                      hf=True),
    "hf-finetune-arguments-duplicate-key": Case("data", "a chat record whose tool call's JSON-string arguments have a "
                                                "key twice (the last was kept in silence)", FT,
                                                chat(_string_args('{"city": "A", "city": "B"}')), hf=True),
    "chat-capital-role-calls-only": Case("data", "a capitalised Assistant turn with null content beside its tool "
                                         "calls (blamed on its content)", FT, chat(_string_args('{}').replace(
                                             '"assistant", "content": ""', '"Assistant", "content": null')), hf=True),
    "hf-finetune-parquet-struct-arguments": Case("data", "parquet tool calls whose arguments are Arrow structs (each "
                                                 "got the others' keys as null)", FT, {
        "ft.yaml": FT_YAML.replace("{tmp}/chat.jsonl", "{tmp}/tc.parquet")}, prepare=_struct_arguments, hf=True),
    "hf-analyze-tokenizer-not-utf8": Case("hf", "analyze a model whose chat_template.jinja is not UTF-8", [
        "analyze", "{tmp}/m", "--data", "{tmp}/chat.jsonl", "--no-progress", "--out", "{tmp}/a"],
        {"chat.jsonl": GOOD_CHAT + "\n"}, prepare=_hf_edit("a chat_template.jinja that starts with byte 0xff",
                                                            lambda d: (d / "chat_template.jinja").write_bytes(
                                                                b"\xff\xfe{{")), hf=True),
    "hf-finetune-inline-template-unquoted": Case("config", "an inline Jinja template in --set without YAML quotes "
                                                 "(blamed a config key)", [
        *FT, "--set", "data.chat_template={{ 'x' }}"], chat(GOOD_CHAT), hf=True),
    "hf-analyze-weight-zero": Case("hf", "analyze records whose only assistant turn has weight 0", [
        "analyze", "{base}", "--data", "{tmp}/w0.jsonl", "--no-progress", "--out", "{tmp}/a"],
        {"w0.jsonl": '{"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2", '
                     '"weight": 0}]}\n'}, hf=True),
    # round 33 answers/api
    "hf-finetune-loops-past-memory": Case("hf", "finetune at a million loops with a graph (it allocated until the "
                                          "machine's memory was gone)", FT, {
        "ft.yaml": FT_YAML.replace("{base}\n", "{base}\n  gradient_checkpointing: false\n").replace(
            "batch_size: 2\n", "batch_size: 8\nloops:\n  sampler: uniform\n  min_loops: 1000000\n  max_loops: "
            "1000000\n  num_loops: 1000000\n"), "chat.jsonl": GOOD_CHAT + "\n"}, hf=True),
    # round 34
    "hf-finetune-checkpointed-loops-past-memory": Case("hf", "finetune at a million loops with loops.checkpoint_loops "
                                                       "(autograd's records of each loop, 30x its state at width 32, "
                                                       "were not counted: it passed and allocated until it failed)",
                                                       FT, {
        "ft.yaml": FT_YAML.replace("{base}\n", "{base}\n  gradient_checkpointing: false\n").replace(
            "batch_size: 2\n", "batch_size: 2\nloops:\n  sampler: fixed\n  max_loops: 1000000\n  num_loops: "
            "1000000\n  checkpoint_loops: true\n"), "chat.jsonl": GOOD_CHAT + "\n"}, hf=True),
    # round 35 hfdata
    "hf-finetune-hub-folder-unknown-split": Case("data", "data.split=validation for a hub-snapshot folder of train and "
                                                 "test files (read whole, it trained on the test split)", [
        *FT, "--set", "data.source={tmp}/hub", "--set", "data.split=validation"], {
        "ft.yaml": FT_YAML, "hub/main/train-00000-of-00001.jsonl": GOOD_CHAT + "\n",
        "hub/main/test-00000-of-00001.jsonl": GOOD_CHAT + "\n"}, hf=True),
    "hf-finetune-unclosed-think": Case("data", "an assistant reply that opens a <think> block it never closes (a "
                                       "truncated trace, trained as an answer)", FT, chat(
        '{"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "<think>so it is"}]}'),
        hf=True),
    # round 35 lead
    "hf-analyze-hub-id": Case("hf", "analyze given a hub id (it read 'checkpoint ... does not exist'; analyze reads a "
                              "local folder)", ["analyze", "ByteDance/Ouro-1.4B", "--data", "{tmp}/d.jsonl",
                                                "--no-progress"], {"d.jsonl": GOOD_CHAT + "\n"}),
    # round 36 data
    "hf-finetune-multi-config-folder": Case("data", "a folder whose README.md names two configs (hf download "
                                            "openai/gsm8k --local-dir: main/ and socratic/), no data.config_name "
                                            "(both were trained: every question twice)", [
        *FT, "--set", "data.source={tmp}/gh"], {"ft.yaml": FT_YAML, "gh/README.md": GH_CARD,
                                                 "gh/main/train.jsonl": GOOD_CHAT + "\n",
                                                 "gh/socratic/train.jsonl": GOOD_CHAT + "\n"}, hf=True),
    "hf-finetune-unknown-config": Case("data", "data.config_name that the folder's README.md does not name", [
        *FT, "--set", "data.source={tmp}/gh", "--set", "data.config_name=other"], {
        "ft.yaml": FT_YAML, "gh/README.md": GH_CARD, "gh/main/train.jsonl": GOOD_CHAT + "\n",
        "gh/socratic/train.jsonl": GOOD_CHAT + "\n"}, hf=True),
    "hf-finetune-sharegpt-roles": Case("data", "messages whose roles are ShareGPT's human/gpt (no assistant turn: "
                                       "'check the shape and field names')", FT, chat(
        '{"messages": [{"role": "human", "content": "1+1?"}, {"role": "gpt", "content": "#### 2"}]}'), hf=True),
    # round 38 (HF data)
    "hf-finetune-one-name-two-suffixes": Case("data", "a data folder holding data.jsonl and data.json (the same "
                                              "records under two suffixes: every record was trained twice)", [
        *FT, "--set", "data.source={tmp}/dd"], {"ft.yaml": FT_YAML, "dd/data.jsonl": GOOD_CHAT + "\n",
                                                 "dd/data.json": "[" + GOOD_CHAT + "]"}, hf=True),
    "hf-finetune-card-configs-not-a-list": Case("data", "a data folder whose README.md says `configs: main` "
                                                "(datasets' own error named neither folder nor file)", [
        *FT, "--set", "data.source={tmp}/dd"], {"ft.yaml": FT_YAML, "dd/README.md": "---\nconfigs: main\n---\n",
                                                 "dd/train.jsonl": GOOD_CHAT + "\n"}, hf=True),
    "hf-finetune-empty-config-name": Case("config", "data.config_name='' (read as unset)", [
        *FT, "--set", "data.config_name=''"], chat(GOOD_CHAT), hf=True),
    # round 39 (HF)
    "hf-finetune-file-in-no-split": Case("data", "a data folder of math_problems.jsonl beside eval_problems.jsonl (a "
                                         "test split): the refusal did not name the file in no split", [
        *FT, "--set", "data.source={tmp}/sy"], {"ft.yaml": FT_YAML, "sy/math_problems.jsonl": GOOD_CHAT + "\n",
                                                 "sy/eval_problems.jsonl": GOOD_CHAT + "\n"}, hf=True),
    "hf-finetune-split-slicing": Case("data", "data.split=train[:4] (datasets' slicing) on a split folder", [
        *FT, "--set", "data.source={tmp}/sx", "--set", "data.split=train[:4]"], {
        "ft.yaml": FT_YAML, "sx/train.jsonl": GOOD_CHAT + "\n", "sx/test.jsonl": GOOD_CHAT + "\n"}, hf=True),
    "hf-finetune-json-columns": Case("data", "a .json data file of columns (pandas' default df.to_json)", [
        *FT, "--set", "data.source={tmp}/cols.json"], {"ft.yaml": FT_YAML, "cols.json": json.dumps(
            {"question": {"0": "1+1?", "1": "2+2?"}, "answer": {"0": "#### 2", "1": "#### 4"}})}, hf=True),
    "hf-finetune-template-folder": Case("config", "data.chat_template=a model folder (not its template file)", [
        *FT, "--set", "data.chat_template={tmp}/m"], {"ft.yaml": FT_YAML, "chat.jsonl": GOOD_CHAT + "\n",
                                                       "m/config.json": "{}"}, hf=True),
    # round 40 (HF)
    "hf-finetune-csv-file": Case("data", "data.source=a .csv file (a KeyError traceback: the two-formats check "
                                 "indexed the suffix)", [*FT, "--set", "data.source={tmp}/m.csv"], {
        "ft.yaml": FT_YAML, "m.csv": "question,answer\n1+1?,2\n"}, hf=True),
    "hf-finetune-jsonl-gz-file": Case("data", "data.source=a gzipped JSONL file (.jsonl.gz)", [
        *FT, "--set", "data.source={tmp}/m.jsonl.gz"], {"ft.yaml": FT_YAML, "m.jsonl.gz": GOOD_CHAT + "\n"}, hf=True),
    # round 42 (HF data and eval: empty values said as empty, not as the folder ".")
    "hf-finetune-empty-chat-template": Case("config", "data.chat_template= (empty: was said as the folder '.')", [
        *FT, "--set", "data.chat_template="], chat(GOOD_CHAT), hf=True),
    "hf-analyze-empty-model": Case("hf", "analyze '' (an empty model path: 'no model.safetensors in .')", [
        "analyze", "", "--data", "{tmp}/chat.jsonl", "--no-progress", "--out", "{tmp}/a"],
        {"chat.jsonl": GOOD_CHAT + "\n"}, hf=True),
    "hf-eval-empty-model": Case("hf", "eval-lm '' (an empty model path, shown as nothing)", [
        "eval-lm", "", "--tasks", "x", "--out", "{tmp}/e"], hf=True),
    "hf-analyze-blank-data": Case("data", "analyze --data ' ' (a blank data source, its space unquoted)", [
        "analyze", "{hfrun}", "--data", " ", "--no-progress", "--out", "{tmp}/a"], hf=True),
    "hf-eval-empty-include-path": Case("hf", "eval-lm --include-path '' (said as no --include-path given)", [
        "eval-lm", "{hfrun}", "--tasks", "x", "--include-path", "", "--out", "{tmp}/e"], hf=True),
    "hf-eval-empty-tasks": Case("hf", "eval-lm --tasks '' (said in the Python API's terms)", [
        "eval-lm", "{hfrun}", "--tasks", "", "--out", "{tmp}/e"], hf=True),
    "hf-eval-edited-gold": Case("data", "eval-lm of a write_lm_eval_task task whose data got an empty gold after "
                                "(named neither task nor record, after all the generation)", [
        "eval-lm", "{base}", "--tasks", "gg", "--include-path", "{tmp}/tk", "--depths", "1", "--out", "{tmp}/e"],
        prepare=lambda tmp, copy: _edited_gold(tmp), hf=True,
        before="write_lm_eval_task(tk, g.jsonl, name=gg), then g.jsonl's 2nd answer set to ''"),
    "hf-finetune-json-split-columns": Case("data", "a .json data file of splits, each an object of columns (a "
                                           "DatasetDict's to_dict() per split: given the rename-fields advice)", [
        *FT, "--set", "data.source={tmp}/sc.json"], {"ft.yaml": FT_YAML, "sc.json": json.dumps(
            {"train": {"question": ["1+1?", "2+2?"], "answer": ["#### 2", "#### 4"]}})}, hf=True),
    # round 43 (HF paths: one rule for ~; position advice; conversations under other fields)
    "hf-finetune-tilde-no-user": Case("config", "model.name_or_path=~nosuchuser43/base (~ of no user: was said as a "
                                      "hub id's bad characters)", [
        *FT, "--set", "model.name_or_path=~nosuchuser43/base"], chat(GOOD_CHAT), hf=True),
    "hf-finetune-past-positions": Case("data", "every example longer than the model's 4 positions (was told to set "
                                       "data.max_length=4, which dropped them all)", FT, {
        "ft.yaml": FT_YAML.replace("{base}", "{tmp}/m"), "chat.jsonl": GOOD_CHAT + "\n"},
        prepare=_hf_edit("its config.json saying 4 positions", _config_edit(max_position_embeddings=4)), hf=True),
    "hf-finetune-conversations-field": Case("data", "records whose role/content turns are under `conversations` "
                                            "(was: check the records' shape)", FT, chat(json.dumps(
                                                {"conversations": json.loads(GOOD_CHAT)["messages"]})), hf=True),
    "hf-finetune-trl-turn-lists": Case("data", "TRL's conversational prompt/completion (lists of turns)", FT, chat(
        json.dumps({"prompt": json.loads(GOOD_CHAT)["messages"][:1],
                    "completion": json.loads(GOOD_CHAT)["messages"][1:]})), hf=True),
    "hf-finetune-json-records-under-key": Case("data", "a .json data file {\"rows\": [records]} (read as one record)",
                                               [*FT, "--set", "data.source={tmp}/rows.json"], {
        "ft.yaml": FT_YAML, "rows.json": json.dumps({"rows": [{"question": "1+1?", "answer": "#### 2"}]})}, hf=True),
    # round 43b (a data folder's metadata that datasets cannot read: was a traceback; a model given as the data)
    "hf-finetune-bad-dataset-infos": Case("data", "a data folder's dataset_infos.json {\"a\": 1}", [*FT, "--set",
        "data.source={tmp}/d"], {"ft.yaml": FT_YAML, "d/a.jsonl": GOOD_CHAT, "d/README.md": "# card",
                                 "d/dataset_infos.json": '{"a": 1}'}, hf=True),
    "hf-finetune-model-as-data": Case("data", "a model as data", [*FT, "--set", "data.source={base}"], chat(), hf=True),
}


def _edited_gold(tmp: Path) -> None:
    from looplm.hf.mathdata import write_lm_eval_task

    rows = [{"question": "1+1?", "answer": "#### 2"}, {"question": "2+2?", "answer": "#### 4"}]
    data = tmp / "g.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_lm_eval_task(tmp / "tk", data, name="gg", max_gen_toks=4)
    rows[1]["answer"] = ""
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
