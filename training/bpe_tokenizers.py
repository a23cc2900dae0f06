"""BPE tokenizers and chat templates in the style of five model families, trained locally.

Why: every other test runs the embedded base's byte tokenizer, which has no merges. Real
bases ship BPE tokenizers with merges, special tokens and a chat template of their own, and
the places where training and serving can disagree (a merge across a template boundary, a
word-start marker added to a piece tokenized on its own, BOS written twice) only show with
such tokenizers. No hub is reachable, so we train them here with the `tokenizers` library on
task-world text and write each family's template ourselves.

Two ways of spelling text, as the families do:
- `byte-level` (Llama-3, Qwen2): a regex split, then GPT-2's byte-to-character map; no
  unknown tokens ever.
- `metaspace` (Mistral, Phi-3, Gemma): SentencePiece's convention, spaces written as `▁`
  and attached to the next word, with 256 `<0xNN>` byte tokens for anything unseen.

Every template writes BOS itself where the family has one and the tokenizer never adds it
(docs/engine-notes.md#bos-once); the end-of-turn token is the tokenizer's EOS, so both
engines stop there. The templates render no tools: the matrix checks architectures, not tool
calling.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from training.taskworld import MADE_UP_STYLES, TASKS, WORDS, make_examples

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from tokenizers.pre_tokenizers import PreTokenizer
    from transformers import PreTrainedTokenizerFast

__all__ = ["STYLES", "ChatStyle", "training_corpus", "train_tokenizer"]

# Llama-3's split: contractions, letters with one leading non-letter, up to 3 digits,
# punctuation runs, newline runs kept whole (so "\n\n" is one piece wherever it appears).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen2's is the same but splits digits one by one.
_QWEN2_SPLIT = _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")

_LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + (m['content'] or '')"
    " + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)
_CHATML_TEMPLATE = (
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + (m['content'] or '') + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Mistral's v3 control tokens: [INST] ... [/INST] around user turns, the reply right after,
# closed by EOS; a system prompt in its own [SYSTEM_PROMPT] block, tool output in
# [TOOL_RESULTS].
_MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}{{ '[INST] ' + (m['content'] or '') + ' [/INST]' }}"
    "{% elif m['role'] == 'assistant' %}{{ (m['content'] or '') + eos_token }}"
    "{% elif m['role'] == 'system' %}"
    "{{ '[SYSTEM_PROMPT]' + (m['content'] or '') + '[/SYSTEM_PROMPT]' }}"
    "{% else %}{{ '[TOOL_RESULTS]' + (m['content'] or '') + '[/TOOL_RESULTS]' }}{% endif %}"
    "{% endfor %}"
)
_PHI3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|' + m['role'] + '|>\\n' + (m['content'] or '') + '<|end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
# Gemma has no system role: a system prompt opens the first user turn. The assistant is
# `model`.
_GEMMA_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(system='') %}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{% set ns.system = (m['content'] or '') + '\\n\\n' %}"
    "{% else %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + ns.system + (m['content'] or '')"
    " + '<end_of_turn>\\n' }}{% set ns.system = '' %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class ChatStyle:
    """One family's tokenizer conventions and chat template."""

    name: str
    template: str
    bos: str | None
    eos: str  # the end-of-turn token: generation stops here
    pad: str
    extra_specials: tuple[str, ...]  # role markers and other control tokens
    spelling: Literal["byte-level", "metaspace"]
    split_regex: str = ""  # byte-level only
    prefix_space: bool = True  # metaspace only: a `▁` before the first word of the input

    @property
    def specials(self) -> list[str]:
        seen: dict[str, None] = {}
        for tok in (self.pad, self.bos, self.eos, *self.extra_specials):
            if tok is not None:
                seen.setdefault(tok, None)
        return list(seen)


STYLES: dict[str, ChatStyle] = {s.name: s for s in (
    ChatStyle("llama3", _LLAMA3_TEMPLATE, "<|begin_of_text|>", "<|eot_id|>",
              "<|finetune_right_pad_id|>", ("<|start_header_id|>", "<|end_header_id|>"),
              "byte-level", _LLAMA3_SPLIT),
    ChatStyle("chatml", _CHATML_TEMPLATE, None, "<|im_end|>", "<|endoftext|>",
              ("<|im_start|>",), "byte-level", _QWEN2_SPLIT),
    ChatStyle("mistral", _MISTRAL_TEMPLATE, "<s>", "</s>", "<pad>",
              ("<unk>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
               "[TOOL_RESULTS]", "[/TOOL_RESULTS]"), "metaspace"),
    ChatStyle("phi3", _PHI3_TEMPLATE, "<s>", "<|end|>", "<|endoftext|>",
              ("<unk>", "<|system|>", "<|user|>", "<|assistant|>"), "metaspace"),
    ChatStyle("gemma", _GEMMA_TEMPLATE, "<bos>", "<end_of_turn>", "<pad>",
              ("<unk>", "<eos>", "<start_of_turn>"), "metaspace", prefix_space=False),
)}


def training_corpus(style: ChatStyle, seed: int = 0, per_task: int = 200) -> list[str]:
    """Task-world chats rendered in `style`, cut at its special tokens, and the word list.

    Rendered, so the merges learn the template's own text as well (`\\n\\n` after a
    Llama-3 header, `assistant` after `<|im_start|>`): where a piece of template text meets
    a reply is where training and serving can split text differently. Cut at the specials
    because the tokenizer never sees them inside text either.
    """
    import jinja2

    template = jinja2.Environment().from_string(style.template)
    cut = re.compile("|".join(re.escape(t) for t in style.specials))
    lines = [" ".join(WORDS)]
    # Tasks on made-up text (`lower`) are left out: random letters teach no merge worth
    # having, and a new task here would change every matrix build key (and model).
    for task in sorted(t for t in TASKS if TASKS[t].text_style not in MADE_UP_STYLES):
        for ex in make_examples(task, "train", per_task, seed):
            text = template.render(messages=ex.messages(), bos_token=style.bos or "",
                                   eos_token=style.eos, add_generation_prompt=False)
            lines += [piece for piece in cut.split(text) if piece]
    return lines


def _byte_level(style: ChatStyle, corpus: list[str], vocab_size: int) -> Tokenizer:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(style.split_regex), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=style.specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    return tok


def _metaspace_split(style: ChatStyle) -> PreTokenizer:
    """Newlines alone, then words with their `▁`: a newline never merges with a word.

    The families' tokenizers keep them apart too (Llama-2-style vocabularies spell a newline
    as the byte token <0x0A>). Without this, `model\\n` at the end of a Gemma-style prompt
    merges with the reply's first letter (`model\\nH`) in a rendered conversation, so the
    tokens of a conversation would not start with the tokens of its prompt.
    """
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex("\\n"), behavior="isolated"),
        pre_tokenizers.Metaspace(prepend_scheme="first" if style.prefix_space else "never",
                                 split=True),
    ])


def _metaspace(style: ChatStyle, corpus: list[str], vocab_size: int) -> Tokenizer:
    """SentencePiece-style BPE: train the merges, then rebuild the model with byte fallback.

    The trainer cannot add `<0xNN>` tokens itself, so the final vocabulary is the specials,
    the 256 byte tokens, then the trained pieces, and the merges are kept as trained.
    """
    from tokenizers import Tokenizer, decoders, models, trainers

    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = _metaspace_split(style)
    n_bytes = 256
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - n_bytes, special_tokens=style.specials,
                                  show_progress=False)
    trainer_tok.train_from_iterator(corpus, trainer)
    trained = json.loads(trainer_tok.to_str())["model"]
    vocab: dict[str, int] = {t: i for i, t in enumerate(style.specials)}
    for b in range(n_bytes):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m)
              for m in trained["merges"]]
    unk = "<unk>" if "<unk>" in vocab else None
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token=unk,
                               fuse_unk=True))
    tok.pre_tokenizer = _metaspace_split(style)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if style.prefix_space:
        steps.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(steps)
    return tok


def train_tokenizer(style: ChatStyle, vocab_size: int = 1024, seed: int = 0,
                    model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """A `PreTrainedTokenizerFast` in `style`, trained on `training_corpus(style, seed)`.

    The same arguments give the same vocabulary and merges (the trainer is deterministic
    for the same corpus, and the corpus is a pure function of the seed).
    """
    from transformers import PreTrainedTokenizerFast

    corpus = training_corpus(style, seed)
    build = _byte_level if style.spelling == "byte-level" else _metaspace
    core = build(style, corpus, vocab_size)
    core.add_special_tokens(style.specials)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=style.bos,
        eos_token=style.eos,
        pad_token=style.pad,
        unk_token="<unk>" if "<unk>" in style.specials else None,
        additional_special_tokens=[t for t in style.extra_specials if t != "<unk>"],
        padding_side="left",
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = style.template
    return tok
