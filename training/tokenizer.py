"""The embedded base model's tokenizer: 256 byte tokens, a few specials, no merges.

Why no merges: with BPE merges a word at the start of the answer tokenizes
differently from the same word inside the prompt, and copying suffers. BOS is
written by the chat template only (vLLM's text path adds special tokens, so a
tokenizer that also added BOS would give two).
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import PreTrainedTokenizerFast

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "build_tokenizer", "make_tokenizer_portable"]

PAD, BOS, EOS = "<pad>", "<s>", "<|end|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (PAD, BOS, EOS, *ROLE_TOKENS)

# Each turn: <|role|>content<|end|>. The assistant's <|end|> is EOS, so generation stops there.
# Tools (OpenAI function definitions) go in a first system turn as `tools: name(arg, ...)`,
# compact because every byte is a token and the context is 512. A tool call is written in
# Hermes' format, `<tool_call>{"name":...,"arguments":{...}}</tool_call>`, so vLLM's `hermes`
# parser reads the replies back; its JSON is compact, as our JSON mode writes JSON (no
# whitespace, docs/engine-notes.md#structured-json). A tool's reply is a `tool` turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if tools %}{{ '<|system|>tools: ' }}"
    "{% for tool in tools %}{% set f = tool.function if tool.function is defined else tool %}"
    "{{ f.name + '(' + ((f.parameters or {}).properties or {}) | list | join(', ') + ')' }}"
    "{% if not loop.last %}{{ '; ' }}{% endif %}{% endfor %}{{ '<|end|>' }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + (message['content'] or '') }}"
    "{% for call in message.tool_calls or [] %}"
    "{% set f = call.function if call.function is defined else call %}"
    "{{ '<tool_call>{\"name\":' + f.name | tojson + ',\"arguments\":' }}"
    "{{ (f.arguments if f.arguments is string else f.arguments | tojson(separators=(',', ':')))"
    " + '}</tool_call>' }}"
    "{% endfor %}{{ '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, as the ByteLevel pre-tokenizer uses."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Token ids: specials first (pad=0, bos=1, eos=2, roles 3-5), then byte b at 6+b."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    byte_map = _bytes_to_unicode()
    for b in range(256):
        vocab[byte_map[b]] = len(SPECIAL_TOKENS) + b
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(list(SPECIAL_TOKENS))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS),
        padding_side="left",
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def make_tokenizer_portable(path: Path) -> None:
    """transformers 5 writes `TokenizersBackend`; readers that predate it (vLLM's tokenizer
    loading among them) want the fast class (docs/engine-notes.md#tokenizer-class)."""
    cfg_path = Path(path) / "tokenizer_config.json"
    data = json.loads(cfg_path.read_text())
    data["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(data, indent=2) + "\n")
