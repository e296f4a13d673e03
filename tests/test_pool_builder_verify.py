"""Verifiers of the pool builder: names, import paths, callables, edge cases, and the optional math-verify."""

import math

import numpy as np
import pytest

from trl_distill.core import verifiers as verify
from trl_distill.core.rewards import InvalidRewardError, call_reward_funcs
from trl_distill.core.verifiers import is_math_verify_available, resolve_verifier, verifier_name
from trl_distill.lab.world import tasks  # noqa: F401  (registers the `lab_task` verifier)


def run_verifier(fn, prompts, completions, columns):
    """One function's rewards through the shared adapter, `None` where it did not score."""
    rewards = call_reward_funcs([fn], prompts, completions, columns)[:, 0].tolist()
    return [None if math.isnan(r) else r for r in rewards]


def check(name, completions, answers, **kwargs):
    fn = resolve_verifier(name, **kwargs)
    return run_verifier(fn, ["q"] * len(completions), completions, {"answer": answers})


def test_exact_match_edge_cases():
    completions = [
        "work\nAnswer: abc",
        "Answer:   abc  ",  # surrounding spaces do not count
        "Answer: abd",
        "the answer is abc",  # no final answer line: malformed, scored 0
        "Answer: xyz\nthinking again\nAnswer: abc",  # the last answer line counts
        [{"role": "assistant", "content": "Answer: abc"}],  # conversational completion
        "Answer: abc",
        "",
    ]
    answers = ["abc"] * 6 + [None, "abc"]  # no reference: not applicable
    assert check("exact_match", completions, answers) == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, None, 0.0]


def test_numeric_tolerance():
    completions = ["Answer: 0.30000000000000004", "Answer: 1,000", "Answer: 12.5", "Answer: twelve", "Answer: -3"]
    answers = ["0.3", "1000", "12", "12", "-3.0"]
    assert check("numeric", completions, answers) == [1.0, 1.0, 0.0, 0.0, 1.0]
    # 12.5 vs 12 is 0.5 apart: relative 0.04 of 12.5, so inside tolerance 0.05 and outside 0.01
    assert check("numeric", completions[2:3], answers[2:3], tolerance=0.05) == [1.0]
    assert check("numeric", completions[2:3], answers[2:3], tolerance=0.01) == [0.0]
    # an absolute tolerance rescues answers near zero
    assert check("numeric", ["Answer: 0.0004"], ["0"], tolerance=1e-3) == [1.0]


def test_lab_task_verifier_dispatches_on_the_task_column():
    fn = resolve_verifier("lab_task")
    rewards = run_verifier(
        fn,
        ["q"] * 3,
        ["Answer: 7.0", "Answer: 7.0", "Answer: cba"],
        {"answer": ["7", "7", "cba"], "task": ["arithmetic", "copy", "reverse"]},
    )
    assert rewards == [1.0, 0.0, 1.0]  # numeric for arithmetic, exact for copy (7.0 != 7) and reverse


def test_import_paths_callables_and_names():
    fn = resolve_verifier("trl_distill.core.verifiers:exact_match_reward")
    assert fn(completions=["Answer: 1"], answer=["1"]) == [1.0]
    assert verifier_name(fn) == "trl_distill.core.verifiers.exact_match_reward"
    assert verifier_name(resolve_verifier("numeric", tolerance=0.1)) == "trl_distill.core.verifiers.numeric_reward"
    assert verifier_name("exact_match") == "exact_match"

    def lenient(prompts, completions, **kwargs):
        return [True, False]

    assert resolve_verifier(lenient) is lenient
    assert run_verifier(lenient, ["a", "b"], ["x", "y"], {}) == [1.0, 0.0]  # booleans become floats
    assert run_verifier(lambda **kw: [np.float32(0.5)], ["a"], ["x"], {}) == [0.5]


def test_bad_verifiers_are_named_in_the_error():
    with pytest.raises(ValueError, match=r"Unknown verifier 'exact'.*'exact_match'"):
        resolve_verifier("exact")
    with pytest.raises(ValueError, match="Cannot import verifier 'trl_distill.core.verifiers:nope'"):
        resolve_verifier("trl_distill.core.verifiers:nope")
    with pytest.raises(ValueError, match="is not callable"):
        resolve_verifier("trl_distill.core.verifiers:ANSWER_PATTERN")

    def short(prompts, completions, **kwargs):
        return [1.0]

    with pytest.raises(InvalidRewardError, match=r"'short' returned 1 values for 2 completions"):
        run_verifier(short, ["a", "b"], ["x", "y"], {})
    with pytest.raises(ValueError, match="returned nan for completion 0"):
        run_verifier(lambda **kw: [math.nan], ["a"], ["x"], {})
    with pytest.raises(ValueError, match="returned str 'yes' for completion 0"):
        run_verifier(lambda **kw: ["yes"], ["a"], ["x"], {})


def test_math_verify_missing_gives_an_install_hint(monkeypatch):
    monkeypatch.setattr(verify, "is_math_verify_available", lambda: False)
    with pytest.raises(ImportError, match=r"pip install 'trl-distill\[math\]'"):
        resolve_verifier("math_verify")
    with pytest.raises(ImportError, match="math-verify"):
        verify.math_verify_reward(completions=["x"], answer=["1"])


@pytest.mark.skipif(not is_math_verify_available(), reason="math-verify is an optional extra (trl-distill[math])")
def test_math_verify_boxed_answers():
    completions = [
        r"so the result is $\boxed{\frac{1}{2}}$",  # equal value, other notation
        r"\boxed{0.5}",
        r"\boxed{\frac{1}{3}}",
        "I think it is one half",  # no LaTeX answer: 0
        r"\boxed{x+1}",
        r"\boxed{2}",
    ]
    answers = ["0.5", r"\frac{1}{2}", "0.5", "0.5", "1+x", None]
    assert check("math_verify", completions, answers) == [1.0, 1.0, 0.0, 0.0, 1.0, None]
    # datasets made for TRL's accuracy_reward keep the reference in `solution`
    fn = resolve_verifier("math_verify")
    assert run_verifier(fn, ["q"], [r"\boxed{3}"], {"solution": [r"$3$"]}) == [1.0]
