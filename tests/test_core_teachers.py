"""The shared teacher loader: paths, init kwargs, frozen copies, and the vocabulary/tokenizer checks."""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from trl import DistillationConfig

from trl_distill.core.data import check_local_path
from trl_distill.core.teachers import (
    INIT_KWARGS_WITH_INSTANCE,
    check_tokenizer_fits,
    check_tokenizers_match,
    check_vocab_size,
    load_teacher,
)
from trl_distill.lab.world.models import tiny_model
from trl_distill.lab.world.tokenizer import build_tokenizer


def byte_tokenizer(swap=None, special_turn=True):
    """The lab tokenizer's layout (3 specials + 256 bytes), optionally with two ids swapped or `<|im_start|>` not
    marked special: same size, different tokenizer."""
    vocab = build_tokenizer().get_vocab()
    tokens = sorted(vocab, key=vocab.get)  # ids 0..258 in order
    if swap is not None:
        i, j = swap
        tokens[i], tokens[j] = tokens[j], tokens[i]
    backend = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    extra = {"additional_special_tokens": ["<|im_start|>"]} if special_turn else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<|endoftext|>", eos_token="<|im_end|>", **extra
    )


@pytest.fixture
def args(tmp_path):
    return DistillationConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[])


def test_missing_path_says_it_does_not_exist(tmp_path):
    for path in (str(tmp_path / "no-such-model"), "./checkpoints/run-1/final", "a/b/c"):
        with pytest.raises(FileNotFoundError, match=r"teacher 'general' path .* does not exist"):
            check_local_path(path, "teacher 'general'")
    check_local_path(str(tmp_path))  # an existing directory passes
    check_local_path("Qwen/Qwen2.5-0.5B")  # a valid hub id is left to the hub


def test_tokenizer_comparison_names_the_first_mismatching_tokens():
    student = byte_tokenizer()
    check_tokenizers_match(student, byte_tokenizer(), "general")  # identical: no error
    check_tokenizers_match(build_tokenizer(), student, "general")  # the lab's own tokenizer has this layout
    with pytest.raises(ValueError, match=r"teacher 'domain' differs .* 2 token ids differ .* first id 40: student"):
        check_tokenizers_match(student, byte_tokenizer(swap=(40, 41)), "domain")
    with pytest.raises(ValueError, match=r"different special tokens: .* only for the student \['<\|im_start\|>'\]"):
        check_tokenizers_match(student, byte_tokenizer(special_turn=False), "domain")


def test_vocab_size_and_tokenizer_fit(tokenizer):
    student = tiny_model(tokenizer, "xs", "qwen2", seed=0)
    wider = tiny_model(tokenizer, "xs", "llama", seed=1, vocab_size=len(tokenizer) + 5)
    with pytest.raises(ValueError, match=rf"student model has vocab_size {len(tokenizer)} but the teacher model has"):
        check_vocab_size(student, wider)
    larger = build_tokenizer()
    larger.add_tokens(["<a>", "<b>"])
    with pytest.raises(
        ValueError, match=rf"has {len(tokenizer) + 2} tokens but the student .* only {len(tokenizer)} embedding rows"
    ):
        check_tokenizer_fits(larger, student, "student")
    check_tokenizer_fits(tokenizer, wider)  # fewer tokens than rows is fine (padded vocabularies)


def test_load_teacher_from_path_instance_and_copy(tmp_path, tokenizer, args):
    student = tiny_model(tokenizer, "xs", "qwen2", seed=0)
    saved = tiny_model(tokenizer, "xs", "llama", seed=1)
    saved.save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    teacher = load_teacher(
        str(tmp_path / "teacher"), args, init_kwargs={"dtype": "bfloat16"}, student=student, tokenizer=tokenizer
    )
    assert teacher.dtype == torch.bfloat16 and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    torch.testing.assert_close(teacher.lm_head.weight.float(), saved.lm_head.weight.bfloat16().float())

    with pytest.raises(ValueError, match=INIT_KWARGS_WITH_INSTANCE):
        load_teacher(saved, args, init_kwargs={"dtype": "bfloat16"})
    assert load_teacher(saved, args) is saved  # an instance is used as given

    frozen = load_teacher(student, args, copy=True, student=student)  # e.g. OGLS-SD's initial teacher
    assert frozen is not student and not any(p.requires_grad for p in frozen.parameters())
    assert all(p.requires_grad for p in student.parameters())
    torch.testing.assert_close(frozen.lm_head.weight, student.lm_head.weight)

    byte_tokenizer(swap=(10, 11)).save_pretrained(tmp_path / "teacher")
    with pytest.raises(ValueError, match="tokenizer of teacher 'medical' differs"):
        load_teacher(str(tmp_path / "teacher"), args, name="medical", student=student, tokenizer=tokenizer)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_teacher(str(tmp_path / "missing"), args)


def test_a_teacher_saved_without_its_tokenizer_warns_that_the_check_was_skipped(tmp_path, tokenizer, args, caplog):
    student = tiny_model(tokenizer, "xs", "qwen2", seed=0)
    path = str(tmp_path / "bare-teacher")
    tiny_model(tokenizer, "xs", "llama", seed=1).save_pretrained(path)  # weights only, no tokenizer files
    with caplog.at_level("WARNING", logger="trl_distill.core.teachers"):
        load_teacher(path, args, name="general", student=student, tokenizer=tokenizer)
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "tokenizer" in r.getMessage()]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert f"Teacher 'general' ('{path}') has no loadable tokenizer" in message and "was skipped" in message


def test_a_tokenizer_mismatch_names_both_tokenizers(tmp_path, tokenizer):
    teacher = byte_tokenizer(swap=(40, 41))
    teacher.save_pretrained(tmp_path / "teacher-tokenizer")
    teacher = PreTrainedTokenizerFast.from_pretrained(tmp_path / "teacher-tokenizer")
    tokenizer.save_pretrained(tmp_path / "student-tokenizer")
    student = PreTrainedTokenizerFast.from_pretrained(tmp_path / "student-tokenizer")
    with pytest.raises(
        ValueError, match=r"student tokenizer '.*student-tokenizer' \(259 tokens\), teacher tokenizer '.*teacher-tok"
    ):
        check_tokenizers_match(student, teacher, "domain")
