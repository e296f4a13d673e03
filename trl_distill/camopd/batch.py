"""CaMOPD's generation batch: the sequences the models read, the rows each teacher corrects, the rows and columns gap
selection keeps.

A generation batch is the dict `trl.DistillationTrainer._generate_and_score_completions` returns (`prompt_ids`,
`prompt_mask`, `completion_ids`, `completion_mask`, optionally `tool_mask`), with CaMOPD's per-row `sources`.
"""

from collections.abc import Callable, Iterable

import torch


def loss_token_mask(batch: dict) -> torch.Tensor:
    """`(B, C)` mask of the completion tokens that carry a loss: the completion mask, without tool-output tokens."""
    return batch["completion_mask"] * batch["tool_mask"] if "tool_mask" in batch else batch["completion_mask"]


def model_inputs(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(input_ids, attention_mask, loss_mask)`: prompt and completion side by side, and the [`loss_token_mask`]."""
    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    return input_ids, attention_mask, loss_token_mask(batch)


def sequences(batch: dict, rows: torch.Tensor | None = None) -> list[torch.Tensor]:
    """`[prompt_ids, prompt_mask, completion_ids, completion_mask]` of the rows `rows` (all when `None`)."""
    keys = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")
    return [batch[key] if rows is None else batch[key][rows.to(batch[key].device)] for key in keys]


def lockstep_rows(rows: torch.Tensor) -> torch.Tensor:
    """The rows a teacher runs on: `rows`, or one dummy row (its result dropped) when it has none here, so that every
    DeepSpeed rank runs the same forwards."""
    return rows if len(rows) else torch.zeros(1, dtype=torch.long)


def row_taker(rows: torch.Tensor, size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function that takes the rows `rows` ([`lockstep_rows`]) of a `(size, ...)` tensor; the tensor itself when
    `rows` is the whole batch (no row copies)."""
    if len(rows) == size:
        return lambda tensor: tensor
    run = lockstep_rows(rows)
    return lambda tensor: tensor[run.to(tensor.device)]


def subset_batch(batch: dict, rows: torch.Tensor, size: int) -> dict:
    """The rows `rows` of every per-sample entry (tensors and lists of length `size`) of a generation batch."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.ndim > 0 and value.size(0) == size:
            out[key] = value[rows.to(value.device)]
        elif isinstance(value, list) and len(value) == size:
            out[key] = [value[i] for i in rows.tolist()]
        else:
            out[key] = value
    return out


def drop_padding_columns(batch: dict, completion_keys: Iterable[str]) -> dict:
    """The batch without the prompt's leading and the completion's trailing columns that no row needs (padding left by
    the rows gap selection dropped); `completion_keys` are the per-token entries cut with the completion."""
    first = int(batch["prompt_mask"].any(0).nonzero().min())
    last = int(batch["completion_mask"].any(0).nonzero().max()) + 1
    batch["prompt_ids"], batch["prompt_mask"] = batch["prompt_ids"][:, first:], batch["prompt_mask"][:, first:]
    for key in completion_keys:
        if key in batch:
            batch[key] = batch[key][:, :last]
    return batch
