"""Pool format validation and the selection sampler inside a real Trainer (swap, fixed length, resume)."""

import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from trl_distill.core.pool import to_grouped_pool, to_long_pool, validate_pool
from trl_distill.core.sampler import SelectionCallback, SelectionSampler


LONG = Dataset.from_list(
    [
        {"prompt_id": 0, "prompt": "p0", "completion": "a", "teacher": "t1", "correct": True, "answer": "1"},
        {"prompt_id": 0, "prompt": "p0", "completion": "b", "teacher": "t2", "correct": False, "answer": "1"},
        {"prompt_id": 1, "prompt": "p1", "completion": "c", "teacher": "t1", "correct": True, "answer": "2"},
    ]
)


def test_long_and_grouped_pools_round_trip():
    grouped = to_grouped_pool(LONG)
    assert grouped["prompt"] == ["p0", "p1"] and grouped["answer"] == ["1", "2"]
    assert [c["teacher"] for c in grouped["candidates"][0]] == ["t1", "t2"]
    back = to_long_pool(grouped)
    assert back.select_columns(LONG.column_names).to_list() == LONG.to_list()


def test_sft_dataset_is_a_pool_with_one_candidate_per_prompt():
    sft = Dataset.from_dict({"prompt": ["x", "y"], "completion": ["1", "2"]})
    long = to_long_pool(sft)
    assert long["prompt_id"] == [0, 1] and long["correct"] == [True, True] and long["teacher"] == ["dataset"] * 2


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"prompt": "p", "candidates": []}], "Row 0: `candidates` is empty"),
        (
            [{"prompt": "p", "candidates": [{"completion": "a", "teacher": "t"}]}],
            r"Row 0, candidate 0: missing \['correct'\]",
        ),
        ([{"prompt_id": 0, "prompt": "p", "completion": "a", "teacher": "t"}], r"missing column\(s\) \['correct'\]"),
        (
            [{"prompt_id": 0, "prompt": "p", "completion": " ", "teacher": "t", "correct": True}],
            "Row 0: `completion` is empty",
        ),
        ([{"prompt_id": 0, "prompt": "p", "completion": "a", "teacher": "t", "correct": "yes"}], "must be a boolean"),
        ([{"question": "p"}], "Not a candidate pool"),
    ],
)
def test_bad_pools_name_the_column_and_row(rows, message):
    with pytest.raises(ValueError, match=message):
        validate_pool(Dataset.from_list(rows))


def test_sampler_is_deterministic_fixed_length_and_weighted():
    sampler = SelectionSampler(10, selection=[1, 3, 5], seed=7)
    assert len(sampler) == 10 and len(list(sampler)) == 10 and set(sampler) == {1, 3, 5}
    assert sampler.indices(2) == SelectionSampler(10, selection=[1, 3, 5], seed=7).indices(2)
    assert sampler.indices(1) != sampler.indices(2)
    sampler.select([0, 9], weights=[0.0, 1.0])
    assert set(sampler.indices(0)) == {9}
    with pytest.raises(ValueError, match="at least one index"):
        sampler.select([])


class Recorder(torch.nn.Module):
    """A model that remembers which dataset indices each step trained on."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.seen: list[list[int]] = []

    def forward(self, idx):
        self.seen.append(idx.tolist())
        return {"loss": (self.w * idx.float()).mean()}


class EvenOdd(SelectionCallback):
    """Even indices in even epochs, odd ones in odd epochs."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.rounds: list[int] = []

    def reselect(self, epoch, sampler, **kwargs):
        self.rounds.append(epoch)
        sampler.select([i for i in range(8) if i % 2 == epoch % 2])


def _trainer(tmp_path, model, callback, **kwargs):
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        num_train_epochs=2,
        learning_rate=0.0,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        **{"save_strategy": "steps", "save_steps": 6, **kwargs},
    )
    data = Dataset.from_dict({"idx": list(range(8))})
    return Trainer(model=model, args=args, train_dataset=data, callbacks=[callback])


def test_callback_swaps_what_each_epoch_trains_on_and_resume_restores_it(tmp_path):
    model, callback = Recorder(), EvenOdd()
    _trainer(tmp_path, model, callback).train()
    assert callback.rounds == [0, 1]
    epochs = [sum(model.seen[:4], []), sum(model.seen[4:], [])]
    assert len(epochs[0]) == len(epochs[1]) == 8  # fixed epoch length
    assert {i % 2 for i in epochs[0]} == {0} and {i % 2 for i in epochs[1]} == {1}

    # Resume mid-epoch 1 (step 6 of 8): the odd selection comes from the checkpoint, not a new round.
    resumed_model, resumed = Recorder(), EvenOdd()
    _trainer(tmp_path, resumed_model, resumed).train(resume_from_checkpoint=str(tmp_path / "checkpoint-6"))
    assert resumed.rounds == []
    assert resumed_model.seen == model.seen[6:]


def test_callback_seeds_its_shuffles_from_the_trainer_unless_given_one(tmp_path):
    orders = {}
    for name, callback_seed, trainer_seed in (("a", None, 1), ("b", None, 2), ("c", 5, 1), ("d", 5, 2)):
        model, callback = Recorder(), EvenOdd(seed=callback_seed)
        _trainer(tmp_path / name, model, callback, seed=trainer_seed, save_strategy="no").train()
        assert callback.sampler.seed == (trainer_seed if callback_seed is None else callback_seed)
        orders[name] = model.seen
    assert orders["a"] != orders["b"]  # --seed changes the data order, as it does without the callback
    assert orders["c"] == orders["d"]  # an explicit seed pins it
