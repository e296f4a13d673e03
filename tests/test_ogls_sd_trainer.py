"""OGLSSDTrainer on the tiny world: the loss against a brute-force OPSD/OGLS-SD, teachers, errors, training."""

import copy
import math

import pytest
import torch

from trl_distill.lab.world.models import tiny_model
from trl_distill.ogls_sd.ogls_sd_config import OGLSSDConfig
from trl_distill.ogls_sd.ogls_sd_trainer import OGLSSDTrainer


TEMPLATE = "{prompt}\n\nHere is a reference solution to this problem:\n{privileged_context}"


def parity_reward(completions, **kwargs):
    """1.0 when the character codes of the completion sum to an even number: a random model passes about half the time."""
    return [float(sum(map(ord, c[0]["content"])) % 2 == 0) for c in completions]


@pytest.fixture(scope="module")
def toy(arithmetic):
    """Arithmetic rows whose privileged context is the reference solution (the row's completion text)."""
    return arithmetic["train"].map(lambda row: {"privileged_context": row["completion"][0]["content"]})


def make_trainer(tokenizer, dataset, tmp_path, model=None, reward=parity_reward, peft_config=None, **overrides):
    settings = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=2,
        learning_rate=1e-2,
        report_to=[],
        bf16=False,
        use_cpu=True,
        logging_steps=1,
        gradient_checkpointing=False,
        save_strategy="no",
        seed=0,
    )
    settings.update(overrides)
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.padding_side = "left"
    model = tiny_model(tokenizer, "xs", seed=0) if model is None else model
    return OGLSSDTrainer(
        model,
        reward_funcs=reward,
        args=OGLSSDConfig(**settings),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )


def brute_force_loss(trainer, rows, output, alpha, beta=0.5):
    """OPSD / pooled OGLS-SD from scratch, in float64, one unpadded sequence at a time, explicit vocabulary sums."""
    tok, student, teacher = trainer.processing_class, trainer.model, trainer.teacher_model
    G = trainer.args.num_generations
    completions, teacher_logits, student_logits = [], [], []
    for row, ids, mask in zip(rows, output["completion_ids"], output["completion_mask"]):
        completion = ids[mask.bool()].tolist()
        completions.append(tok.decode(completion, skip_special_tokens=True))
        question = row["prompt"][0]["content"]
        teacher_prompt = [
            {"role": "user", "content": TEMPLATE.format(prompt=question, privileged_context=row["privileged_context"])}
        ]
        for model, prompt, out in (
            (teacher, teacher_prompt, teacher_logits),
            (student, row["prompt"], student_logits),
        ):
            prompt_ids = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
            full = torch.tensor([list(prompt_ids) + completion])
            with torch.no_grad():
                logits = model(input_ids=full).logits[0].double()
            out.append(logits[len(prompt_ids) - 1 : full.shape[1] - 1])  # the positions predicting the completion
    success = [r >= 1.0 for r in parity_reward([[{"content": c}] for c in completions])]
    total, count = 0.0, 0
    for g in range(len(rows) // G):
        members = range(g * G, (g + 1) * G)
        good = [teacher_logits[i].mean(0) for i in members if success[i]]
        bad = [teacher_logits[i].mean(0) for i in members if not success[i]]
        d = sum(good) / len(good) - sum(bad) / len(bad) if good and bad else 0.0
        for i in members:
            zt, zs = teacher_logits[i] + alpha * d, student_logits[i]
            pt, ps = zt.softmax(-1), zs.softmax(-1)
            m = beta * pt + (1 - beta) * ps
            jsd = beta * (pt * (pt / m).log()).sum(-1) + (1 - beta) * (ps * (ps / m).log()).sum(-1)
            total, count = total + jsd.sum().item(), count + jsd.numel()
    return total / count, success


@pytest.mark.parametrize("alpha", [0.0, 0.7])
def test_loss_equals_brute_force_opsd_and_pooled_steering(tokenizer, toy, tmp_path, alpha):
    trainer = make_trainer(tokenizer, toy, tmp_path, steering_alpha=alpha, per_device_train_batch_size=8)
    with torch.no_grad():  # the student moves away from its initial copy, so student and teacher weights differ
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    rows = [toy[i] for i in (0, 0, 0, 0, 1, 1, 1, 1)]
    torch.manual_seed(3)
    output = trainer._generate_and_score_completions(rows)
    loss = trainer.compute_loss(trainer.model, output)
    expected, success = brute_force_loss(trainer, rows, output, alpha)
    assert 0 < sum(success) < len(success)  # the parity verifier gives both outcomes, so alpha=0.7 really steers
    assert loss.item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize(
    "reward, message",
    [
        (lambda completions, **kw: [1.0], r"returned 1 values for 8 completions"),
        (lambda completions, **kw: [math.nan] * len(completions), r"returned NaN for completion 0"),
        (lambda completions, **kw: [None] * len(completions), r"returned None for all 8 completions"),
    ],
    ids=["wrong-count", "nan", "all-none"],
)
def test_bad_reward_functions_get_clear_errors(tokenizer, toy, tmp_path, reward, message):
    trainer = make_trainer(tokenizer, toy, tmp_path, reward=reward, per_device_train_batch_size=8)
    rows = [toy[i] for i in (0, 0, 0, 0, 1, 1, 1, 1)]
    with pytest.raises(ValueError, match=message):
        trainer._generate_and_score_completions(rows)


def test_missing_privileged_context_is_rejected_before_training(tokenizer, arithmetic, tmp_path):
    with pytest.raises(ValueError, match=r"no `privileged_context` column"):
        make_trainer(tokenizer, arithmetic["train"], tmp_path)


def test_config_rejects_groups_split_across_micro_batches(tmp_path):
    with pytest.raises(ValueError, match="not a multiple of num_generations=3"):
        OGLSSDConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=3, use_cpu=True)
    with pytest.raises(ValueError, match=r"\{privileged_context\}"):
        OGLSSDConfig(output_dir=str(tmp_path), teacher_prompt_template="{prompt}", use_cpu=True)


def test_softcapped_model_falls_back_to_explicit_logits(tokenizer, toy, tmp_path):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        final_logit_softcapping=0.3,  # small enough that tanh bends the logits: hidden-space steering is not exact
        tie_word_embeddings=False,
    )
    with pytest.warns(UserWarning, match="softcapping"):
        trainer = make_trainer(
            tokenizer,
            toy,
            tmp_path,
            model=Gemma2ForCausalLM(config),
            steering_alpha=0.7,
            per_device_train_batch_size=8,
        )
    rows = [toy[i] for i in (0, 0, 0, 0, 1, 1, 1, 1)]
    torch.manual_seed(3)
    output = trainer._generate_and_score_completions(rows)
    assert "teacher_logits" in output and "teacher_hidden" not in output
    loss = trainer.compute_loss(trainer.model, output)
    expected, success = brute_force_loss(trainer, rows, output, alpha=0.7)
    assert 0 < sum(success) < len(success)
    assert loss.item() == pytest.approx(expected, rel=1e-4, abs=1e-6)
