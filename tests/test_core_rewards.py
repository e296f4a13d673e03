"""TRL reward functions work unchanged in every method that verifies: the shared adapter (`core/rewards.py`), SCAS
pools, DMC quality and capability, and the pool builder (OGLS-SD: tests/test_ogls_sd_trainer.py).

`trl.rewards.think_format_reward` stands in for TRL's rewards (it runs offline; `accuracy_reward` needs the optional
`math-verify`): it reads `completion[0]["content"]`, so it only works when completions arrive as TRL passes them.
"""

import math

import pytest
import torch
from datasets import Dataset
from trl.rewards import think_format_reward

from trl_distill.core.pool import to_grouped_pool, verify_pool
from trl_distill.core.rewards import (
    InvalidRewardError,
    as_completions,
    as_reward_funcs,
    call_reward_funcs,
    is_correct,
    reward_func_name,
    weighted_reward,
)
from trl_distill.core.verifiers import is_math_verify_available
from trl_distill.dmc.compatibility import capability, quality_per_example


THINK = "<think>\nsome reasoning\n</think>\nAnswer: 14"  # think_format_reward: 1.0
PLAIN = "Answer: 14"  # think_format_reward: 0.0


def says_answer(prompts, completions, answer, **kwargs):
    """A user's GRPO-style reward reading the `answer` column; `None` where the row has no reference."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [None if a is None else float(text.endswith(f"Answer: {a}")) for text, a in zip(texts, answer)]


def user(content):
    return [{"role": "user", "content": content}]


def test_names_callables_and_lists_become_reward_functions():
    funcs = as_reward_funcs(["numeric", think_format_reward, "trl.rewards:think_format_reward"])
    assert [reward_func_name(f) for f in funcs] == ["numeric_reward", "think_format_reward", "think_format_reward"]
    assert as_reward_funcs(says_answer) == [says_answer]
    with pytest.raises(ValueError, match="No reward function given"):
        as_reward_funcs([])
    with pytest.raises(TypeError, match="must be callables or verifier names, got int 3"):
        as_reward_funcs([3])


def test_completions_take_the_form_of_their_prompt():
    prompts = [user("q"), "q"]
    assert as_completions(prompts, ["a", "b"]) == [[{"role": "assistant", "content": "a"}], "b"]


def test_trl_and_user_rewards_are_called_as_trl_calls_them():
    prompts = [user("q")] * 3
    completions = as_completions(prompts, [THINK, PLAIN, THINK])
    per_func = call_reward_funcs(
        [think_format_reward, says_answer], prompts, completions, {"prompt": prompts, "answer": ["14", "14", None]}
    )
    expected = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, math.nan]], dtype=torch.float64)
    torch.testing.assert_close(per_func, expected, equal_nan=True)
    # summed over the functions that scored each row; a row no function scored stays unscored
    torch.testing.assert_close(
        weighted_reward(per_func, [0.5, 1.0]), torch.tensor([1.5, 1.0, 0.5], dtype=torch.float64)
    )
    only_user = weighted_reward(per_func[:, 1:])
    assert is_correct(only_user, 1.0) == [True, True, None]
    assert is_correct(weighted_reward(per_func), 2.0) == [True, False, False]


def test_bad_rewards_name_the_function_and_completion():
    with pytest.raises(InvalidRewardError, match=r"'<lambda>' returned 1 values for 2 completions \(pool\)"):
        call_reward_funcs([lambda completions, **kw: [1.0]], ["a", "b"], ["x", "y"], where=" (pool)")
    with pytest.raises(TypeError, match=r"returned str 'yes' for completion 0"):
        call_reward_funcs([lambda completions, **kw: ["yes"]], ["a"], ["x"])


@pytest.mark.skipif(not is_math_verify_available(), reason="trl.rewards.accuracy_reward needs math-verify")
def test_trl_accuracy_reward_reads_the_solution_column():
    from trl.rewards import accuracy_reward

    prompts = [user("q")] * 2
    completions = as_completions(prompts, [r"\boxed{\frac{1}{3}}", r"\boxed{\frac{1}{2}}"])
    per_func = call_reward_funcs([accuracy_reward], prompts, completions, {"solution": [r"$\frac{1}{3}$"] * 2})
    assert per_func[:, 0].tolist() == [1.0, 0.0]


# --- SCAS pools ---------------------------------------------------------------------------------------------------


def think_pool():
    """Two prompts, three teachers; the `correct` flags are deliberately all True (stale)."""
    rows = []
    for prompt_id, (a, b, c) in enumerate([(THINK, PLAIN, THINK), (PLAIN, PLAIN, THINK)]):
        for teacher, text in zip(("x", "y", "z"), (a, b, c)):
            rows.append(
                {
                    "prompt_id": prompt_id,
                    "prompt": user(f"q{prompt_id}"),
                    "completion": [{"role": "assistant", "content": text}],
                    "teacher": teacher,
                    "correct": True,
                    "answer": "14",
                }
            )
    return Dataset.from_list(rows)


def test_verify_pool_sets_correct_from_trl_and_user_rewards():
    pool = verify_pool(think_pool(), think_format_reward)
    assert pool["correct"] == [True, False, True, False, False, True]
    assert pool["reward"] == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    # both functions, summed: every answer says 14, so the thinking ones reach 2
    both = verify_pool(think_pool(), [think_format_reward, says_answer], correct_threshold=2.0)
    assert both["reward"] == [2.0, 1.0, 2.0, 1.0, 1.0, 2.0] and both["correct"] == pool["correct"]
    # the grouped form unfolds the same way
    grouped = verify_pool(to_grouped_pool(think_pool()), think_format_reward)
    assert grouped["correct"] == pool["correct"]


def test_scas_trainer_verifies_its_pool_with_reward_funcs(tmp_path, tokenizer):
    from trl_distill.lab.world.models import tiny_model
    from trl_distill.scas.scas_config import SCASConfig
    from trl_distill.scas.scas_trainer import SCASTrainer

    args = SCASConfig(str(tmp_path), report_to=[], use_cpu=True, save_strategy="no", per_device_train_batch_size=2)
    trainer = SCASTrainer(
        tiny_model(tokenizer, "xs", "qwen2", seed=0),
        args,
        train_dataset=think_pool(),
        processing_class=tokenizer,
        reward_funcs=think_format_reward,
    )
    assert trainer._scas_pool["correct"] == [True, False, True, False, False, True]


# --- DMC quality and capability -------------------------------------------------------------------------------------


def test_dmc_quality_takes_trl_rewards_and_still_refuses_sums_outside_unit():
    data = Dataset.from_dict(
        {
            "prompt": [user("q")] * 4,
            "completion": [[{"role": "assistant", "content": t}] for t in (THINK, PLAIN, THINK, PLAIN)],
            "answer": ["14", "14", "14", "13"],
        }
    )
    assert quality_per_example(data, think_format_reward) == [1.0, 0.0, 1.0, 0.0]
    assert quality_per_example(data, says_answer) == [1.0, 1.0, 1.0, 0.0]
    # two binary rewards sum to 2: quality is a share in [0, 1], so the sum is refused, not clipped (docs/errors.md)
    with pytest.raises(ValueError, match=r"the reward 2.0, outside \[0, 1\]"):
        quality_per_example(data, [think_format_reward, says_answer], name="x")


def test_dmc_capability_passes_generations_as_conversational_completions(tiny_student, tokenizer, arithmetic):
    dev = arithmetic["dev"].select(range(4))
    # the tiny random student never writes a <think> block: a TRL reward reading completion[0]["content"] runs and
    # gives 0; a user reward that accepts every message-form completion gives 1
    assert capability(tiny_student, tokenizer, dev, think_format_reward, max_new_tokens=4) == 0.0

    def is_one_message(completions, **kwargs):
        return [float(isinstance(c, list) and c[0]["role"] == "assistant") for c in completions]

    assert capability(tiny_student, tokenizer, dev, [think_format_reward, is_one_message], max_new_tokens=4) == 1.0
