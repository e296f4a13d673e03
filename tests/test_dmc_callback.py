"""DMCCallback with a plain TRL SFTTrainer: what each epoch draws, resume, logging, and errors before training."""

import json
import os

import numpy as np
import pytest
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from trl_distill.dmc.dmc_callback import CandidateDatasets, DMCArguments, DMCCallback, mixture_weights
from trl_distill.lab.world.tasks import make_task_splits, task_reward


ROWS = 16  # per candidate dataset; batch 8 -> 4 steps per epoch over the two datasets


@pytest.fixture(scope="module")
def world():
    cot = make_task_splits(("arithmetic",), ROWS, 8, 4, seed=0, style="cot")
    terse = make_task_splits(("arithmetic",), ROWS, 8, 4, seed=0, style="terse")["train"]
    good = cot["train"].add_column("correct", [True] * ROWS)
    bad = terse.add_column("correct", [i % 4 == 0 for i in range(ROWS)])  # Q = 0.25
    return CandidateDatasets({"good": good, "bad": bad}), cot["dev"]


def make_trainer(tmp_path, model, tokenizer, candidates, callback_kwargs, dev, **config):
    settings = {
        "per_device_train_batch_size": 8,
        "num_train_epochs": 2,
        "learning_rate": 2e-3,
        "logging_steps": 100,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "max_length": 96,
        "gradient_checkpointing": False,
    }
    args = SFTConfig(output_dir=str(tmp_path), **{**settings, **config})
    trainer = SFTTrainer(model=model, args=args, train_dataset=candidates.train_dataset, processing_class=tokenizer)
    callback = DMCCallback(
        candidates, dev, task_reward, trainer=trainer, max_new_tokens=8, dev_size=4, **callback_kwargs
    )
    trainer.add_callback(callback)
    # record the candidate rows each batch really trains on (rows are told apart by their token ids)
    row_of = {tuple(ids): i for i, ids in enumerate(trainer.train_dataset["input_ids"])}
    drawn, collate = [], trainer.data_collator

    def recording_collator(examples):
        drawn.append([row_of[tuple(e["input_ids"])] for e in examples])
        return collate(examples)

    trainer.data_collator = recording_collator
    return trainer, callback, drawn


def test_candidates_know_each_datasets_rows(world):
    candidates, _ = world
    assert len(candidates) == 2 * ROWS
    assert candidates.ranges == {"good": range(0, ROWS), "bad": range(ROWS, 2 * ROWS)}
    assert candidates.dataset_of(ROWS) == "bad"
    assert candidates.train_dataset[ROWS]["completion"] == candidates.datasets["bad"][0]["completion"]


def test_strategies_select_from_hand_made_scores(world):
    candidates, dev = world
    scores = {
        "capability": 0.5,
        "datasets": {"good": {"dmc": 0.3}, "bad": {"dmc": 0.1}},
        "example_dmc": [0.0] * (2 * ROWS),
    }
    top = DMCCallback(candidates, dev, task_reward, strategy="top_dataset")
    selection, weights, share = top.select(scores)
    assert selection == list(range(ROWS)) and weights is None and share == {"good": 1.0, "bad": 0.0}

    mixture = DMCCallback(candidates, dev, task_reward, strategy="mixture", temperature=0.2)
    selection, weights, share = mixture.select(scores)
    w_good = 1 / (1 + np.exp(-1.0))  # softmax([0.3, 0.1] / 0.2) = sigmoid(1)
    assert share["good"] == pytest.approx(w_good) and share["bad"] == pytest.approx(1 - w_good)
    assert selection == list(range(2 * ROWS))
    assert sum(weights[:ROWS]) == pytest.approx(w_good) and weights[0] == pytest.approx(w_good / ROWS)

    fraction = DMCCallback(candidates, dev, task_reward, strategy="top_fraction", top_fraction=0.25)
    example_dmc = [0.0] * (2 * ROWS)
    for rank, row in enumerate([30, 2, 7, 21, 11, 19, 25, 5, 0]):  # 9 highest, descending
        example_dmc[row] = 1.0 - 0.01 * rank
    selection, weights, share = fraction.select({**scores, "example_dmc": example_dmc})
    assert selection == sorted([30, 2, 7, 21, 11, 19, 25, 5])  # ceil(0.25 * 32) = 8
    assert share == {"good": 4 / 8, "bad": 4 / 8}  # rows 0..15 are "good": 2, 5, 7, 11


def test_top_dataset_trains_only_on_the_best_dataset_and_logs_each_round(tmp_path, tiny_student, tokenizer, world):
    candidates, dev = world
    trainer, callback, drawn = make_trainer(
        tmp_path, tiny_student, tokenizer, candidates, {"strategy": "top_dataset", "probe_size": 8}, dev
    )
    trainer.train()
    steps_per_epoch = 2 * ROWS // 8
    assert len(drawn) == 2 * steps_per_epoch  # the epoch length did not change
    assert all(i in candidates.ranges["good"] for batch in drawn for i in batch)  # "bad" (Q = 0.25) never drawn
    rounds = [entry for entry in trainer.state.log_history if "dmc/capability" in entry]
    assert [r["step"] for r in rounds] == [0, steps_per_epoch]  # one round per epoch, logged via trainer.log
    for r in rounds:
        for name in ("good", "bad"):
            # DMC = Q / (1 + β·(1 − C)·L), β = 1, written out rather than recomputed by `compatibility`
            q, ell, c = r[f"dmc/{name}/quality"], r[f"dmc/{name}/difficulty"], r["dmc/capability"]
            assert r[f"dmc/{name}/dmc"] == pytest.approx(q / (1 + (1 - c) * ell))
        assert r["dmc/good/weight"] == 1.0 and r["dmc/bad/weight"] == 0.0
    assert rounds[0]["dmc/good/quality"] == 1.0 and rounds[0]["dmc/bad/quality"] == 0.25
    # the model learned the good dataset between the rounds, so its difficulty was re-measured and fell
    assert rounds[1]["dmc/good/difficulty"] < rounds[0]["dmc/good/difficulty"]


def test_top_fraction_reselects_with_the_current_model(tmp_path, tiny_student, tokenizer, world):
    candidates, dev = world
    trainer, callback, drawn = make_trainer(
        tmp_path, tiny_student, tokenizer, candidates, {"strategy": "top_fraction", "top_fraction": 0.25}, dev
    )
    selections, measured = [], []
    measure = callback.measure

    def spy(model, tokenizer, **cut):
        scores = measure(model, tokenizer, **cut)
        measured.append(scores["example_dmc"])
        selections.append(callback.select(scores)[0])
        return scores

    callback.measure = spy
    trainer.train()
    steps_per_epoch = 2 * ROWS // 8
    assert len(selections) == 2 and all(len(s) == 8 for s in selections)
    for epoch, selection in enumerate(selections):
        epoch_draws = {i for batch in drawn[epoch * steps_per_epoch : (epoch + 1) * steps_per_epoch] for i in batch}
        assert epoch_draws == set(selection)  # each epoch trains exactly on that epoch's selection
    # the second round re-measured every example with the trained model (the trained rows got easier) and kept the
    # top quarter of those new scores
    assert measured[0] != measured[1]
    assert sum(measured[1][i] for i in selections[0]) > sum(measured[0][i] for i in selections[0])
    assert selections[1] == sorted(sorted(range(2 * ROWS), key=lambda i: -measured[1][i])[:8])


def test_resume_restores_the_selection_and_the_draws(tmp_path, tokenizer, world):
    from trl_distill.lab.world.models import tiny_model

    candidates, dev = world
    kwargs = {"strategy": "top_fraction", "top_fraction": 0.25}
    first, first_callback, first_drawn = make_trainer(
        tmp_path,
        tiny_model(tokenizer, "xs", seed=0),
        tokenizer,
        candidates,
        kwargs,
        dev,
        num_train_epochs=1,
        save_strategy="steps",
        save_steps=2,
    )
    first.train()
    checkpoint = os.path.join(tmp_path, "checkpoint-2")  # in the middle of epoch 0 (4 steps per epoch)
    with open(os.path.join(checkpoint, "trainer_state.json")) as f:
        saved = json.load(f)["stateful_callbacks"]["trl_distill.DMCCallback"]
    assert saved["last_round"] == 0 and saved["extra"]["scores"]["epoch"] == 0

    second, callback, drawn = make_trainer(
        tmp_path, tiny_model(tokenizer, "xs", seed=5), tokenizer, candidates, kwargs, dev
    )
    rounds = []
    measure = callback.measure
    callback.measure = lambda model, tok, **cut: rounds.append(1) or measure(model, tok, **cut)
    second.train(resume_from_checkpoint=checkpoint)
    assert len(rounds) == 1  # epoch 0 was not re-scored on resume; epoch 1 was
    assert drawn[:2] == first_drawn[2:4]  # the rest of epoch 0 drew exactly what the first run drew
    assert callback.scores["epoch"] == 1


def test_errors_before_training(tmp_path, tiny_student, tokenizer, world):
    candidates, dev = world
    with pytest.raises(ValueError, match="packing=True"):
        trainer, _, _ = make_trainer(tmp_path, tiny_student, tokenizer, candidates, {}, dev, packing=True)
        trainer.train()
    other = SFTTrainer(
        model=tiny_student,
        args=SFTConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, gradient_checkpointing=False),
        train_dataset=candidates.datasets["good"],  # not the concatenation
        processing_class=tokenizer,
        callbacks=[DMCCallback(candidates, dev, task_reward, max_new_tokens=4, dev_size=2)],
    )
    with pytest.raises(ValueError, match="train on `candidates.train_dataset`"):
        other.train()
    assert other.state.global_step == 0
    with pytest.raises(ValueError, match="dev split for capability"):
        DMCCallback(candidates, dev.select([]), task_reward)
    with pytest.raises(ValueError, match="no verifier was given"):
        DMCCallback(candidates, dev, None)
    with pytest.raises(ValueError, match="a dev split of size 0"):
        DMCArguments(dev_size=0)
    with pytest.raises(ValueError, match="strategy must be one of"):
        DMCCallback(candidates, dev, task_reward, strategy="best")
    with pytest.raises(ValueError, match="'empty' is empty"):
        CandidateDatasets({"empty": Dataset.from_dict({"prompt": [], "completion": []})})
    with pytest.raises(ValueError, match=r"'raw' has no \['completion'\] column"):
        CandidateDatasets({"raw": Dataset.from_dict({"prompt": ["a"], "text": ["b"]})})
    no_flags = candidates.datasets["good"].remove_columns(["correct", "answer"])
    with pytest.raises(ValueError, match="The verifier failed on the responses of .no_flags."):
        DMCCallback({"no_flags": no_flags}, dev, task_reward)


def test_mixture_weights_follow_dmc():
    assert mixture_weights([0.5, 0.5], 0.1).tolist() == [0.5, 0.5]
    assert mixture_weights([0.9, 0.1], 0.01)[0] > 0.999


def test_works_with_scas_trainer_on_plain_candidates_and_refuses_a_pool(tmp_path, tiny_student, tokenizer, world):
    from trl_distill.lab.world.toys import toy_pool
    from trl_distill.scas.scas_config import SCASConfig
    from trl_distill.scas.scas_trainer import SCASTrainer

    candidates, dev = world
    config = {"report_to": [], "use_cpu": True, "gradient_checkpointing": False, "save_strategy": "no"}
    args = SCASConfig(str(tmp_path), per_device_train_batch_size=8, num_train_epochs=1, max_length=96, **config)
    trainer = SCASTrainer(tiny_student, args=args, train_dataset=candidates.train_dataset, processing_class=tokenizer)
    trainer.add_callback(
        DMCCallback(candidates, dev, task_reward, strategy="top_dataset", probe_size=4, dev_size=2, max_new_tokens=4)
    )
    trainer.train()
    assert trainer.state.global_step == 2 * ROWS // 8
    rounds = [entry for entry in trainer.state.log_history if "dmc/capability" in entry]
    assert len(rounds) == 1 and rounds[0]["dmc/good/weight"] == 1.0

    pool_trainer = SCASTrainer(tiny_student, args=args, train_dataset=toy_pool(4), processing_class=tokenizer)
    pool_trainer.add_callback(DMCCallback(candidates, dev, task_reward, max_new_tokens=4, dev_size=2))
    with pytest.raises(ValueError, match="another selection"):
        pool_trainer.train()


def test_an_all_wrong_candidate_is_never_drawn_and_is_warned_about(world, caplog):
    candidates, dev = world
    wrong = candidates.datasets["bad"].map(lambda row: {"correct": False})
    mixed = CandidateDatasets({"good": candidates.datasets["good"], "wrong": wrong})
    with caplog.at_level("WARNING", logger="trl_distill.dmc.dmc_callback"):
        callback = DMCCallback(mixed, dev, task_reward, strategy="mixture")
    assert "['wrong'] have quality Q = 0" in caplog.text
    scores = {"capability": 0.0, "datasets": {"good": {"dmc": 0.25}, "wrong": {"dmc": 0.0}}}
    selection, weights, share = callback.select(scores)
    assert share == {"good": 1.0, "wrong": 0.0} and sum(weights[ROWS:]) == 0.0
    with pytest.raises(ValueError, match="Every candidate dataset has quality Q = 0"):
        DMCCallback({"wrong": wrong}, dev, task_reward)


def test_candidates_and_dev_may_be_lists_of_rows_or_dicts_of_columns(world):
    candidates, dev = world
    good = candidates.datasets["good"]
    as_rows = CandidateDatasets({"good": good.to_list(), "bad": candidates.datasets["bad"].to_dict()})
    assert as_rows.train_dataset.to_list() == candidates.train_dataset.to_list()
    callback = DMCCallback(as_rows, dev.to_list(), task_reward)
    assert callback.dev_dataset.to_list() == dev.to_list()
    with pytest.raises(TypeError, match="candidate dataset 'good' must be a `datasets.Dataset`"):
        CandidateDatasets({"good": 42})
