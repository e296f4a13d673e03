"""CaMOPD's decoupled alternating schedule (docs/methods.md §4, *proposed* specifics).

Every optimizer step is *pure*: all its prompts, across accumulation micro-batches and processes, come from one
source. `review_every = K` general-recovery steps (general prompts, general teacher) are followed by one domain-review
step (domain prompts, domain teacher), so conflicting recovery and preservation gradients are never averaged in one
update (*recovery–preservation counteraction*).
"""

import math
from collections.abc import Sequence

import torch
from torch.utils.data import Sampler


def alternating_pattern(review_every: int, recovery_source: str, review_source: str) -> list[str]:
    """One cycle of the schedule: `review_every` recovery steps, then one review step."""
    if review_every < 1:
        raise ValueError(f"review_every must be >= 1 (recovery steps per domain-review step), got {review_every}.")
    return [recovery_source] * review_every + [review_source]


def check_schedule_sources(
    schedule: str, source_names: Sequence[str], recovery_source: str, review_source: str
) -> None:
    """Raises unless the `alternating` schedule over several sources has exactly its recovery and review sources."""
    if schedule != "alternating" or len(source_names) <= 1:
        return
    expected = {recovery_source, review_source}
    if set(source_names) != expected:
        raise ValueError(
            f"The alternating schedule needs exactly the prompt sources {sorted(expected)} "
            f"(`recovery_source`, `review_source`), got {sorted(source_names)}. Rename the sources, set "
            "`recovery_source`/`review_source`, or use `schedule='mixed'`."
        )


class AlternatingSourceSampler(Sampler):
    """Yields generation groups drawn from one source each, following a repeating pattern of source names.

    The combined training dataset holds the sources one after another (`source_ranges`). Each group of `group_size`
    indices comes from the source its pattern slot names and is repeated `repeat_count` times in a row (as TRL's
    `RepeatSampler` does, so one generation serves all accumulation micro-batches). Each source is read in its own
    shuffled order and reshuffled when exhausted, so a small domain set cycles while the general set is read once per
    epoch. Every process builds the same sequence from `seed`.

    Args:
        source_ranges (`dict[str, range]`): indices of each source in the combined dataset.
        pattern (`Sequence[str]`): source name of each step of one cycle (see [`alternating_pattern`]).
        group_size (`int`): indices per generation group (the global generation batch).
        repeat_count (`int`, defaults to 1): times each group is repeated (gradient accumulation steps).
        num_cycles (`int`, *optional*): cycles per epoch; defaults to enough cycles to read the most used source of
            the pattern once.
        shuffle (`bool`, defaults to `True`): shuffle each source.
        seed (`int`, defaults to 0): seed of the sampler's own generator.
    """

    def __init__(
        self,
        source_ranges: dict[str, range],
        pattern: Sequence[str],
        group_size: int,
        repeat_count: int = 1,
        num_cycles: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
    ):
        unknown = [name for name in pattern if name not in source_ranges]
        if unknown:
            raise ValueError(f"Pattern names unknown sources {unknown}; sources are {sorted(source_ranges)}.")
        empty = [name for name in set(pattern) if len(source_ranges[name]) == 0]
        if empty:
            raise ValueError(f"Prompt sources {sorted(empty)} are empty; give each scheduled source some prompts.")
        self.source_ranges = source_ranges
        self.pattern = list(pattern)
        self.group_size = group_size
        self.repeat_count = repeat_count
        self.shuffle = shuffle
        if num_cycles is None:
            num_cycles = max(
                math.ceil(len(source_ranges[name]) / (self.pattern.count(name) * group_size)) for name in set(pattern)
            )
        self.num_cycles = max(1, num_cycles)
        self.generator = torch.Generator().manual_seed(seed)
        self._streams: dict[str, list[int]] = {}

    def _take(self, name: str) -> list[int]:
        out: list[int] = []
        while len(out) < self.group_size:
            stream = self._streams.get(name)
            if not stream:
                source = self.source_ranges[name]
                order = torch.randperm(len(source), generator=self.generator).tolist() if self.shuffle else None
                stream = [source[i] for i in order] if order is not None else list(source)
                self._streams[name] = stream
            take = min(len(stream), self.group_size - len(out))
            out += stream[:take]
            del stream[:take]
        return out

    def __iter__(self):
        for _ in range(self.num_cycles):
            for name in self.pattern:
                group = self._take(name)
                for _ in range(self.repeat_count):
                    yield from group

    def __len__(self) -> int:
        return self.num_cycles * len(self.pattern) * self.group_size * self.repeat_count
