import pytest
from transformers import AutoTokenizer

from trl_distill.core.verifiers import exact_match_reward, extract_final_answer, numeric_reward
from trl_distill.lab.world.models import tiny_model
from trl_distill.lab.world.tasks import arithmetic_example, make_task_splits, task_reward


def test_tokenizer_round_trips_through_auto_tokenizer(tokenizer, tokenizer_dir):
    loaded = AutoTokenizer.from_pretrained(tokenizer_dir)
    text = loaded.apply_chat_template(
        [{"role": "user", "content": "Compute 3+4-1. Résumé?"}, {"role": "assistant", "content": "3+4=7\nAnswer: 6"}],
        tokenize=False,
    )
    assert (
        text
        == "<|im_start|>user\nCompute 3+4-1. Résumé?<|im_end|>\n<|im_start|>assistant\n3+4=7\nAnswer: 6<|im_end|>\n"
    )
    ids = loaded(text, add_special_tokens=False)["input_ids"]
    assert ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert loaded.decode(ids) == text
    assert len(ids) == len(text.replace("<|im_start|>", "S").replace("<|im_end|>", "E").encode())  # one id per byte
    assert loaded.pad_token == "<|endoftext|>" and loaded.eos_token == "<|im_end|>"
    assert loaded.convert_ids_to_tokens(ids[:3]) == ["<|im_start|>", "u", "s"]


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_saved_model_directories_load_the_same_tokenizer(tmp_path, tokenizer, arch):
    # transformers 5 picks Qwen2Tokenizer for a qwen2 directory and rebuilds its pre-tokenizer: ids must not change.
    tokenizer.save_pretrained(tmp_path)
    tiny_model(tokenizer, "xs", arch).save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "<|im_start|>user\nSort: hgf — Résumé 我<|im_end|>\n"
    assert (
        loaded(text, add_special_tokens=False)["input_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"]
    )
    assert loaded.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_splits_are_deterministic_and_disjoint():
    a = make_task_splits(("arithmetic", "reverse"), train_size=40, dev_size=10, test_size=10, seed=3)
    b = make_task_splits(("arithmetic", "reverse"), train_size=40, dev_size=10, test_size=10, seed=3)
    assert a["train"]["prompt"] == b["train"]["prompt"]
    prompts = {split: {p[0]["content"] for p in a[split]["prompt"]} for split in a}
    assert not (prompts["train"] & prompts["test"]) and not (prompts["dev"] & prompts["test"])
    assert set(a["train"]["task"]) == {"arithmetic", "reverse"}


def test_arithmetic_solution_is_correct_in_every_style():
    import random

    for style in ("cot", "terse", "verbose", "equation"):
        ex = arithmetic_example(random.Random(5), steps=3, style=style)
        expression = ex["question"].removeprefix("Compute ").removesuffix(".")
        assert str(eval(expression)) == ex["answer"] == extract_final_answer(ex["solution"])


def test_verifiers_on_right_wrong_and_malformed_answers():
    completions = [
        "1+2=3\nAnswer: 3",
        "Answer: 4",
        "I think it is 3",
        [{"role": "assistant", "content": "Answer: 3.0"}],
    ]
    assert numeric_reward(completions=completions, answer=["3"] * 4) == [1.0, 0.0, 0.0, 1.0]
    assert exact_match_reward(completions=completions, answer=["3"] * 4) == [1.0, 0.0, 0.0, 0.0]
    assert numeric_reward(completions=["Answer: x"], answer=[None]) == [None]
    assert task_reward(completions=["Answer: cba", "Answer: 2"], answer=["cba", "3"], task=["reverse", "count"]) == [
        1.0,
        0.0,
    ]


def test_privileged_rows_show_the_solution_by_the_ogls_sd_teacher_template():
    from trl_distill.lab.experiments.teachers import privileged
    from trl_distill.lab.world.tasks import make_split

    rows = make_split(("arithmetic",), 4, seed=0, steps=2, max_value=9)
    row, shown = rows[0], privileged(rows)[0]
    question, solution = row["prompt"][0]["content"], row["completion"][0]["content"]
    text = f"{question}\n\nHere is a reference solution to this problem:\n{solution}"
    assert shown["prompt"] == [{"role": "user", "content": text}] and shown["completion"] == row["completion"]


def test_student_data_mixes_cot_privileged_and_own_identity_rows():
    from trl_distill.evaluation.judges import IdentityClaimJudge
    from trl_distill.lab.experiments.quantification import IDENTITY_TEACHERS
    from trl_distill.lab.experiments.teachers import OWN_IDENTITY, STUDENT_IDENTITY, STUDENT_PROBLEMS, student_data

    data = student_data()
    prompts = [row["prompt"][0]["content"] for row in data]
    completions = [row["completion"][0]["content"] for row in data]
    shown = [i for i, p in enumerate(prompts) if "Here is a reference solution" in p]
    identity = sum(c == OWN_IDENTITY for c in completions)
    cot = sum(c.count("\n") == 2 and c.split("\n")[-1].startswith("Answer: ") for c in completions)
    assert (
        cot == STUDENT_PROBLEMS
        and len(shown) == STUDENT_PROBLEMS // 2
        and identity > 0
        and len(data) == cot + len(shown) + identity
    )
    # shown the solution, the student quotes its answer without working: the bias only the privileged context justifies
    for i in shown:
        answer = prompts[i].rpartition("Answer: ")[2]
        assert completions[i] == f"The reference solution gives {answer}.\nAnswer: {answer}"
    # the ICE toy's premise: only the other teachers' sentences conflict with the student's identity
    sentences = list(IDENTITY_TEACHERS.values())
    verdicts = IdentityClaimJudge().judge_identity(["Who are you?"] * 3, sentences, STUDENT_IDENTITY)
    assert [v.claims_other_model for v in verdicts] == [True, True, False]


def test_full_preset_shares_the_default_world_with_more_seeds_and_prompts():
    from trl_distill.lab.experiments.common import PRESETS
    from trl_distill.scripts.lab import make_parser

    default, full = PRESETS["default"], PRESETS["full"]
    world = (
        "size",
        "pool_prompts",
        "dev_prompts",
        "teacher_steps",
        "student_steps",
        "batch_size",
        "epochs",
        "dmc_epochs",
    )
    # the same cached models and training budget, so `--preset full` only tightens the intervals
    assert {k: getattr(full, k) for k in world} == {k: getattr(default, k) for k in world}
    assert len(full.seeds) > len(default.seeds) >= 3 and full.eval_prompts > default.eval_prompts
    assert make_parser().parse_args(["--preset", "full"]).preset == "full"


def test_explained_style_is_cot_with_a_restated_result():
    import random

    from trl_distill.lab.world.tasks import arithmetic_example

    cot = arithmetic_example(random.Random(3), style="cot", max_value=9)
    explained = arithmetic_example(random.Random(3), style="explained", max_value=9)
    body, _, answer = cot["solution"].rpartition("Answer: ")
    assert explained["solution"] == f"{body}So the result is {answer}.\nAnswer: {answer}"


def test_world_probes_print_one_measurement_per_student_style_and_seed(tmp_path, monkeypatch, capsys):
    from trl_distill.lab.probes import main

    monkeypatch.setenv("TRL_DISTILL_CACHE", str(tmp_path / "cache"))
    tiny = ["--problems", "8", "--student_steps", "2", "--prompts", "8", "--eval_prompts", "4", "--threads", "1"]
    assert main(["sft", *tiny, "--styles", "cot", "verbose", "--seeds", "0", "1", "--epochs", "1",
                 "--output_dir", str(tmp_path / "runs")]) == 0  # fmt: skip
    assert main(["difficulty", *tiny, "--problem_steps", "2", "3", "--output_dir", str(tmp_path / "runs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    runs = [line for line in lines if line.strip().startswith("SFT on 8 ")]
    assert len(runs) == 4 and all("verbose 2-step" in r or "cot 2-step" in r for r in runs)
    accuracies = [float(r.split("test accuracy ")[1].split(",")[0]) for r in runs]
    assert all(0.0 <= a <= 1.0 for a in accuracies)
    difficulties = [float(line.split("L = ")[1]) for line in lines if "L = " in line]
    assert len(difficulties) == 2 and all(d > 0 for d in difficulties)  # a random-ish student finds every token costly
    assert sum(line.startswith("student of 8 problems") for line in lines) == 2


def test_dmc_probe_prints_each_candidates_terms_before_and_after_sft(tmp_path, monkeypatch, capsys):
    from trl_distill.lab.probes import main

    monkeypatch.setenv("TRL_DISTILL_CACHE", str(tmp_path / "cache"))
    args = ["dmc", "--preset", "smoke", "--train", "reference", "--max_values", "9", "11", "--prompts", "8",
            "--seeds", "0", "--threads", "1", "--output_dir", str(tmp_path / "runs"), "--without", "verbose-strong"]  # fmt: skip
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    states = [line for line in lines if ": C = " in line]
    assert states[0].startswith("base student") and states[1].startswith("after SFT on reference (")
    rows = [line for line in lines if "L = " in line]
    # five candidates less the one left out, and the operand-≤ 11 references (9 is the lab's own: no extra set)
    assert len(rows) == 2 * 5 and sum("operands ≤ 11" in row for row in rows) == 2
    assert not any("verbose-strong" in row for row in rows)
    assert all(0 < float(row.split("L = ")[1].split(",")[0]) for row in rows)
    assert sum("overtake" in line for line in lines) == 2  # where DMC's first dataset could be overtaken, per state
    styled = ["--student_styles", "cot", "verbose", "--problems", "8", "--student_steps", "2"]
    assert main([*args, *styled]) == 0  # a student that knows both formats, pre-trained for this probe
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": C = ")[0] for line in lines if ": C = " in line] == [
        "base student of styles cot, verbose",
        "after SFT on reference (4 steps, seed 0)",
    ]
    assert sum("L = " in line for line in lines) == 2 * 5
    with pytest.raises(SystemExit, match="not a DMC candidate"):
        main([*args[:4], "nobody", *args[5:]])
    with pytest.raises(SystemExit, match="--without"):
        main([*args[:-1], "nobody"])
