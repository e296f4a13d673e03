"""Offline tokenizers that reproduce what matters of three real chat models (the real files cannot be downloaded).

Each is byte-level (one token per byte, no merges: the lab tokenizer's layout) with the model's special tokens, its
BOS behaviour and a Jinja chat template with the model's traits:

- `qwen3`: ChatML, no BOS, pad `<|endoftext|>`, eos `<|im_end|>`; the last assistant turn is rendered with a
  `<think>…</think>` block, and `enable_thinking=False` puts an empty one into the generation prompt; tools go into
  the system turn.
- `llama31`: BOS `<|begin_of_text|>` added by the tokenizer to plain text *and* written by the template, eos
  `<|eot_id|>`, **no pad token**; `<|start_header_id|>role<|end_header_id|>` headers, the default system block.
- `gemma3`: BOS `<bos>` (tokenizer and template), eos `<eos>`, pad `<pad>`, the `model` role for the assistant,
  the system message merged into the first user turn, left padding.
"""

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from trl_distill.lab.world.tokenizer import _bytes_to_unicode


QWEN3_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n<tools>' }}{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools><|im_end|>\\n' }}"
    "{%- elif messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' %}"
    "{%- set content = message.content %}{%- set reasoning = '' %}"
    "{%- if '</think>' in content %}"
    "{%- set reasoning = content.split('</think>')[0].split('<think>')[-1].strip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{%- if loop.last %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning + '\\n</think>\\n\\n' + content + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- elif message.role != 'system' or not loop.first %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)

LLAMA31_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0].role == 'system' %}{%- set system = messages[0].content | trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{%- if tools %}{{- 'Environment: ipython\\n' }}{%- endif %}"
    "{{- 'Cutting Knowledge Date: December 2023\\nToday Date: 26 Jul 2024\\n\\n' }}"
    "{%- if tools %}{%- for tool in tools %}{{- tool | tojson + '\\n\\n' }}{%- endfor %}{%- endif %}"
    "{{- system + '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message.role + '<|end_header_id|>\\n\\n' + message.content | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0].role == 'system' %}{%- set first_user_prefix = messages[0].content + '\\n\\n' %}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}{%- set first_user_prefix = '' %}{%- set loop_messages = messages %}{%- endif %}"
    "{%- for message in loop_messages %}"
    "{%- set role = 'model' if message.role == 'assistant' else message.role %}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message.content | trim }}{{ '<end_of_turn>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{%- endif %}"
)

TOOLS_EXAMPLE = '[{"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}]'

SPECS = {
    "qwen3": dict(
        specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        added=["<think>", "</think>"],
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        template=QWEN3_TEMPLATE,
        padding_side="right",
    ),
    "llama31": dict(
        specials=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        added=[],
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad=None,
        template=LLAMA31_TEMPLATE,
        padding_side="right",
    ),
    "gemma3": dict(
        specials=["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
        added=[],
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        template=GEMMA3_TEMPLATE,
        padding_side="left",
    ),
}


def _byte_alphabet() -> list[str]:
    """The 256 byte-level characters, in byte order (GPT-2's map, as the tiny world's tokenizer uses)."""
    chars = _bytes_to_unicode()
    return [chars[b] for b in range(256)]


def build_chat_tokenizer(kind: str) -> PreTrainedTokenizerFast:
    """One of `SPECS`' tokenizers (`qwen3`, `llama31`, `gemma3`), built offline in milliseconds."""
    spec = SPECS[kind]
    tokens = spec["specials"] + spec["added"] + _byte_alphabet()
    vocab = {token: i for i, token in enumerate(tokens)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False, byte_fallback=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    if spec["bos"] is not None:  # the tokenizer itself adds the BOS to plain text (Llama-3, Gemma)
        bos = spec["bos"]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])]
        )
    named = {"bos_token": spec["bos"], "eos_token": spec["eos"], "pad_token": spec["pad"]}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        **{k: v for k, v in named.items() if v is not None},
        additional_special_tokens=[t for t in spec["specials"] if t not in named.values()],
        name_or_path=f"offline-{kind}",
    )
    if spec["added"]:
        tokenizer.add_tokens(spec["added"])
    tokenizer.chat_template = spec["template"]
    tokenizer.padding_side = spec["padding_side"]
    return tokenizer
