"""An offline character-level tokenizer with a ChatML chat template.

Every printable ASCII character, newline and the Latin-1 letters are single tokens, so ids round-trip exactly and
any text the tiny world produces is representable. The directory it saves loads with `AutoTokenizer` as a plain
`PreTrainedTokenizerFast` (no model-specific tokenizer class, whose pre-tokenizer would change the ids).
"""

import os

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast


PAD, EOS, BOS_TURN, UNK = "<|endoftext|>", "<|im_end|>", "<|im_start|>", "<unk>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHARACTERS = "\n" + "".join(chr(c) for c in range(32, 127)) + "".join(chr(c) for c in range(0xC0, 0x100))


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Builds the character-level tokenizer: pad `<|endoftext|>`, eos `<|im_end|>`, ChatML template."""
    specials = [PAD, EOS, BOS_TURN, UNK]
    vocab = {token: i for i, token in enumerate(specials + list(CHARACTERS))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, eos_token=EOS, unk_token=UNK, additional_special_tokens=[BOS_TURN]
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "right"
    return tokenizer


def load_or_build_tokenizer(directory: str) -> PreTrainedTokenizerFast:
    """Loads the tokenizer saved in `directory`, building and saving it there first if missing."""
    if not os.path.exists(os.path.join(directory, "tokenizer.json")):
        build_tokenizer().save_pretrained(directory)
    return AutoTokenizer.from_pretrained(directory)
