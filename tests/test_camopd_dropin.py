"""A `DistillationTrainer` script switched to `CaMOPDTrainer`: same training by default, and bad inputs fail clearly."""

import logging

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from trl import DistillationConfig, DistillationTrainer

from trl_distill.camopd.camopd_config import CaMOPDConfig
from trl_distill.camopd.camopd_trainer import CaMOPDTrainer, resolve_rho
from trl_distill.core.teachers import INIT_KWARGS_WITH_INSTANCE
from trl_distill.lab.world.models import tiny_model
from trl_distill.lab.world.tasks import make_task_splits
from trl_distill.lab.world.tokenizer import build_tokenizer


COMMON = {"bf16": False, "use_cpu": True, "report_to": [], "save_strategy": "no", "max_completion_length": 4}


def swapped_tokenizer(i, j):
    """The lab tokenizer with ids `i` and `j` swapped: the same size, a different tokenizer."""
    vocab = build_tokenizer().get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    tokens[i], tokens[j] = tokens[j], tokens[i]
    backend = Tokenizer(models.BPE(vocab={t: k for k, t in enumerate(tokens)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<|endoftext|>", eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )  # fmt: skip


@pytest.fixture(scope="module")
def prompts():
    return {
        "general": make_task_splits(("reverse",), 8, 2, 2, seed=0)["train"],
        "domain": make_task_splits(("arithmetic",), 8, 2, 2, seed=0)["train"],
    }


@pytest.fixture
def left_tokenizer():
    tokenizer = build_tokenizer()
    tokenizer.padding_side = "left"
    return tokenizer


def test_rho_auto_resolution():
    assert resolve_rho(None, 1) == 1.0 and resolve_rho(None, 0) == 1.0
    assert resolve_rho(None, 2) == 0.5
    assert resolve_rho(0.25, 1) == 0.25 and resolve_rho(1.0, 2) == 1.0
    assert CaMOPDConfig(output_dir="x", **COMMON).rho is None
    assert CaMOPDConfig(output_dir="x", **COMMON).review_every == 3  # the 3:1 schedule


def test_class_swap_with_one_source_trains_like_distillation_trainer(
    tmp_path, left_tokenizer, tiny_student, tiny_teacher, prompts, caplog
):
    kwargs = {**COMMON, "output_dir": str(tmp_path), "per_device_train_batch_size": 2}
    with caplog.at_level(logging.WARNING, logger="trl_distill.camopd.camopd_trainer"):
        ours = CaMOPDTrainer(
            tiny_student, tiny_teacher, CaMOPDConfig(**kwargs), prompts["general"], processing_class=left_tokenizer
        )
    theirs = DistillationTrainer(
        tiny_student, tiny_teacher, DistillationConfig(**kwargs), prompts["general"], processing_class=left_tokenizer
    )
    said = [r.getMessage() for r in caplog.records if "rho = 1" in r.getMessage()]
    assert len(said) == 1 and "trains like trl.DistillationTrainer" in said[0]
    assert ours.rho == 1.0 and ours._pool_local == ours._batch_local == 2  # no extra generation, no selection
    assert list(ours._get_train_sampler()) == list(theirs._get_train_sampler())
    assert ours.get_train_dataloader().batch_size == theirs.get_train_dataloader().batch_size


def test_several_sources_turn_gap_selection_on(tmp_path, left_tokenizer, tiny_student, tiny_teacher, prompts, caplog):
    args = CaMOPDConfig(output_dir=str(tmp_path), **COMMON, per_device_train_batch_size=2)
    with caplog.at_level(logging.WARNING, logger="trl_distill.camopd.camopd_trainer"):
        trainer = CaMOPDTrainer(tiny_student, tiny_teacher, args, prompts, processing_class=left_tokenizer)
    assert trainer.rho == 0.5 and trainer._pool_local == 4
    assert any("rho = 0.5" in r.getMessage() for r in caplog.records)
    explicit = CaMOPDConfig(output_dir=str(tmp_path), **COMMON, per_device_train_batch_size=2, rho=1.0)
    assert CaMOPDTrainer(tiny_student, tiny_teacher, explicit, prompts, processing_class=left_tokenizer).rho == 1.0


def test_init_kwargs_with_a_loaded_teacher_raise_as_trl(tmp_path, left_tokenizer, tiny_student, tiny_teacher, prompts):
    args = CaMOPDConfig(output_dir=str(tmp_path), **COMMON, teacher_model_init_kwargs={"dtype": "bfloat16"})
    with pytest.raises(ValueError, match=INIT_KWARGS_WITH_INSTANCE):
        CaMOPDTrainer(tiny_student, tiny_teacher, args, prompts["general"], processing_class=left_tokenizer)
    with pytest.raises(ValueError, match=INIT_KWARGS_WITH_INSTANCE):
        CaMOPDTrainer(
            tiny_student, {"general": tiny_teacher, "domain": tiny_teacher}, args, prompts,
            processing_class=left_tokenizer,
        )  # fmt: skip


def test_missing_paths_say_they_do_not_exist(tmp_path, left_tokenizer, tiny_teacher, tiny_student, prompts):
    args = CaMOPDConfig(output_dir=str(tmp_path), **COMMON)
    with pytest.raises(FileNotFoundError, match=r"model path .*no-student.* does not exist"):
        CaMOPDTrainer(str(tmp_path / "no-student"), tiny_teacher, args, prompts["general"])
    with pytest.raises(FileNotFoundError, match=r"teacher 'general' path .*no-teacher.* does not exist"):
        CaMOPDTrainer(
            tiny_student, {"general": str(tmp_path / "no-teacher"), "domain": tiny_teacher}, args, prompts,
            processing_class=left_tokenizer,
        )  # fmt: skip


def test_tokenizer_larger_than_the_embedding_is_refused(tmp_path, tiny_student, tiny_teacher, prompts):
    tokenizer = build_tokenizer()
    tokenizer.padding_side = "left"
    tokenizer.add_tokens(["<tool>", "</tool>"])
    args = CaMOPDConfig(output_dir=str(tmp_path), **COMMON)
    with pytest.raises(ValueError, match=r"tokenizer has 261 tokens but the student .* only 259 embedding rows"):
        CaMOPDTrainer(tiny_student, tiny_teacher, args, prompts["general"], processing_class=tokenizer)


def test_path_teachers_tokenizer_compared_and_loaded_once(tmp_path, left_tokenizer, tiny_student, prompts):
    saved = tiny_model(left_tokenizer, "xs", "llama", seed=1)
    saved.save_pretrained(tmp_path / "same")
    left_tokenizer.save_pretrained(tmp_path / "same")
    saved.save_pretrained(tmp_path / "other")
    swapped_tokenizer(100, 101).save_pretrained(tmp_path / "other")
    args = CaMOPDConfig(output_dir=str(tmp_path), **COMMON, schedule="mixed")
    same = str(tmp_path / "same")
    trainer = CaMOPDTrainer(
        tiny_student, {"general": same, "domain": same}, args, prompts, processing_class=left_tokenizer
    )
    assert trainer.teachers["general"] is trainer.teachers["domain"]  # one path serving two names: loaded once
    with pytest.raises(ValueError, match=r"teacher 'domain' differs .* first id 100: student"):
        CaMOPDTrainer(
            tiny_student, {"general": same, "domain": str(tmp_path / "other")}, args, prompts,
            processing_class=left_tokenizer,
        )  # fmt: skip
