"""Pool inputs a user writes by hand: `correct` flags, prompt ids, plain lists/dicts, and the released pool layout."""

import json
import math

import pytest
from datasets import Dataset

from trl_distill.core.pool import (
    is_released_pool_dir,
    load_released_pool,
    parse_correct,
    pool_form,
    to_grouped_pool,
    to_long_pool,
    validate_pool,
)


def long_rows(correct_values):
    return [
        {"prompt_id": i // 2, "prompt": f"p{i // 2}", "completion": f"a{i}", "teacher": f"t{i % 2}", "correct": c}
        for i, c in enumerate(correct_values)
    ]


def test_correct_flags_are_never_counted_through_bool():
    # bool(nan) and bool("False") are True: NaN must raise, naming the row, the column and the value...
    with pytest.raises(ValueError, match=r"Row 2: `correct` must be a boolean .*got nan"):
        to_long_pool(Dataset.from_list(long_rows([1.0, 1.0, math.nan, 0.0])))
    # ...and the words are parsed, not cast
    assert to_long_pool(Dataset.from_list(long_rows(["True", "False", "False", "True"])))["correct"] == [
        True,
        False,
        False,
        True,
    ]
    with pytest.raises(ValueError, match=r"Row 1: `correct` must be a boolean .*got 'yes'"):
        to_long_pool(Dataset.from_list(long_rows(["True", "yes"])))
    with pytest.raises(ValueError, match=r"Row 1: `correct` must be a boolean .*got 2"):
        to_long_pool(Dataset.from_list(long_rows([1, 2])))
    # a list of rows with mixed types still names the value
    with pytest.raises(ValueError, match=r"Row 1: `correct` must be a boolean .*got '0.5'"):
        to_long_pool(long_rows([True, 0.5]))


def test_correct_flag_parsing():
    assert [parse_correct(v) for v in (True, False, 1, 0, 1.0, "true", " FALSE ")] == [
        True,
        False,
        True,
        False,
        True,
        True,
        False,
    ]
    for bad in (None, math.nan, "no", "1.5", 3):
        with pytest.raises(ValueError, match="`correct` must be a boolean"):
            parse_correct(bad)
    grouped = [{"prompt": "p", "candidates": [{"completion": "a", "teacher": "t", "correct": "false"}]}]
    assert to_long_pool(grouped)["correct"] == [False]
    with pytest.raises(ValueError, match="Row 0, candidate 0: `correct` must be a boolean"):
        validate_pool([{"prompt": "p", "candidates": [{"completion": "a", "teacher": "t", "correct": math.nan}]}])


def test_correct_without_teacher_or_prompt_id_is_not_plain_sft():
    rows = [
        {"prompt": "p", "completion": "right", "correct": True},
        {"prompt": "p", "completion": "wrong", "correct": False},
    ]
    with pytest.raises(ValueError, match="`correct` column but no `prompt_id` or `teacher`"):
        pool_form(Dataset.from_list(rows))
    assert pool_form(Dataset.from_list([{k: v for k, v in r.items() if k != "correct"} for r in rows])) == "sft"


def test_duplicate_prompt_id_with_different_prompts_names_the_id():
    rows = long_rows([True, True, True, True])
    rows[3]["prompt_id"] = 0  # row 3 holds p1 under prompt 0's id
    with pytest.raises(
        ValueError, match=r"Rows 0 and 3 share prompt_id 0 but have different prompts \('p0' vs 'p1'\)"
    ):
        validate_pool(rows)
    grouped = [
        {"prompt_id": "q", "prompt": "first", "candidates": [{"completion": "a", "teacher": "t", "correct": True}]},
        {"prompt_id": "q", "prompt": "second", "candidates": [{"completion": "b", "teacher": "t", "correct": True}]},
    ]
    with pytest.raises(ValueError, match="share prompt_id 'q'"):
        to_long_pool(grouped)
    # the same prompt under one id several times is one prompt with several answers
    same = long_rows([True, True])
    assert to_grouped_pool(same)["prompt_id"] == [0]


def test_empty_datasets_raise_clearly():
    with pytest.raises(ValueError, match="empty"):
        pool_form(Dataset.from_dict({"prompt": [], "completion": []}))
    with pytest.raises(ValueError, match="empty"):
        validate_pool(Dataset.from_dict({"prompt": [], "completion": []}))


def test_lists_and_dicts_are_accepted_and_other_types_named():
    rows = long_rows([True, False])
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    assert to_long_pool(rows).to_list() == to_long_pool(columns).to_list() == Dataset.from_list(rows).to_list()
    assert len(to_grouped_pool(rows)) == 1
    with pytest.raises(TypeError, match="must be a `datasets.Dataset`, a list of rows"):
        to_long_pool(42)
    with pytest.raises(TypeError, match="got list"):
        to_long_pool(["not a row"])


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_released_verified_pool_layout(tmp_path):
    corpus = tmp_path / "data" / "hendrycks_math"
    corpus.mkdir(parents=True)
    for teacher, outputs in (("qwen3-32b", ["x = 2", "y = 5"]), ("deepseek-r1", ["so x = 2", "y is 5"])):
        write_jsonl(
            corpus / f"{teacher}.jsonl",
            [
                {
                    "id": f"math-{i}",
                    "source_dataset": "hendrycks_math",
                    "teacher_name": teacher,
                    "system": "Reason step by step." if i == 0 else "",
                    "instruction": f"Solve problem {i}.",
                    "teacher_output": out,
                    "reference_answer": 2 if i == 0 else "5",  # mixed types, as real answers are
                    "reference_solution": None,
                    "is_common_correct": True,
                }
                for i, out in enumerate(outputs)
            ],
        )
    assert (
        is_released_pool_dir(corpus) and not is_released_pool_dir(tmp_path) and not is_released_pool_dir(corpus / "x")
    )
    pool = load_released_pool(corpus)
    assert validate_pool(pool) == "long"
    # files in name order, rows in file order
    assert pool["teacher"] == ["deepseek-r1", "deepseek-r1", "qwen3-32b", "qwen3-32b"]
    assert pool["prompt_id"] == ["math-0", "math-1"] * 2
    assert pool["correct"] == [True] * 4
    assert pool["prompt"][0] == [
        {"role": "system", "content": "Reason step by step."},
        {"role": "user", "content": "Solve problem 0."},
    ]
    # no system: the released scorer's default one
    assert pool["prompt"][1][0] == {"role": "system", "content": "You are a helpful assistant."}
    assert pool["completion"][2] == [{"role": "assistant", "content": "x = 2"}]
    assert pool["reference_answer"] == ["2", "5", "2", "5"] and pool["source_dataset"] == ["hendrycks_math"] * 4
    assert len(to_grouped_pool(pool)) == 2
    with pytest.raises(ValueError, match="pass one of them"):
        load_released_pool(tmp_path / "data")


def test_released_demo_layout_and_bad_rows(tmp_path):
    rows = [{"id": "math-1", "instruction": "4+3?", "system": "You are a helpful assistant.", "dataset": "toy_math"}]
    write_jsonl(
        tmp_path / "teacher_brief_student_train.jsonl",
        [{**rows[0], "teacher": "teacher_brief", "output": "7", "teacher_output": "7"}],
    )
    write_jsonl(
        tmp_path / "teacher_verbose_student_train.jsonl", [{**rows[0], "output": "4 plus 3 is 7"}]
    )  # no teacher
    write_jsonl(
        tmp_path / "teacher_brief_scas_scores.jsonl", [{"id": "math-1", "scas_score": 1.0}]
    )  # an output, skipped
    pool = load_released_pool(str(tmp_path), default_system=None)
    assert pool["teacher"] == ["teacher_brief", "teacher_verbose"]  # the file name stands in for a missing teacher
    assert [c[0]["content"] for c in pool["completion"]] == ["7", "4 plus 3 is 7"]
    assert pool["correct"] == [True, True] and pool["dataset"] == ["toy_math"] * 2
    write_jsonl(
        tmp_path / "teacher_bad_student_train.jsonl",
        [{"id": "math-1", "instruction": "4+3?", "is_common_correct": "False"}],
    )
    with pytest.raises(
        ValueError,
        match=r"teacher_bad_student_train.jsonl, line 1: a candidate needs `id`, `instruction` and `teacher_output`",
    ):
        load_released_pool(tmp_path)
    write_jsonl(
        tmp_path / "teacher_bad_student_train.jsonl",
        [{"id": "math-1", "instruction": "4+3?", "output": "8", "is_common_correct": "maybe"}],
    )
    with pytest.raises(ValueError, match="line 1: `correct` must be a boolean"):
        load_released_pool(tmp_path)
    (tmp_path / "teacher_bad_student_train.jsonl").unlink()
    write_jsonl(tmp_path / "teacher_brief.jsonl", [{**rows[0], "output": "7"}])
    assert is_released_pool_dir(tmp_path)
    with pytest.raises(ValueError, match="two candidate files for teacher 'teacher_brief'"):
        load_released_pool(tmp_path)
