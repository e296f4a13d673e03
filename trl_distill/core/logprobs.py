"""Rendering prompt–completion pairs to token ids, and per-token log-probabilities under a causal LM.

Positions follow the input ids: `logprobs[b, t] = log p(input_ids[b, t] | input_ids[b, :t])`, zero at position 0
and wherever the mask excludes the token. Left or right padding gives the same numbers: position ids are rebuilt
from the attention mask.
"""

import json
from dataclasses import dataclass

import torch
from accelerate.utils import is_peft_model
from trl.kernels import ChunkedLogProbFunction
from trl.trainer.utils import maybe_gather_lm_head_ctx

from .divergence import LMHead
from .tokenizers import chat_messages


VOCAB_CHUNK = 8192


def _messages(value, role: str) -> list[dict]:
    return value if isinstance(value, list) else [{"role": role, "content": value}]


def _token_ids(tokenizer, value, **template_kwargs) -> list[int]:
    """Token ids of one side of a row as `SFTTrainer` tokenizes it: messages through the chat template, text through
    the tokenizer with its special tokens."""
    if isinstance(value, list):
        encoded = tokenizer.apply_chat_template(value, tokenize=True, return_dict=True, **template_kwargs)
    else:
        encoded = tokenizer(text=value)
    return list(encoded["input_ids"])


def _common_prefix_length(ids: list[int], other_ids: list[int]) -> int:
    """Leading tokens the two sequences share: some templates render the prompt alone (with the generation prompt)
    differently from the prompt followed by a completion, so the completion starts where they diverge."""
    return next((i for i, (a, b) in enumerate(zip(ids, other_ids)) if a != b), min(len(ids), len(other_ids)))


def template_variables(tools=None, chat_template_kwargs: dict | None = None) -> dict:
    """The chat template's keyword arguments for a row's `tools` (a JSON string is decoded) and
    `chat_template_kwargs` columns, as `SFTTrainer` passes them."""
    tools = json.loads(tools) if isinstance(tools, str) else tools
    return {"tools": tools, **(chat_template_kwargs or {})}


def encode_prompt_completion(
    tokenizer, prompt, completion, system: str | None = None, tools=None, chat_template_kwargs: dict | None = None
) -> dict[str, list[int]]:
    """Token ids of `prompt` followed by `completion`, with the completion and special-token masks.

    The sequence is exactly the one `SFTTrainer` trains on for a prompt–completion row (tokenized as TRL's
    `SFTTrainer` tokenizes it; `tests/test_core_tokenization.py` holds the two together), so what is scored is what is
    trained:

    - conversational inputs (lists of messages) are rendered with the tokenizer's chat template, the prompt with the
      generation prompt (the assistant header belongs to the prompt) and the full conversation; the completion starts
      where the two token sequences diverge. `tools` and `chat_template_kwargs` go to the template, as
      `SFTTrainer` passes a row's `tools`/`chat_template_kwargs` columns.
    - plain strings are tokenized as `prompt` and `prompt + completion + eos` with the tokenizer's special tokens,
      so a tokenizer that adds a BOS token (Llama, Gemma) gets it here too.

    Args:
        tokenizer: a tokenizer with a chat template for conversational inputs.
        prompt (`str` or `list[dict]`): the prompt text or messages.
        completion (`str` or `list[dict]`): the completion text or assistant messages.
        system (`str`, *optional*): a system message put before a conversational prompt (unused for plain strings).
        tools (`list` or `str`, *optional*): tool definitions for the chat template (a JSON string is decoded).
        chat_template_kwargs (`dict`, *optional*): extra chat-template variables (e.g. `enable_thinking`).

    Returns:
        `dict` with `input_ids`, `completion_mask` (1 on completion tokens) and `special_mask` (1 on special tokens).
    """
    if isinstance(prompt, list) or isinstance(completion, list):
        messages = chat_messages(prompt, system)
        template_kwargs = template_variables(tools, chat_template_kwargs)
        prompt_ids = _token_ids(tokenizer, messages, add_generation_prompt=True, **template_kwargs)
        input_ids = _token_ids(tokenizer, messages + _messages(completion, "assistant"), **template_kwargs)
    else:
        eos = tokenizer.eos_token
        if eos is not None and not completion.endswith(eos):
            completion = completion + eos  # as SFTTrainer's `add_eos`
        prompt_ids = _token_ids(tokenizer, prompt)
        input_ids = _token_ids(tokenizer, prompt + completion)
    prompt_len = _common_prefix_length(prompt_ids, input_ids)
    return {
        "input_ids": input_ids,
        "completion_mask": [0] * prompt_len + [1] * (len(input_ids) - prompt_len),
        "special_mask": special_token_mask(tokenizer, input_ids),
    }


def special_token_mask(tokenizer, input_ids: list[int]) -> list[int]:
    """1 where `input_ids` holds one of the tokenizer's special tokens, 0 elsewhere."""
    special = set(tokenizer.all_special_ids)
    return [int(i in special) for i in input_ids]


@dataclass
class SequenceBatch:
    """A padded batch of token sequences; every tensor is `(B, L)`.

    Build one with [`SequenceBatch.collate`]. `position_ids` count real tokens only, so a sequence gets the same
    positions whatever the padding side. `generation_prompt_mask` marks the prompt's last tokens that the chat
    template's generation prompt (the assistant header) adds, where a feature gives it (zeros otherwise).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    completion_mask: torch.Tensor
    special_mask: torch.Tensor
    generation_prompt_mask: torch.Tensor | None = None

    @classmethod
    def collate(cls, features: list[dict], pad_token_id: int, padding_side: str = "right") -> "SequenceBatch":
        """Pads encoded features (from [`encode_prompt_completion`]) to one batch on `padding_side`."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
        length = max(len(f["input_ids"]) for f in features)

        def pad(values, fill):
            gap = [fill] * (length - len(values))
            return gap + list(values) if padding_side == "left" else list(values) + gap

        def stack(key, fill):
            return torch.tensor([pad(f.get(key, [0] * len(f["input_ids"])), fill) for f in features])

        attention_mask = torch.tensor([pad([1] * len(f["input_ids"]), 0) for f in features])
        return cls(
            input_ids=stack("input_ids", pad_token_id),
            attention_mask=attention_mask,
            position_ids=(attention_mask.cumsum(-1) - 1).clamp(min=0),
            completion_mask=stack("completion_mask", 0),
            special_mask=stack("special_mask", 0),
            generation_prompt_mask=stack("generation_prompt_mask", 0),
        )

    def to(self, device) -> "SequenceBatch":
        return SequenceBatch(**{k: None if v is None else v.to(device) for k, v in self.__dict__.items()})


def backbone(model):
    """The decoder stack under the `lm_head` of a (possibly PEFT-wrapped) causal LM; adapters stay active."""
    if is_peft_model(model):
        model = model.base_model.model
    return model.base_model


def last_hidden_states(model, batch: SequenceBatch) -> torch.Tensor:
    """Final hidden states `(B, L, H)` of the backbone, before the `lm_head`."""
    return backbone(model)(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
    ).last_hidden_state


CPU_ROW_CHUNK = 64  # rows of explicit logits at a time: 64 × 151,669 fp32 is 39 MB


def _row_chunked_logprobs(h: torch.Tensor, head: LMHead, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """`log_softmax(head(h) / T)[targets]`, forward only, over chunks of `CPU_ROW_CHUNK` rows.

    On CPU (no Triton) TRL's chunked kernel makes several elementwise passes over every vocabulary tile, which cost
    more than the matrix multiply at real vocabularies (profiled in docs/benchmarks.md); one `logsumexp` per row
    chunk gives the same numbers (to fp32 rounding) in fewer passes, still without `(B, L, V)` logits.
    """
    out = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
    for start in range(0, h.shape[0], CPU_ROW_CHUNK):
        rows = slice(start, start + CPU_ROW_CHUNK)
        z = head.logits(h[rows])  # a fresh fp32 (rows, V) tensor, so the passes below may work in place
        if temperature != 1.0:
            z.div_(temperature)
        picked = z.gather(-1, targets[rows].unsqueeze(-1)).squeeze(-1)
        top = z.amax(dim=-1, keepdim=True)
        # log p[target] = z[target] − logsumexp(z), the exponentials taken in place: no second (rows, V) tensor
        out[rows] = picked - (z.sub_(top).exp_().sum(dim=-1).log_() + top.squeeze(-1))
    return out


def token_logprobs_from_hidden(
    hidden: torch.Tensor, head: LMHead, input_ids: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """`log p(input_ids[t] | <t)` from the hidden states at `t-1`, computed only where `mask` is set.

    Uses TRL's `ChunkedLogProbFunction`, so the `(B, L, V)` logits never exist; differentiable. Forward-only on CPU
    (scoring), it takes `log_softmax` over chunks of `CPU_ROW_CHUNK` rows instead ([`_row_chunked_logprobs`]). The
    head is gathered when DeepSpeed ZeRO-3 partitions it.
    """
    mask = mask.clone()
    mask[:, 0] = 0  # nothing predicts the first token
    valid = mask[:, 1:].reshape(-1) != 0
    h = hidden[:, :-1].reshape(-1, hidden.size(-1))[valid]
    targets = input_ids[:, 1:].reshape(-1)[valid]
    out = hidden.new_zeros(input_ids.shape, dtype=torch.float32)
    if h.shape[0] == 0:
        return out
    needs_grad = torch.is_grad_enabled() and (h.requires_grad or head.weight.requires_grad)
    with maybe_gather_lm_head_ctx(head.weight, head.bias):  # ZeRO-3 partitions the head outside a forward
        if h.device.type == "cpu" and not needs_grad:
            logprobs = _row_chunked_logprobs(h, head, targets, temperature)
        else:
            logprobs = ChunkedLogProbFunction.apply(
                h, head.weight, head.bias, targets, temperature, VOCAB_CHUNK, head.softcap, head.logit_scale, ()
            )[0]
    shifted = out[:, 1:].reshape(-1).masked_scatter(valid, logprobs.float())
    return torch.cat([out[:, :1], shifted.view(out.shape[0], -1)], dim=1)


def completion_logprobs(model, batch: SequenceBatch, temperature: float = 1.0) -> torch.Tensor:
    """Per-token log-probabilities `(B, L)` of the completion tokens of `batch` under `model`, zero elsewhere.

    Args:
        model: a causal LM (PEFT-wrapped models keep their adapters active).
        batch ([`SequenceBatch`]): the sequences, with `completion_mask` marking the tokens to score.
        temperature (`float`, defaults to 1.0): softmax temperature.
    """
    hidden = last_hidden_states(model, batch)
    return token_logprobs_from_hidden(hidden, LMHead.of(model), batch.input_ids, batch.completion_mask, temperature)
