"""Issue 28, datasets and pools: every input the package cannot use correctly fails early and clearly (or falls back
once, with a word): splits a file does not have, streamed and multi-split pools, resumes on changed pools, duplicate
dataset names, rewards out of range."""

import json
import logging
import math
import os

import pytest
from datasets import Dataset, DatasetDict, IterableDataset

from trl_distill.core.data import load_data
from trl_distill.dmc.compatibility import as_named_datasets, quality_per_example, rank_datasets
from trl_distill.lab.world.models import tiny_model
from trl_distill.scas.scas_config import SCASConfig
from trl_distill.scas.scas_trainer import SCASTrainer
from trl_distill.scripts.dmc_rank import DMCRankArguments


ROWS = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(10)]


def config(tmp_path, **overrides):
    values = dict(per_device_train_batch_size=2, report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True)
    return SCASConfig(str(tmp_path / "out"), **(values | overrides))


def pool_rows(order=range(4)):
    """Four prompts with two answers each; teacher `b` is wrong on prompt 3."""
    rows = [
        {"prompt_id": p, "prompt": f"Compute {p}+1.", "completion": f"Answer: {p + 1 if t == 'a' or p != 3 else 0}"}
        | {"teacher": t, "correct": t == "a" or p != 3}
        for p in range(4)
        for t in ("a", "b")
    ]
    return [rows[i] for i in [2 * p + j for p in order for j in (0, 1)]]


# --- 1. a single file has one split -----------------------------------------------------------------------------
def test_a_single_file_has_only_a_train_split(tmp_path):
    path = str(tmp_path / "rows.jsonl")
    Dataset.from_list(ROWS).to_json(path)
    assert len(load_data(path)) == 10
    with pytest.raises(
        ValueError, match=r"rows\.jsonl' is a single data file, which has one split, `train`.*no 'test'"
    ):
        load_data(path, split="test")  # main: the 10 training rows, as the "test" split
    # the fixes the message names: a slice of the file, a directory with one file per split
    assert load_data(path, split="train[:80%]")["prompt"] == [f"p{i}" for i in range(8)]
    assert load_data(path, split="train[80%:]")["prompt"] == ["p8", "p9"]
    (tmp_path / "splits").mkdir()
    Dataset.from_list(ROWS[:8]).to_json(tmp_path / "splits" / "train.jsonl")
    Dataset.from_list(ROWS[8:]).to_json(tmp_path / "splits" / "test.jsonl")
    assert load_data(str(tmp_path / "splits"), split="test")["prompt"] == ["p8", "p9"]
    # a file given as a dev/eval set of its own is that split, whole
    assert len(load_data(path, split="test", whole_file=True)) == 10


def test_saved_datasets_released_pools_and_directories_name_a_missing_split(tmp_path):
    Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(ValueError, match=r"saved `Dataset` \(not a `DatasetDict`\).*no 'test' split"):
        load_data(str(tmp_path / "saved"), split="test")
    assert len(load_data(str(tmp_path / "saved"), split="test", whole_file=True)) == 10
    released = tmp_path / "released"
    released.mkdir()
    (released / "t.jsonl").write_text(json.dumps({"id": 0, "instruction": "q", "teacher_output": "a"}) + "\n")
    with pytest.raises(ValueError, match="released pool directory, which has one split"):
        load_data(str(released), split="test")
    (tmp_path / "only_train").mkdir()
    Dataset.from_list(ROWS).to_json(tmp_path / "only_train" / "train.jsonl")
    with pytest.raises(ValueError, match=r"only_train': Unknown split \"test\". Should be one of \['train'\]"):
        load_data(str(tmp_path / "only_train"), split="test")


@pytest.mark.parametrize(("name", "content"), [("blank.jsonl", "\n\n"), ("none.csv", ""), ("list.json", "[]")])
def test_an_empty_data_file_says_so(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    # main: StopIteration, DatasetGenerationError or 'Instruction "train" corresponds to no data!'
    with pytest.raises(ValueError, match=rf"{name}' (is empty|has no rows)"):
        load_data(str(tmp_path / name))


def test_the_readme_evaluates_on_a_split_the_data_has():
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")) as f:
        readme = f.read()
    assert "--dataset_name pool.jsonl --eval_strategy steps --dataset_test_split test" not in readme


def test_an_eval_pool_is_evaluated_without_its_wrong_answers(tmp_path, tokenizer, caplog):
    pool = Dataset.from_list(pool_rows())
    with caplog.at_level(logging.WARNING, logger="trl_distill.scas.scas_trainer"):
        trainer = SCASTrainer(
            tiny_model(tokenizer, "xs"),
            config(tmp_path),
            train_dataset=pool,
            eval_dataset=pool,
            processing_class=tokenizer,
        )
    assert len(trainer.eval_dataset) == 7  # main: 8, the wrong answer of teacher b on prompt 3 included
    assert caplog.text.count("Dropped 1 of the 8 answers of the eval_dataset pool") == 1
    with pytest.raises(ValueError, match="Every one of the 1 answers of the eval_dataset pool is verified wrong"):
        SCASTrainer(
            tiny_model(tokenizer, "xs"),
            config(tmp_path),
            train_dataset=pool,
            eval_dataset=pool.filter(lambda row: not row["correct"]),
            processing_class=tokenizer,
        )


# --- 2. streamed and multi-split pools --------------------------------------------------------------------------
def test_a_streamed_pool_or_a_dataset_dict_is_refused_before_training(tmp_path, tokenizer):
    pool = Dataset.from_list(pool_rows())
    for stream in (pool.to_iterable_dataset(), IterableDataset.from_generator(lambda: (yield from pool_rows()))):
        # main: trained as plain SFT, every candidate (the wrong one too)
        with pytest.raises(
            TypeError, match=r"streamed IterableDataset holding a candidate pool.*Dataset.from_generator"
        ):
            SCASTrainer(tiny_model(tokenizer, "xs"), config(tmp_path, max_steps=1), train_dataset=stream,
                        processing_class=tokenizer)  # fmt: skip
    with pytest.raises(TypeError, match=r"DatasetDict with splits \['test', 'train'\]; pass one split"):
        SCASTrainer(  # main: a bare KeyError
            tiny_model(tokenizer, "xs"),
            config(tmp_path),
            train_dataset=DatasetDict({"train": pool, "test": pool}),
            processing_class=tokenizer,
        )


def test_a_path_that_is_not_a_released_pool_is_refused_as_docs_errors_quotes(tmp_path, tokenizer):
    (tmp_path / "notes").mkdir()
    with pytest.raises(ValueError, match=r"^The train_dataset path '.*notes' is not a released SCAS pool directory"):
        SCASTrainer(tiny_model(tokenizer, "xs"), config(tmp_path), train_dataset=str(tmp_path / "notes"),
                    processing_class=tokenizer)  # fmt: skip


# --- 3. resuming on a changed pool ------------------------------------------------------------------------------
def test_resuming_on_a_changed_pool_is_refused_and_the_fix_works(tmp_path, tokenizer):
    args = config(tmp_path, max_steps=2, save_strategy="steps", save_steps=1, rescore_every=0, seed=0)
    SCASTrainer(
        tiny_model(tokenizer, "xs"), args, train_dataset=Dataset.from_list(pool_rows()), processing_class=tokenizer
    ).train()
    checkpoint = str(tmp_path / "out" / "checkpoint-1")
    with open(os.path.join(checkpoint, "trainer_state.json")) as f:
        assert json.load(f)["stateful_callbacks"]["trl_distill.SCASCallback"]["fingerprint"]["rows"] == 8

    def resume(rows):
        trainer = SCASTrainer(
            tiny_model(tokenizer, "xs"),
            config(tmp_path, max_steps=3, rescore_every=0, seed=0, resume_from_checkpoint=checkpoint),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
        trainer.train(resume_from_checkpoint=checkpoint)
        return trainer

    # re-ordered (same rows count, so main restored the old indices onto other rows) or re-verified: refused
    with pytest.raises(ValueError, match=r"Cannot resume SCASCallback's selection from .*checkpoint-1 \(step 1\)"):
        resume(pool_rows(order=(3, 2, 1, 0)))
    relabelled = [row | {"correct": True} for row in pool_rows()]
    with pytest.raises(
        ValueError, match=r"changed since it was saved \(other candidates \(prompt ids, teachers, `correct` flags"
    ):
        resume(relabelled)
    assert resume(pool_rows()).state.global_step == 3  # the same pool resumes
    # the fix the message names: drop the saved selection, keep the weights, select anew
    with open(os.path.join(checkpoint, "trainer_state.json")) as f:
        state = json.load(f)
    del state["stateful_callbacks"]["trl_distill.SCASCallback"]
    with open(os.path.join(checkpoint, "trainer_state.json"), "w") as f:
        json.dump(state, f)
    resumed = resume(pool_rows(order=(3, 2, 1, 0)))
    assert resumed.state.global_step == 3 and len(resumed.scas_callback.history) == 1


# --- 6. duplicate dataset names ---------------------------------------------------------------------------------
def test_two_candidate_datasets_of_one_name_are_refused():
    argv = dict(dev_dataset="dev.jsonl", model_name_or_path="m")
    with pytest.raises(ValueError, match=r"Two candidate datasets are named 'cot' \(cot=a.jsonl and cot=b.jsonl\)"):
        DMCRankArguments(datasets=["cot=a.jsonl", "cot=b.jsonl"], **argv)  # main: kept b.jsonl only
    assert DMCRankArguments(datasets=["cot=a.jsonl", "cot_2=b.jsonl"], **argv).datasets[1] == "cot_2=b.jsonl"
    data = Dataset.from_list(ROWS).add_column("correct", [True] * 10)
    with pytest.raises(ValueError, match=r"Two candidate datasets are named '1' \(keys \[1, '1'\]\)"):
        as_named_datasets({1: data, "1": data})
    with pytest.raises(ValueError, match="Two candidate datasets are named '1'"):
        rank_datasets(None, None, {1: data, "1": data}, data, verifier=None)  # before any model is touched


# --- 7. rewards out of range ------------------------------------------------------------------------------------
def test_a_reward_outside_its_range_or_nan_is_refused_not_clipped():
    data = Dataset.from_dict({"prompt": ["a", "b", "c"], "completion": ["x", "y", "z"], "reward": [0.5, 1.0, 0.0]})
    assert quality_per_example(data, reward_column="reward") == [0.5, 1.0, 0.0]
    high = data.map(lambda row, i: {"reward": 3.0 if i == 1 else row["reward"]}, with_indices=True)
    with pytest.raises(
        ValueError, match=r"Row 1 of candidate dataset 'dataset' has 'reward' = 3.0, outside reward_range"
    ):
        quality_per_example(high, reward_column="reward")  # main: 1.0
    assert quality_per_example(high, reward_column="reward", reward_range=(0, 4)) == [0.125, 0.75, 0.0]
    nan = data.map(lambda row, i: {"reward": math.nan if i == 2 else row["reward"]}, with_indices=True)
    with pytest.raises(ValueError, match=r"Row 2 of candidate dataset 'dataset' has 'reward' = nan"):
        quality_per_example(nan, reward_column="reward")
    scored = data.add_column("correct", [1.0, -1.0, 0.0])
    with pytest.raises(
        ValueError, match=r"Row 1 .* has 'correct' = -1.0; it must be a boolean or a number in \[0, 1\]"
    ):
        quality_per_example(scored)  # main: 0.0

    def signed_reward(prompts, completions, **kwargs):  # a TRL-style reward in [-1, 1]
        return [1.0 if c == "x" else -1.0 for c in completions]

    with pytest.raises(ValueError, match=r"The verifier gave row 1 .* the reward -1.0, outside \[0, 1\]"):
        quality_per_example(data, verifier=signed_reward)  # main: clipped to 0.0
    assert quality_per_example(data, verifier=lambda prompts, completions, **kw: [1.0, 0.0, 1.0]) == [1.0, 0.0, 1.0]


# --- the rest of the class: misspelled columns, missing values ----------------------------------------------------
def test_a_misspelled_column_is_named_with_the_closest_one():
    from trl_distill.core.pool import validate_pool

    long = Dataset.from_list(pool_rows()).rename_column("correct", "is_correct")
    with pytest.raises(
        ValueError, match=r"missing column\(s\) \['correct'\].*Did you mean 'is_correct' for 'correct'"
    ):
        validate_pool(long)
    sft = Dataset.from_dict({"prompt": ["p"], "completions": ["c"]})
    with pytest.raises(ValueError, match="Not a candidate pool.*Did you mean 'completions' for 'completion'"):
        validate_pool(sft)
    rewards = Dataset.from_dict({"prompt": ["p"], "completion": ["c"], "rewards": [0.5]})
    with pytest.raises(ValueError, match="no reward column 'reward'.*Did you mean 'rewards' for 'reward'"):
        quality_per_example(rewards, reward_column="reward")


@pytest.mark.parametrize(("column", "value"), [("teacher", None), ("prompt_id", None), ("prompt_id", math.nan)])
def test_a_pool_row_without_a_teacher_or_prompt_id_is_refused(column, value):
    from trl_distill.core.pool import to_long_pool

    rows = pool_rows()
    rows[5][column] = value  # main: the teacher "None", or one prompt of every id-less row
    with pytest.raises(ValueError, match=rf"Row 5: `{column}` is missing \({value!r}\); fill it or drop the row"):
        to_long_pool(Dataset.from_list(rows))
