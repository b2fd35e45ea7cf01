"""Round 47 (HF chat data, lm-eval): a `messages` record's top-level `system` (the Anthropic Messages API's shape,
LLaMA-Factory's sharegpt) was dropped without a word; the Assistants API's text parts were "no text part";
model_args attn_implementation=sdpa was "not a setting"; TRL prompt/completion records beside messages ones were
dropped with no hint; a folder without a template was told to give the template it lacks."""

import json

import pytest

pytest.importorskip("transformers")

from looplm.config import ConfigError  # noqa: E402
from looplm.hf.chat import to_messages  # noqa: E402
from looplm.hf.data import build_examples  # noqa: E402

from .hf_fixtures import tiny_chat_tokenizer  # noqa: E402

QA = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


def test_a_messages_records_top_level_system_is_its_system_turn():
    assert to_messages({"system": "Answer in French.", "messages": QA}) == [
        {"role": "system", "content": "Answer in French."}, *QA]
    # the same system turn in the messages is no second one; a blank or null system is none
    own = [{"role": "system", "content": "S"}, *QA]
    assert to_messages({"system": "S", "messages": own}) == own
    assert to_messages({"system": " ", "messages": QA}) == QA
    assert to_messages({"system": None, "messages": QA}) == QA


def test_a_top_level_system_beside_a_different_system_turn_or_of_no_string_is_refused():
    with pytest.raises(ValueError, match=r"top-level system \('S'\) and a different system turn in its messages "
                                         r"\('X'\); keep one"):
        to_messages({"system": "S", "messages": [{"role": "developer", "content": "X"}, *QA]})
    with pytest.raises(ValueError, match="system must be a string .* got int 5"):
        to_messages({"system": 5, "messages": QA})


def test_a_top_level_system_stands_in_place_of_data_system_prompt_and_is_counted():
    recs = [{"system": "Answer in French.", "messages": QA}, {"messages": QA}]
    _, stats = build_examples(recs, tiny_chat_tokenizer(), 512, system_prompt="Be brief.")
    assert stats.own_system == 1
    assert to_messages(recs[0], system_prompt="Be brief.")[0] == {"role": "system", "content": "Answer in French."}


def test_assistants_api_text_parts_are_joined_and_other_parts_named():
    def part(text):
        return {"type": "text", "text": {"value": text, "annotations": []}}

    rec = {"messages": [{"role": "user", "content": [part("What is 2+2?")]},
                        {"role": "assistant", "content": [part("4")]}]}
    assert to_messages(rec) == [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]
    bad = {"messages": [{"role": "user", "content": [{"type": "text", "text": {"value": 5}}]}, QA[1]]}
    with pytest.raises(ValueError, match="a text part whose text is no string") as e:
        to_messages(bad)
    assert "no text part" not in str(e.value)
    thinking = {"messages": [QA[0], {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm"}]}]}
    with pytest.raises(ValueError, match="one that is no text part"):
        to_messages(thinking)


def test_model_args_attn_implementation_sdpa_is_taken_and_others_refused_in_the_models_words():
    pytest.importorskip("lm_eval")
    from looplm.errors import UserError
    from looplm.hf.lm_eval_adapter import _check_model_args

    args = {"attn_implementation": "sdpa", "batch_size": 1}
    _check_model_args(args)
    assert args == {"batch_size": 1}  # (looplm loads the model itself: a no-op it does not hand on)
    with pytest.raises(UserError, match="always runs its attention in torch's scaled_dot_product_attention: "
                                        "attn_implementation='eager' cannot apply") as e:
        _check_model_args({"attn_implementation": "eager"})
    assert "not a setting" not in str(e.value)


def test_trl_prompt_completion_records_beside_messages_ones_get_the_hint():
    trl = {"prompt": [QA[0]], "completion": [QA[1]]}
    _, stats = build_examples([{"messages": QA}, trl, trl], tiny_chat_tokenizer(), 512)
    line = stats.summary(512, "drop")
    assert "2 dropped" in line and "TRL's conversational prompt/completion" in line, line
    _, plain = build_examples([{"messages": QA}, {"messages": [QA[0]]}], tiny_chat_tokenizer(), 512)
    assert "TRL" not in plain.summary(512, "drop") and plain.drop_hint == ""


def test_a_folder_without_a_template_is_said_to_hold_none(tmp_path):
    from looplm.hf.finetune import chat_template

    with pytest.raises(ConfigError, match="is a folder that holds no chat template") as e:
        chat_template(str(tmp_path))
    assert "chat_template.jinja, or the one" not in str(e.value)
    (tmp_path / "chat_template.jinja").write_text("{{ messages }}")
    with pytest.raises(ConfigError, match=r"give its template file \(.*chat_template.jinja\)$"):
        chat_template(str(tmp_path))
    other = tmp_path / "tok"
    other.mkdir()
    (other / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    with pytest.raises(ConfigError, match="tokenizer_config.json holds a chat_template"):
        chat_template(str(other))
