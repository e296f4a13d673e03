"""CaMOPD: routing, the alternating schedule, gap-based selection, and equivalence with DistillationTrainer."""

import math

import pytest
import torch
from trl import DistillationConfig, DistillationTrainer
from trl.trainer.utils import pad

from trl_distill.camopd.camopd_config import CaMOPDConfig
from trl_distill.camopd.camopd_trainer import CaMOPDTrainer, gradient_coherence, route_sources
from trl_distill.camopd.gap import gap, pool_size, select_by_gap
from trl_distill.camopd.schedule import AlternatingSourceSampler, alternating_pattern
from trl_distill.core.divergence import generalized_jsd_from_logits
from trl_distill.lab.world.models import tiny_model
from trl_distill.lab.world.tasks import make_task_splits
from trl_distill.lab.world.tokenizer import build_tokenizer


COMMON = {
    "bf16": False,
    "use_cpu": True,
    "gradient_checkpointing": False,
    "report_to": [],
    "save_strategy": "no",
    "logging_steps": 1,
    "max_completion_length": 6,
    "learning_rate": 1e-3,
}


@pytest.fixture(scope="module")
def sources():
    general = make_task_splits(("reverse", "sort", "count", "copy"), 24, 4, 4, seed=0)["train"]
    domain = make_task_splits(("arithmetic",), 24, 4, 4, seed=0)["train"]
    return {"general": general, "domain": domain}


@pytest.fixture
def left_tokenizer():
    """A fresh tokenizer padding on the left, as the trainers generate (the session one stays untouched)."""
    tokenizer = build_tokenizer()
    tokenizer.padding_side = "left"
    return tokenizer


def camopd_args(tmp_path, **kwargs):
    return CaMOPDConfig(output_dir=str(tmp_path), **{**COMMON, **kwargs})


def make_batch(tokenizer, prompts, completion_lengths, seed=0):
    """A generation batch as `DistillationTrainer._generate_and_score_completions` returns it."""
    generator = torch.Generator().manual_seed(seed)
    prompt_ids = [
        torch.tensor(
            tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        )
        for p in prompts
    ]
    completion_ids = [torch.randint(10, len(tokenizer), (n,), generator=generator) for n in completion_lengths]
    batch = {
        "prompt_ids": pad(prompt_ids, tokenizer.pad_token_id, padding_side="left"),
        "prompt_mask": pad([torch.ones_like(ids) for ids in prompt_ids], 0, padding_side="left"),
        "completion_ids": pad(completion_ids, tokenizer.pad_token_id),
        "completion_mask": pad([torch.ones_like(ids) for ids in completion_ids], 0),
    }
    batch["num_items_in_batch"] = batch["completion_mask"].sum()
    return batch


def explicit_loss(batch, student, teachers_by_row, beta=1.0):
    """Σ_rows Σ_t JSD_β(row's teacher, student) / tokens, from full logits (no chunking, no hidden-state path)."""
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    width_p, total = batch["prompt_ids"].size(1), 0.0
    with torch.no_grad():
        for i, teacher in enumerate(teachers_by_row):
            s = student(input_ids=ids[i : i + 1], attention_mask=mask[i : i + 1]).logits[0, width_p - 1 : -1]
            t = teacher(input_ids=ids[i : i + 1], attention_mask=mask[i : i + 1]).logits[0, width_p - 1 : -1]
            per_token = generalized_jsd_from_logits(s, t, beta)
            total += (per_token * batch["completion_mask"][i]).sum().item()
    return total / batch["completion_mask"].sum().item()


def brute_force_gap(batch, row, student, teacher):
    """Mean |log T(y_t) − log S(y_t)| over row `row`'s completion, from full logits of the unpadded sequence."""
    p = batch["prompt_ids"][row][batch["prompt_mask"][row] == 1]
    c = batch["completion_ids"][row][batch["completion_mask"][row] == 1]
    ids = torch.cat([p, c]).unsqueeze(0)
    with torch.no_grad():
        lp = [m(input_ids=ids).logits[0, len(p) - 1 : -1].log_softmax(-1) for m in (student, teacher)]
    picked = [x.gather(-1, c.unsqueeze(-1)).squeeze(-1) for x in lp]
    return (picked[1] - picked[0]).abs().mean().item()


# ------------------------------------------------------------------------------------------------- pure functions
def test_gap_and_selection_by_hand():
    student = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, -0.5, -0.5]])
    teacher = torch.tensor([[-1.5, -1.0, 0.0], [-0.5, -2.5, -9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    # row 0: (|−1.5+1| + |−1+2|)/2 = 0.75; row 1: (0 + 2)/2 = 1.0 (the masked −9 is ignored)
    assert gap(student, teacher, mask).tolist() == pytest.approx([0.75, 1.0])
    gaps = torch.tensor([0.3, 0.9, 0.1, 0.9, 0.5, 0.2])
    assert select_by_gap(gaps, 3).tolist() == [1, 3, 4]  # the three largest, original order
    assert select_by_gap(gaps, 1).tolist() == [1]  # tie between 1 and 3: the earlier sample
    assert pool_size(8, 0.5) == 16 and pool_size(6, 0.3) == 20 and pool_size(4, 1.0) == 4 and pool_size(3, 0.7) == 5
    with pytest.raises(ValueError, match="num_keep"):
        select_by_gap(gaps, 7)


def test_gradient_coherence_is_cosine():
    a, b = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([-2.0, 1.0, 0.0])
    expected = (1 * -2 + 0 + 0) / (math.sqrt(5) * math.sqrt(5))
    assert gradient_coherence(a, b).item() == pytest.approx(expected)


def test_alternating_sampler_pattern():
    ranges = {"general": range(0, 10), "domain": range(10, 13)}
    sampler = AlternatingSourceSampler(
        ranges, alternating_pattern(3, "general", "domain"), group_size=2, repeat_count=2
    )
    indices = list(sampler)
    assert len(indices) == len(sampler)
    groups = [indices[i : i + 2] for i in range(0, len(indices), 4)]  # one group per optimizer step
    for i in range(0, len(indices), 4):  # each group repeated for every accumulation micro-batch
        assert indices[i : i + 2] == indices[i + 2 : i + 4]
    names = ["domain" if all(j >= 10 for j in g) else "general" if all(j < 10 for j in g) else "mixed" for g in groups]
    assert names == (["general"] * 3 + ["domain"]) * sampler.num_cycles
    assert sampler.num_cycles == 2  # ceil(10 general prompts / (3 steps × 2 per step))
    assert sorted(j for g in groups[:3] for j in g) == sorted(set(j for g in groups[:3] for j in g))  # no repeats


def test_routing_and_config_errors(tmp_path):
    assert route_sources(["general", "domain"], ["general", "domain"]) == {"general": "general", "domain": "domain"}
    assert route_sources(["a", "b"], ["t"]) == {"a": "t", "b": "t"}
    assert route_sources(["a"], ["t", "u"], {"a": "u"}) == {"a": "u"}
    with pytest.raises(ValueError, match="source 'extra' has no teacher"):
        route_sources(["general", "extra"], ["general", "domain"])
    with pytest.raises(ValueError, match=r"names teachers \['nobody'\]"):
        route_sources(["general"], ["general"], {"general": "nobody"})
    with pytest.raises(ValueError, match=r"names prompt sources \['medical'\]"):
        route_sources(["general"], ["general"], {"medical": "general"})
    for rho in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="rho must lie in \\(0, 1\\]"):
            camopd_args(tmp_path, rho=rho)
    with pytest.raises(ValueError, match="schedule must be one of"):
        camopd_args(tmp_path, schedule="round-robin")
    with pytest.raises(ValueError, match="review_every"):
        camopd_args(tmp_path, review_every=0)
    parsed = camopd_args(tmp_path, source_teachers='{"general": "g", "domain": "d"}')
    assert parsed.source_teachers == {"general": "g", "domain": "d"}


# ---------------------------------------------------------------------------------------------- trainer behaviour
def test_init_refuses_vocabulary_mismatch_and_unknown_names(tmp_path, tokenizer, tiny_student, sources):
    general = tiny_model(tokenizer, "xs", "llama", seed=1)
    domain = tiny_model(tokenizer, "xs", "qwen2", seed=2)
    domain.resize_token_embeddings(len(tokenizer) + 8)
    # TRL's wording (its tests match `vocab_size`), naming the teacher
    with pytest.raises(
        ValueError,
        match=rf"student model has vocab_size {len(tokenizer)} but the teacher model 'domain' has vocab_size "
        rf"{len(tokenizer) + 8}",
    ):
        CaMOPDTrainer(
            tiny_student, {"general": general, "domain": domain}, camopd_args(tmp_path), sources,
            processing_class=tokenizer,
        )  # fmt: skip
    with pytest.raises(ValueError, match="source 'medical' has no teacher"):
        CaMOPDTrainer(
            tiny_student, {"general": general, "domain": general}, camopd_args(tmp_path, schedule="mixed"),
            {"general": sources["general"], "medical": sources["domain"]}, processing_class=tokenizer,
        )  # fmt: skip
    with pytest.raises(ValueError, match="alternating schedule needs exactly the prompt sources"):
        CaMOPDTrainer(
            tiny_student, general, camopd_args(tmp_path), {"a": sources["general"], "b": sources["domain"]},
            processing_class=tokenizer,
        )  # fmt: skip


def test_one_source_loss_equals_distillation_trainer(tmp_path, left_tokenizer, tiny_student, tiny_teacher, sources):
    dataset = sources["general"]
    kwargs = {**COMMON, "output_dir": str(tmp_path), "per_device_train_batch_size": 4}
    ours = CaMOPDTrainer(
        tiny_student, tiny_teacher, CaMOPDConfig(**kwargs, rho=1.0, schedule="mixed"), dataset,
        processing_class=left_tokenizer,
    )  # fmt: skip
    theirs = DistillationTrainer(
        tiny_student, tiny_teacher, DistillationConfig(**kwargs), dataset, processing_class=left_tokenizer
    )
    batch = make_batch(left_tokenizer, dataset["prompt"][:4], [5, 2, 6, 3])
    ours.model.train()
    loss_theirs = theirs.compute_loss(theirs.model, dict(batch))
    loss_ours = ours.compute_loss(ours.model, {**batch, "sources": ["default"] * 4})
    assert loss_ours.item() == pytest.approx(loss_theirs.item(), rel=1e-5)
    assert loss_ours.item() == pytest.approx(explicit_loss(batch, tiny_student, [tiny_teacher] * 4), rel=1e-4)
    # one teacher: the loss is the divergence, so no `divergence/<teacher>` repeats it
    assert not [key for key in ours._metrics["train"] if key.startswith("divergence")]
    # same sampler, same order: a drop-in replacement reads the data like DistillationTrainer
    assert list(ours._get_train_sampler()) == list(theirs._get_train_sampler())


def test_mixed_batch_routes_each_sample_to_its_teacher(tmp_path, left_tokenizer, tiny_student, sources):
    teachers = {
        "general": tiny_model(left_tokenizer, "xs", "llama", seed=1),
        "domain": tiny_model(left_tokenizer, "xs", "qwen2", seed=2),
    }
    with torch.no_grad():
        teachers["domain"].lm_head.weight.mul_(20)  # a sharp teacher, far from the near-uniform random ones
    trainer = CaMOPDTrainer(
        tiny_student, teachers, camopd_args(tmp_path, schedule="mixed", rho=1.0, beta=0.5), sources,
        processing_class=left_tokenizer,
    )  # fmt: skip
    prompts = [sources["general"]["prompt"][0], sources["domain"]["prompt"][0], sources["general"]["prompt"][1]]
    batch = make_batch(left_tokenizer, prompts, [4, 6, 3], seed=1)
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, {**batch, "sources": ["general", "domain", "general"]})
    rows = [teachers["general"], teachers["domain"], teachers["general"]]
    assert loss.item() == pytest.approx(explicit_loss(batch, tiny_student, rows, beta=0.5), rel=1e-4)
    wrong = explicit_loss(batch, tiny_student, [teachers["general"]] * 3, beta=0.5)
    assert abs(loss.item() - wrong) > 0.1 * wrong  # the routing matters on this batch
    # each teacher's divergence, logged from what `_compute_loss` returns: the token mean over that teacher's rows
    for name, rows in (("general", [0, 2]), ("domain", [1])):
        sub = {k: v[rows] for k, v in batch.items() if k != "num_items_in_batch"}
        expected = explicit_loss(sub, tiny_student, [teachers[name]] * len(rows), beta=0.5)
        assert trainer._metrics["train"][f"divergence/{name}"] == [pytest.approx(expected, rel=1e-4)]


def test_selection_keeps_largest_gap_samples(tmp_path, left_tokenizer, tiny_student, sources):
    teachers = {
        "general": tiny_model(left_tokenizer, "xs", "llama", seed=1),
        "domain": tiny_model(left_tokenizer, "xs", "qwen2", seed=2),
    }
    args = camopd_args(tmp_path, schedule="mixed", rho=0.5, per_device_train_batch_size=3)
    trainer = CaMOPDTrainer(tiny_student, teachers, args, sources, processing_class=left_tokenizer)
    assert trainer._pool_local == 6
    prompts = sources["general"]["prompt"][:3] + sources["domain"]["prompt"][:3]
    names = ["general"] * 3 + ["domain"] * 3
    batch = {**make_batch(left_tokenizer, prompts, [3, 6, 2, 5, 4, 6], seed=2), "sources": names}
    gaps = [brute_force_gap(batch, i, tiny_student, teachers[n]) for i, n in enumerate(names)]
    expected = sorted(sorted(range(6), key=lambda i: -gaps[i])[:3])

    trainer.model.train()
    kept = trainer._select_by_gap(dict(batch), 3)
    kept_rows = [
        next(i for i in range(6) if torch.equal(batch["completion_ids"][i][: kept["completion_ids"].size(1)], row))
        for row in kept["completion_ids"]
    ]
    assert kept_rows == expected
    assert kept["sources"] == [names[i] for i in expected]
    assert kept["num_items_in_batch"].item() == batch["completion_mask"][expected].sum().item()
    assert kept["teacher_hidden_states"].shape[:2] == kept["completion_ids"].shape
    metrics = trainer._metrics["train"]
    assert metrics["selection/kept_fraction"] == [0.5]
    assert metrics["gap/general"][0] == pytest.approx(sum(gaps[:3]) / 3, rel=1e-4)
    assert metrics["gap/domain"][0] == pytest.approx(sum(gaps[3:]) / 3, rel=1e-4)
    # the loss on the kept rows reuses the cached teacher states and equals the full-logit computation
    loss = trainer.compute_loss(trainer.model, kept)
    reference = explicit_loss(
        {k: batch[k][expected] for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")},
        tiny_student,
        [teachers[names[i]] for i in expected],
    )
    assert loss.item() == pytest.approx(reference, rel=1e-4)


def test_alternating_training_on_toy_world(tmp_path, left_tokenizer, tiny_student, sources):
    teachers = {
        "general": tiny_model(left_tokenizer, "xs", "llama", seed=1),
        "domain": tiny_model(left_tokenizer, "xs", "qwen2", seed=2),
    }
    args = camopd_args(
        tmp_path, review_every=2, rho=0.5, per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=3,
        gradient_coherence_every=2,
    )  # fmt: skip
    seen = []

    class Recording(CaMOPDTrainer):
        def compute_loss(self, model, inputs, *a, **k):
            seen.append((self.state.global_step, tuple(inputs["sources"])))
            return super().compute_loss(model, inputs, *a, **k)

    before = [p.detach().clone() for p in tiny_student.parameters()]
    trainer = Recording(tiny_student, teachers, args, sources, processing_class=left_tokenizer)
    trainer.train()

    # every optimizer step, all its accumulation micro-batches included, draws from one source, K:1 = 2:1
    by_step = {}
    for step, names in seen:
        by_step.setdefault(step, []).append(names)
    assert [len(v) for v in by_step.values()] == [2, 2, 2]
    assert [{n for micro in v for n in micro} for v in by_step.values()] == [{"general"}, {"general"}, {"domain"}]
    assert all(len(micro) == 2 for v in by_step.values() for micro in v)  # B = 2 kept of the 4 generated per step

    logs = trainer.state.log_history
    assert all(math.isfinite(log["loss"]) for log in logs if "loss" in log)
    assert [log["schedule/domain"] for log in logs if "loss" in log] == [0.0, 0.0, 1.0]
    assert all(log["selection/kept_fraction"] == 0.5 for log in logs if "loss" in log)
    assert "divergence/general" in logs[0] and "divergence/domain" in logs[2]
    # evaluation follows no schedule: only training logs `schedule/*`
    rows = sources["general"].select(range(2))
    trainer.evaluate(rows.add_column("prompt_source", ["general"] * 2))
    assert "eval_loss" in trainer.state.log_history[-1]
    assert not [key for key in trainer.state.log_history[-1] if "schedule" in key]
    assert -1.0 <= logs[2]["grad_coherence"] <= 1.0
    moved = sum((p.detach() - b).abs().sum().item() for p, b in zip(tiny_student.parameters(), before))
    assert moved > 0


def test_the_same_dataset_as_general_and_domain_source_is_refused(tmp_path, tokenizer, tiny_student, sources):
    general = tiny_model(tokenizer, "xs", "llama", seed=1)
    same = {"general": sources["domain"], "domain": sources["domain"]}
    copied = {"general": sources["domain"].map(lambda row: row), "domain": sources["domain"]}  # a new fingerprint
    for train_dataset in (same, copied):
        with pytest.raises(
            ValueError, match=r"`train_dataset\['general'\]` and `train_dataset\['domain'\]` are the same"
        ):
            CaMOPDTrainer(
                tiny_student, {"general": general, "domain": general}, camopd_args(tmp_path), train_dataset,
                processing_class=tokenizer,
            )  # fmt: skip


def test_one_source_smaller_than_a_generation_batch_is_refused(tmp_path, left_tokenizer, tiny_student, tiny_teacher,
                                                                sources):  # fmt: skip
    # rho = 0.5 generates 2 × (4 per device × 2 accumulation steps) = 16 prompts per generation batch
    args = camopd_args(tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=2, rho=0.5)
    with pytest.raises(ValueError, match=r"train_dataset has 12 prompts, but one generation batch needs 16"):
        CaMOPDTrainer(
            tiny_student, tiny_teacher, args, sources["general"].select(range(12)), processing_class=left_tokenizer
        )


def test_the_camopd_command_refuses_one_file_as_general_and_domain_prompts(tmp_path):
    from trl import ModelConfig

    from trl_distill.scripts.camopd import CaMOPDScriptArguments, load_models_and_prompts

    (tmp_path / "student").mkdir()
    (tmp_path / "teacher").mkdir()
    prompts = str(tmp_path / "prompts.jsonl")
    script_args = CaMOPDScriptArguments(
        general_teacher=str(tmp_path / "teacher"),
        general_prompts=prompts,
        domain_prompts=f"{tmp_path}/./prompts.jsonl",
    )
    with pytest.raises(ValueError, match=r"--general_prompts and --domain_prompts are both"):
        load_models_and_prompts(script_args, ModelConfig(model_name_or_path=str(tmp_path / "student")))
