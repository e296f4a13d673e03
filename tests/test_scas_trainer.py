"""SCASTrainer on a tiny pool: re-selection per epoch, resume, plain-SFT equivalence and pool errors."""

import json
import os

import pytest
import torch
from datasets import Dataset
from sft_formats import FORMATS, sft_dataset
from trl import SFTConfig, SFTTrainer

from trl_distill.core.pool import to_long_pool
from trl_distill.lab.world.models import tiny_model
from trl_distill.lab.world.toys import toy_pool
from trl_distill.scas.scas_callback import SCASCallback
from trl_distill.scas.scas_config import SCASConfig
from trl_distill.scas.scas_trainer import POOL_ROW, SCASTrainer


class RecordingSCASTrainer(SCASTrainer):
    """Records which pool row every trained sequence came from, per epoch."""

    def training_step(self, model, inputs, *args, **kwargs):
        if not hasattr(self, "seen"):
            self.seen = {}
            self._row_of = {
                tuple(ids): row for ids, row in zip(self.train_dataset["input_ids"], self.train_dataset[POOL_ROW])
            }
        epoch = int(self.state.epoch + 1e-6)
        for ids, mask in zip(inputs["input_ids"].tolist(), inputs["attention_mask"].tolist()):
            self.seen.setdefault(epoch, []).append(self._row_of[tuple(i for i, m in zip(ids, mask) if m)])
        return super().training_step(model, inputs, *args, **kwargs)


def config(output_dir, **overrides):
    values = dict(
        per_device_train_batch_size=4,
        num_train_epochs=2,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        selection_group=5,  # the most expensive answers: training on them makes them cheaper, so the choice moves
    )
    values.update(overrides)
    return SCASConfig(str(output_dir), **values)


@pytest.fixture(scope="module")
def pool():
    return toy_pool(num_prompts=8, styles=("cot", "terse", "equation"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tokenizer, pool):
    """Two epochs, re-scored every epoch, with a checkpoint every step."""
    out = tmp_path_factory.mktemp("scas")
    args = config(out, save_strategy="steps", save_steps=1, save_only_model=False)
    trainer = RecordingSCASTrainer(
        tiny_model(tokenizer, "xs", "qwen2", seed=0), args, train_dataset=pool, processing_class=tokenizer
    )
    trainer.train()
    return trainer, out


def test_epoch_two_trains_on_reselected_answers(trained, pool):
    trainer, _ = trained
    history = trainer.scas_callback.history
    assert [h["epoch"] for h in history] == [0, 1]
    long = to_long_pool(pool)
    for epoch, record in enumerate(history):
        # one answer per prompt per epoch, exactly the answers of that round
        assert sorted(trainer.seen[epoch]) == sorted(record["selected_rows"])
        assert sorted(long["prompt_id"][r] for r in trainer.seen[epoch]) == list(range(8))
        assert all(long["correct"][r] for r in record["selected_rows"])
    assert history[0]["selected_rows"] != history[1]["selected_rows"]
    changed = sum(a != b for a, b in zip(history[0]["selected_rows"], history[1]["selected_rows"])) / 8
    assert history[1]["metrics"]["scas/changed_fraction"] == pytest.approx(changed)
    assert "scas/changed_fraction" not in history[0]["metrics"]


def test_round_metrics_are_logged(trained, pool):
    trainer, _ = trained
    logged = [entry for entry in trainer.state.log_history if "scas/learning_cost" in entry]
    assert len(logged) == 2  # once per round
    for entry, record in zip(logged, trainer.scas_callback.history):
        shares = {k: v for k, v in entry.items() if k.startswith("scas/teacher_share/")}
        assert set(shares) == {f"scas/teacher_share/{t}" for t in ("cot", "equation", "sloppy", "terse")}
        assert sum(shares.values()) == pytest.approx(1.0)
        assert entry["scas/learning_cost"] == pytest.approx(record["metrics"]["scas/learning_cost"])
    # the sloppy teacher answered half the prompts wrong; it may only be picked where it is right
    long = to_long_pool(pool)
    sloppy = [r for r in trainer.scas_callback.history[0]["selected_rows"] if long["teacher"][r] == "sloppy"]
    assert all(long["correct"][r] for r in sloppy)


def test_resume_restores_the_selection(trained, tokenizer, pool, monkeypatch):
    trainer, out = trained
    # step 3 is inside epoch 2 (2 steps per epoch), after the second round
    checkpoint = os.path.join(out, "checkpoint-3")
    with open(os.path.join(checkpoint, "trainer_state.json")) as f:
        saved = json.load(f)["stateful_callbacks"]["trl_distill.SCASCallback"]
    assert saved["last_round"] == 1
    calls = []
    monkeypatch.setattr(SCASCallback, "score", lambda self, model: calls.append(1) or [])
    args = config(out, save_strategy="no")
    resumed = RecordingSCASTrainer(
        tiny_model(tokenizer, "xs", "qwen2", seed=5), args, train_dataset=pool, processing_class=tokenizer
    )
    resumed.train(resume_from_checkpoint=checkpoint)
    assert calls == []  # restored, not recomputed
    second_round = trainer.scas_callback.history[1]["selected_rows"]
    index = resumed.scas_callback.dataset_index
    assert resumed.scas_callback.sampler.selection == [index[r] for r in second_round]
    assert resumed.scas_callback.history == trainer.scas_callback.history
    # the resumed half-epoch trains on the last batch the first run trained in epoch 2
    assert resumed.seen[1] == trainer.seen[1][4:]


def test_rescore_once(tmp_path, tokenizer, pool):
    args = config(tmp_path, rescore_every=0, num_train_epochs=2, max_steps=3)
    trainer = RecordingSCASTrainer(
        tiny_model(tokenizer, "xs", "qwen2"), args, train_dataset=pool, processing_class=tokenizer
    )
    trainer.train()
    assert len(trainer.scas_callback.history) == 1
    selected = trainer.scas_callback.history[0]["selected_rows"]
    assert sorted(trainer.seen[0]) == sorted(selected)
    assert set(trainer.seen[1]) <= set(selected)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_plain_sft_dataset_trains_exactly_like_sft_trainer(tokenizer, fmt, cpu_training_args):
    plain = sft_dataset(fmt, tokenizer)  # one answer per prompt, no pool columns, in each format SFTTrainer takes
    args = cpu_training_args(
        SFTConfig, per_device_train_batch_size=2, max_steps=3, learning_rate=1e-2, logging_steps=1
    )
    results = []
    for cls in (SFTTrainer, SCASTrainer):  # the script changes the class and nothing else
        trainer = cls(
            tiny_model(tokenizer, "xs", "qwen2", seed=0), args, train_dataset=plain, processing_class=tokenizer
        )
        prepared = trainer.train_dataset.to_dict()  # same examples, same order, same labels
        trainer.train()
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        results.append((prepared, losses, [p.detach().clone() for p in trainer.model.parameters()]))
    assert isinstance(trainer.args, SCASConfig) and trainer.scas_callback is None
    assert results[0][0] == results[1][0]
    assert len(results[0][1]) == 3 and results[0][1] == results[1][1]
    assert all(torch.equal(a, b) for a, b in zip(results[0][2], results[1][2]))


def test_bad_pools_give_clear_errors(tmp_path, tokenizer):
    model = tiny_model(tokenizer, "xs", "qwen2")
    args = config(tmp_path)
    prompt = [{"role": "user", "content": "Compute 1+1."}]
    answer = [{"role": "assistant", "content": "Answer: 2"}]
    empty = Dataset.from_list([{"prompt": prompt, "candidates": []}, {"prompt": prompt, "candidates": []}])
    with pytest.raises(ValueError, match="Row 0: `candidates` is empty"):
        SCASTrainer(model, args, train_dataset=empty, processing_class=tokenizer)
    missing = Dataset.from_list([{"prompt_id": 0, "prompt": prompt, "completion": answer, "correct": True}])
    with pytest.raises(ValueError, match=r"missing column\(s\) \['teacher'\]"):
        SCASTrainer(model, args, train_dataset=missing, processing_class=tokenizer)
    no_flag = Dataset.from_list([{"prompt": prompt, "candidates": [{"completion": answer, "teacher": "a"}]}])
    with pytest.raises(ValueError, match="missing \\['correct'\\]"):
        SCASTrainer(model, args, train_dataset=no_flag, processing_class=tokenizer)
    none_correct = Dataset.from_list(
        [{"prompt": prompt, "candidates": [{"completion": answer, "teacher": "a", "correct": False}]}] * 2
    )
    with pytest.raises(ValueError, match="No prompt has an eligible candidate"):
        SCASTrainer(model, args, train_dataset=none_correct, processing_class=tokenizer)
    one_bad = Dataset.from_list(
        [
            {"prompt": prompt, "candidates": [{"completion": answer, "teacher": "a", "correct": False}]},
            {"prompt": prompt, "candidates": [{"completion": answer, "teacher": "a", "correct": True}]},
        ]
    )
    with pytest.raises(ValueError, match="1 of 2 prompts have no verified-correct candidate"):
        SCASTrainer(model, config(tmp_path, strict=True), train_dataset=one_bad, processing_class=tokenizer)
    with pytest.raises(ValueError, match="packing=False"):
        SCASTrainer(
            model, config(tmp_path, packing=True, max_length=64), train_dataset=one_bad, processing_class=tokenizer
        )


def test_recipes_parse_into_the_config():
    from trl_distill.scripts.scas import make_parser

    recipes = os.path.join(os.path.dirname(__file__), "..", "recipes", "scas")
    names = sorted(f for f in os.listdir(recipes) if f.endswith(".yaml"))
    assert "toy.yaml" in names and len(names) >= 2
    for name in names:
        with open(os.path.join(recipes, name)) as f:
            first_lines = f.read(400)
        assert name == "toy.yaml" or "hardware" in first_lines.lower()
        # the command's own parser: a recipe names its model and data too (`lab:` sources in the toy one)
        parser = make_parser()
        # use_cpu lets the bf16 GPU recipes validate on a CPU-only machine
        argv = ["--config", os.path.join(recipes, name), "--output_dir", "/tmp/x", "--use_cpu", "true"]
        _, args, _ = parser.parse_args_and_config(argv)
        assert isinstance(args, SCASConfig)
        assert args.lmbda == 0.5 and args.selection_strategy == "scas"


def test_prompts_without_a_verified_answer_are_warned_about_once(tmp_path, tokenizer, caplog):
    prompt = [{"role": "user", "content": "Compute 1+1."}]
    answer = [{"role": "assistant", "content": "Answer: 2"}]
    one_bad = Dataset.from_list(
        [
            {"prompt": prompt, "candidates": [{"completion": answer, "teacher": "a", "correct": False}]},
            {"prompt": prompt, "candidates": [{"completion": answer, "teacher": "a", "correct": True}]},
        ]
    )
    args = config(tmp_path, num_train_epochs=3, rescore_every=1, per_device_train_batch_size=1)
    with caplog.at_level("WARNING", logger="trl_distill.scas"):
        trainer = SCASTrainer(tiny_model(tokenizer, "xs"), args, train_dataset=one_bad, processing_class=tokenizer)
        trainer.train()
    assert len(trainer.scas_callback.history) == 3  # three selection rounds...
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1  # ...and one warning
    assert "1 of 2 prompts have no verified-correct candidate" in caplog.records[0].message
    assert all(r["metrics"]["scas/skipped_prompts"] == 1 for r in trainer.scas_callback.history)
