"""Batched generation for evaluation and pool building (transformers `generate`, left padding)."""

import contextlib
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from .tokenizers import ensure_pad_token, render_chat


def render_prompt(tokenizer, prompt, system: str | None = None) -> str:
    """The text a model continues: a plain prompt as it is, otherwise [`render_chat`] with the generation prompt."""
    return prompt if isinstance(prompt, str) and not system else render_chat(tokenizer, prompt, system)


def stop_token_ids(model, tokenizer) -> list[int]:
    """The ids that end a completion: the model's generation-config EOS ids and the tokenizer's `eos_token_id`, as
    TRL's `GRPOTrainer`/`DistillationTrainer` take them. An instruct model's end of turn is often not the tokenizer's
    `eos_token` (Gemma-3's `<end_of_turn>`, Llama-3's `<|eot_id|>`): passing only the tokenizer's id runs answers into
    invented turns."""
    config = getattr(model, "generation_config", None)
    ids = getattr(config, "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids = [tokenizer.eos_token_id, *ids]
    return ids


def truncate_at_stop(ids: list[int], stop_ids) -> list[int]:
    """`ids` up to (without) the first stop id: nothing a model generated after its end of turn is kept."""
    for i, token in enumerate(ids):
        if token in stop_ids:
            return ids[:i]
    return ids


def _left_padded(tokenizer, texts: Sequence[str], add_special_tokens: Sequence[bool], device) -> dict:
    # one generate() batch: each text tokenized on its own (special tokens only where asked), then padded on the
    # tokenizer's side, which the caller has set to the left
    ids = [
        tokenizer(text, add_special_tokens=special)["input_ids"] for text, special in zip(texts, add_special_tokens)
    ]
    enc = tokenizer.pad({"input_ids": ids}, return_tensors="pt", padding=True)
    return {k: v.to(device) for k, v in enc.items()}


def generate_completions(
    model,
    tokenizer,
    prompts: Sequence,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    num_return_sequences: int = 1,
    system: str | None = None,
    seed: int | None = None,
    desc: str = "generating",
    show_progress: bool = True,
) -> list[str]:
    """Generates completions for `prompts` in batches, greedy by default.

    Args:
        model: a causal LM.
        tokenizer: its tokenizer (without a pad token, EOS pads; see [`ensure_pad_token`]).
        prompts (`Sequence[str | list[dict]]`): plain prompts or conversations (rendered with the chat template).
        max_new_tokens (`int`, defaults to 64): generation budget per completion.
        batch_size (`int`, defaults to 32): prompts per `generate` call.
        do_sample (`bool`, defaults to `False`): sample instead of greedy decoding.
        temperature (`float`, defaults to 1.0), top_p (`float`, defaults to 1.0): sampling settings.
        num_return_sequences (`int`, defaults to 1): completions per prompt, returned consecutively.
        system (`str`, *optional*): system message for conversational prompts.
        seed (`int`, *optional*): seeds sampling, per batch, so results do not depend on earlier calls.
        desc (`str`): progress-bar label.

    Returns:
        `list[str]`: decoded completions without special tokens, `num_return_sequences` per prompt, in order. Each
        ends where the model's own `generate()` stops: at the first of [`stop_token_ids`].
    """
    ensure_pad_token(tokenizer)
    stop_ids = stop_token_ids(model, tokenizer)
    texts = [render_prompt(tokenizer, p, system) for p in prompts]
    # a rendered chat template holds its special tokens already; a plain prompt gets the tokenizer's (its BOS), as
    # SFTTrainer tokenizes it in training
    plain = [isinstance(p, str) and not system for p in prompts]
    settings = dict(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature if do_sample else None,
        top_p=top_p if do_sample else None,
        top_k=None,
        num_return_sequences=num_return_sequences,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stop_ids,
    )
    outputs: list[str] = []
    with _generation_mode(model, tokenizer):
        device = next(model.parameters()).device
        bar_kwargs = {} if show_progress else {"disable": True}  # keeps TQDM_DISABLE working
        for start in tqdm(range(0, len(texts), batch_size), desc=desc, leave=False, **bar_kwargs):
            batch = slice(start, start + batch_size)
            enc = _left_padded(tokenizer, texts[batch], plain[batch], device)
            if seed is not None:
                torch.manual_seed(seed + start)
            outputs += _generate_batch(model, tokenizer, enc, settings)
    return outputs


@contextlib.contextmanager
def _generation_mode(model, tokenizer):
    # `generate` wants the model in eval mode and the prompts padded on the left; both are restored after
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)


def _generate_batch(model, tokenizer, enc: dict, settings: dict) -> list[str]:
    """One `generate` call: the new tokens of each sequence up to the first stop id ([`truncate_at_stop`]),
    decoded without special tokens."""
    with torch.no_grad():
        out = model.generate(**enc, **settings)
    stop_ids = settings["eos_token_id"]
    completions = [truncate_at_stop(row, stop_ids) for row in out[:, enc["input_ids"].shape[1] :].tolist()]
    return tokenizer.batch_decode(completions, skip_special_tokens=True)
