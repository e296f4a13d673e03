"""An offline byte-level tokenizer (one token per byte, no merges) with a ChatML chat template.

Byte-level with an empty merge list is the shape of a Qwen2 BPE tokenizer: transformers 5 loads a directory whose
model config says `qwen2` as `Qwen2Tokenizer` whatever `tokenizer_config.json` says, and rebuilds the pre-tokenizer;
with this layout the rebuilt tokenizer gives the same ids, so saved lab models round-trip through `AutoTokenizer`
for both Qwen2 and Llama configs. ASCII text is one token per character.
"""

import os

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode as _bytes_to_unicode  # GPT-2's byte map


PAD, EOS, BOS_TURN = "<|endoftext|>", "<|im_end|>", "<|im_start|>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Builds the byte-level tokenizer: pad `<|endoftext|>`, eos `<|im_end|>`, ChatML template; 259 ids."""
    specials = [PAD, EOS, BOS_TURN]
    byte_tokens = list(pre_tokenizers.ByteLevel.alphabet())
    byte_tokens.sort(key=lambda ch: _BYTE_OF[ch])
    vocab = {token: i for i, token in enumerate(specials + byte_tokens)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False, byte_fallback=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, eos_token=EOS, additional_special_tokens=[BOS_TURN]
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "right"
    return tokenizer


_BYTE_OF = {ch: b for b, ch in _bytes_to_unicode().items()}


def load_or_build_tokenizer(directory: str) -> PreTrainedTokenizerFast:
    """Loads the tokenizer saved in `directory`, building and saving it there first if missing."""
    if not os.path.exists(os.path.join(directory, "tokenizer.json")):
        build_tokenizer().save_pretrained(directory)
    return AutoTokenizer.from_pretrained(directory)
