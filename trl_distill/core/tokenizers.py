"""One place for the tokenizer fix-ups every entry point needs (a pad token, as TRL sets it) and for rendering a
prompt with the chat template."""

import logging


logger = logging.getLogger(__name__)

_announced: set[str] = set()


def ensure_pad_token(tokenizer) -> int:
    """Sets `pad_token = eos_token` on a tokenizer without a pad token (as `SFTTrainer` does) and returns the pad id.

    Many base models ship without a pad token (Llama-3.1, Mistral); padding with EOS is safe because every padded
    position is masked out of the attention and the loss. The fallback is logged once per tokenizer name. A processor
    (with a `tokenizer` attribute) is handled through its tokenizer.

    Args:
        tokenizer: a tokenizer, or a processor holding one.

    Returns:
        `int`: the pad token id.

    Raises:
        ValueError: the tokenizer has neither a pad nor an EOS token.
    """
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                f"The tokenizer {tokenizer.name_or_path!r} has neither a pad token nor an EOS token to pad with; set "
                "`tokenizer.pad_token` to a token of its vocabulary first."
            )
        tokenizer.pad_token = tokenizer.eos_token
        name = str(tokenizer.name_or_path or type(tokenizer).__name__)
        if name not in _announced:
            _announced.add(name)
            logger.warning(
                f"The tokenizer {name!r} has no pad token; padding with its EOS token {tokenizer.eos_token!r} "
                "(as SFTTrainer does)."
            )
    return tokenizer.pad_token_id


def chat_messages(prompt, system: str | None = None) -> list[dict]:
    """The conversation a chat model is asked: `prompt` (a list or tuple of messages is kept; anything else, e.g. a
    string, becomes one user turn), after a `system` message when one is given."""
    messages = list(prompt) if isinstance(prompt, list | tuple) else [{"role": "user", "content": prompt}]
    return ([{"role": "system", "content": system}] if system else []) + messages


def render_chat(
    tokenizer, prompt, system: str | None = None, add_generation_prompt: bool = True, **template_variables
) -> str:
    """The text of [`chat_messages`]`(prompt, system)` rendered with the tokenizer's chat template.

    Args:
        tokenizer: a tokenizer with a chat template.
        prompt (`str` or `list[dict]`): the prompt text (one user turn) or messages.
        system (`str`, *optional*): a system message put first.
        add_generation_prompt (`bool`, defaults to `True`): end with the assistant header the model continues.
        **template_variables: further chat-template variables (`tools`, `enable_thinking`, ...).

    Returns:
        `str`: the rendered conversation.
    """
    messages = chat_messages(prompt, system)
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, **template_variables
    )
