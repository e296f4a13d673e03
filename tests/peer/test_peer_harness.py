"""The harness itself: it finds the pinned copy of TRL's tests, or skips with the reason."""

from pathlib import Path


COPY = Path(__file__).parent / "trl_tests"


def test_pinned_copy_is_present():
    assert (COPY / "test_sft_trainer.py").exists()
