"""OGLSSDTrainer on the tiny world: the three teacher kinds and short training runs."""

import copy
import math

import pytest
import torch
from datasets import Dataset
from test_ogls_sd_trainer import make_trainer, parity_reward  # shared with the loss tests (tests/ is on sys.path)

from trl_distill.lab.world.models import tiny_model
from trl_distill.lab.world.tasks import task_reward


@pytest.fixture(scope="module")
def toy(arithmetic):
    """Arithmetic rows whose privileged context is the reference solution (the row's completion text)."""
    return arithmetic["train"].map(lambda row: {"privileged_context": row["completion"][0]["content"]})


def test_initial_teacher_stays_frozen_while_the_student_moves(tokenizer, toy, tmp_path):
    trainer = make_trainer(tokenizer, toy, tmp_path, max_steps=1)
    student0 = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    teacher0 = {k: v.clone() for k, v in trainer.teacher_model.state_dict().items()}
    trainer.train()
    assert not any(p.requires_grad for p in trainer.teacher_model.parameters())
    assert all(torch.equal(v, teacher0[k]) for k, v in trainer.teacher_model.state_dict().items())
    assert any(not torch.equal(v, student0[k]) for k, v in trainer.model.state_dict().items())


def test_ema_teacher_follows_the_student_at_its_rate(tokenizer, toy, tmp_path):
    trainer = make_trainer(tokenizer, toy, tmp_path, max_steps=1, teacher_model_kind="ema", teacher_update_rate=0.25)
    teacher0 = {k: v.clone() for k, v in trainer.teacher_model.named_parameters()}
    trainer.train()
    student = dict(trainer.model.named_parameters())
    for name, value in trainer.teacher_model.named_parameters():
        torch.testing.assert_close(value, 0.75 * teacher0[name] + 0.25 * student[name].detach())
    assert any(not torch.equal(v, teacher0[k]) for k, v in trainer.teacher_model.named_parameters())


def test_peft_student_uses_the_adapter_disabled_base_as_teacher(tokenizer, toy, tmp_path):
    from peft import LoraConfig

    base = tiny_model(tokenizer, "xs", seed=0)
    reference = copy.deepcopy(base).eval()
    trainer = make_trainer(
        tokenizer, toy, tmp_path, model=base, peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )
    assert trainer.teacher_model is None  # no second copy in memory
    with torch.no_grad():  # a trained-looking adapter, so adapter-on and adapter-off differ
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.add_(0.5 * torch.randn_like(p))
    prompt = [{"role": "user", "content": "Compute 1+2."}]
    completion_ids = torch.tensor([tokenizer("3\nAnswer: 3")["input_ids"]])
    mask = torch.ones_like(completion_ids)
    trainer.model.train()
    hidden = trainer._teacher_hidden_states([prompt], completion_ids, mask)
    assert trainer.model.training  # the teacher forward runs in eval mode and restores the student's mode
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
    full = torch.cat([torch.tensor([list(prompt_ids)]), completion_ids], dim=1)
    with torch.no_grad():
        expected = reference.model(input_ids=full).last_hidden_state[:, len(prompt_ids) - 1 : -1]
        adapted = trainer.model.base_model.model.model(input_ids=full).last_hidden_state[:, len(prompt_ids) - 1 : -1]
    torch.testing.assert_close(hidden, expected, atol=1e-5, rtol=1e-5)
    assert (adapted - expected).abs().max() > 1e-3


@pytest.mark.parametrize("steering", ["pooled", "contextual"])
def test_training_on_the_toy_world_changes_the_student_and_logs(tokenizer, toy, tmp_path, steering):
    # the coin verifier mixes outcomes: with the v2 anchor (the initial model, i.e. the student at step 0) only the
    # steering and the positive tail move the student on its first step
    reward = parity_reward
    trainer = make_trainer(
        tokenizer, toy, tmp_path, reward=reward, steering=steering, gradient_accumulation_steps=2, max_steps=1
    )
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    assert any(not torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())
    logged = trainer.state.log_history[0]
    for key in (
        "loss",
        "reward",
        "steering/success_rate",
        "steering/frac_mixed_groups",
        "steering/direction_norm",
        "divergence",
        "entropy",
        f"rewards/{reward.__name__}/mean",
        "steering/frac_distilled_rollouts",
        "positive_tail/frac_rollouts",
    ):
        assert key in logged and math.isfinite(logged[key]), key
    if steering == "contextual":  # the context forwards really ran
        assert logged["steering/frac_mixed_groups"] > 0 and logged["steering/direction_norm"] > 0


def test_normalized_steering_in_training_has_unit_direction_norm(tokenizer, toy, tmp_path):
    trainer = make_trainer(
        tokenizer, toy, tmp_path, steering_alpha=2.0, normalize_direction=True, per_device_train_batch_size=8
    )
    trainer.train()
    steps = [log for log in trainer.state.log_history if "steering/frac_mixed_groups" in log]
    mixed = [log for log in steps if log["steering/frac_mixed_groups"] > 0]
    assert mixed, "the parity verifier should give some group both outcomes"
    for log in mixed:
        assert log["steering/direction_norm"] == pytest.approx(1.0, rel=1e-4)


def test_plain_text_prompts(tokenizer, tmp_path):
    rows = Dataset.from_list(
        [
            {
                "prompt": f"Compute {i}+1.",
                "privileged_context": f"Answer: {i + 1}",
                "answer": str(i + 1),
                "task": "arithmetic",
            }
            for i in range(8)
        ]
    )
    seen = []

    def recorded_task_reward(prompts, completions, **columns):
        rewards = task_reward(prompts=prompts, completions=completions, **columns)
        seen.append((prompts, completions, rewards))
        return rewards

    trainer = make_trainer(
        tokenizer, rows, tmp_path, reward=recorded_task_reward, max_steps=1, teacher_model_kind="live"
    )
    assert trainer.teacher_model is None
    trainer.train()
    assert math.isfinite(trainer.state.log_history[0]["loss"])
    # plain prompts: the reward sees them, and the completions, as plain text (TRL's standard form)
    for prompts, completions, _ in seen:
        assert set(prompts) <= set(rows["prompt"]) and all(isinstance(c, str) for c in completions)
    # the logged reward: the mean, over the step's generation batches, of what the function returned
    means = [sum(rewards) / len(rewards) for _, _, rewards in seen]
    assert trainer.state.log_history[0]["reward"] == pytest.approx(sum(means) / len(means))


def test_v2_training_logs_the_tail_and_the_clip_and_opsd_trains(tokenizer, toy, tmp_path):
    # the v2 default on the parity verifier: some rollouts correct (tail SFT), some not (steered, clipped divergence)
    trainer = make_trainer(tokenizer, toy, tmp_path / "v2", per_device_train_batch_size=8, jsd_token_clip=0.05)
    trainer.train()
    logged = trainer.state.log_history[0]
    assert 0 < logged["steering/frac_distilled_rollouts"] < 1 and logged["positive_tail/frac_rollouts"] > 0
    assert math.isfinite(logged["positive_tail/nll"]) and logged["positive_tail/nll"] > 0
    assert 0 <= logged["divergence/clipped_frac"] <= 1 and logged["divergence"] <= 0.05 + 1e-6
    # the named OPSD configuration trains every rollout and no tail
    opsd = make_trainer(tokenizer, toy, tmp_path / "opsd", opsd=True, max_steps=1)
    before = {k: v.clone() for k, v in opsd.model.state_dict().items()}
    opsd.train()
    logged = opsd.state.log_history[0]
    assert logged["steering/frac_distilled_rollouts"] == 1 and logged["positive_tail/frac_rollouts"] == 0
    assert "steering/direction_norm" not in logged  # alpha = 0: no direction is formed
    assert "divergence" not in logged  # no tail term: the loss is the divergence, logged once as `loss`
    assert any(not torch.equal(v, before[k]) for k, v in opsd.model.state_dict().items())
