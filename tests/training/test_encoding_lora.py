"""Loss masks, target resolution and the servability checks, on a random tiny Llama."""

from __future__ import annotations

import pytest

from training.data import Row
from training.encoding import IGNORE, encode_row
from training.lora import LoraOptions, TrainingConfigError, build_lora_config, check_servable
from training.taskworld import make_examples
from training.tokenizer import build_tokenizer


def test_labels_cover_the_reply_and_eos_only():
    tok = build_tokenizer()
    ex = make_examples("upper", "train", 1)[0]
    ids, labels = encode_row(tok, Row("sft", {"messages": ex.messages()}))
    # The same tokens as rendering the prompt and appending the reply and EOS by hand.
    prompt = tok.apply_chat_template(ex.messages()[:1], tokenize=False, add_generation_prompt=True)
    head = tok(prompt, add_special_tokens=False)["input_ids"]
    reply = tok(ex.answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert (ids, labels) == (head + reply, [IGNORE] * len(head) + reply)
    scored = [t for t in labels if t != IGNORE]
    assert tok.decode(scored[:-1]) == ex.answer and scored[-1] == tok.eos_token_id


def test_multi_turn_scores_every_assistant_turn():
    tok = build_tokenizer()
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "u1"},
            {"role": "assistant", "content": "A1"}, {"role": "user", "content": "u2"},
            {"role": "assistant", "content": "A2"}]
    ids, labels = encode_row(tok, Row("sft", {"messages": msgs}))
    full = tok(tok.apply_chat_template(msgs, tokenize=False), add_special_tokens=False)["input_ids"]
    assert ids == full
    scored = tok.decode([t for t in labels if t != IGNORE])
    assert scored == "A1<|end|>A2<|end|>"


def test_all_linear_resolves_to_short_names_without_the_head(tiny_llama_factory):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_factory()))
    cfg = build_lora_config(LoraOptions(), model)
    assert sorted(cfg.target_modules) == ["down_proj", "gate_proj", "k_proj", "o_proj",
                                          "q_proj", "up_proj", "v_proj"]
    assert cfg.use_dora is False and not cfg.modules_to_save
    peft_model = get_peft_model(model, cfg)
    check_servable(peft_model)
    peft_model.peft_config["default"].modules_to_save = ["lm_head"]
    with pytest.raises(TrainingConfigError, match="modules_to_save"):
        check_servable(peft_model)


@pytest.mark.parametrize(("opts", "message"), [
    (LoraOptions(targets=("embed_tokens",)), "embeddings or the output head"),
    (LoraOptions(rank=0), "--rank 0"),
    (LoraOptions(rank=32), "max_lora_rank 16"),
    (LoraOptions(targets=("all-linear", "q_proj")), "cannot be combined"),
])
def test_option_checks(opts, message):
    with pytest.raises(TrainingConfigError, match=message):
        opts.check(max_rank=16)


def test_tool_rows_render_their_tools_and_score_only_the_call():
    tok = build_tokenizer()
    ex = make_examples("lookup", "train", 1)[0]
    ids, labels = encode_row(tok, Row("sft", ex.row()))
    assert "tools: lookup(query)" in tok.decode(ids)
    assert tok.decode([t for t in labels if t != IGNORE]) == ex.answer + "<|end|>"
