"""build_pool on the tiny world: two tiny teachers, pool rows and summary, kill-and-resume, refused mismatches."""

import json
import os

import pytest
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_distill.core.generation import generate_completions
from trl_distill.core.pool import to_grouped_pool, to_long_pool, validate_pool
from trl_distill.core.verifiers import completion_text
from trl_distill.pool.build_pool_config import BuildPoolConfig, TeacherSpec
from trl_distill.pool.builder import build_pool, load_pool


N, SHARD_SIZE, NUM_PROMPTS = 2, 3, 7  # 3 shards per teacher, the last one partial


class Killed(BaseException):
    """Stands in for SIGINT/SIGKILL arriving while a shard is being answered."""


CALLS = {"shards": 0, "kill_at": None}


def even_length_reward(prompts=None, completions=None, answer=None, **kwargs):
    """A verifier with a mixed, independently checkable outcome on random teachers: 1.0 for even-length answers."""
    if any(completion_text(c) for c in completions):  # a shard (the builder's dry run passes empty completions)
        CALLS["shards"] += 1
        if CALLS["shards"] == CALLS["kill_at"]:
            raise Killed
    return [None if ref is None else float(len(completion_text(c)) % 2 == 0) for c, ref in zip(completions, answer)]


@pytest.fixture(autouse=True)
def reset_calls():
    CALLS.update(shards=0, kill_at=None)


@pytest.fixture(scope="module")
def teacher_dirs(tmp_path_factory, tokenizer):
    from trl_distill.lab.world.models import tiny_model

    # both Llama: a saved lab Qwen2 directory loads its tokenizer as Qwen2Tokenizer, whose byte-level decoder turns
    # the lab's Latin-1 characters into U+FFFD, which would muddle the token counts checked below
    root, dirs = tmp_path_factory.mktemp("teachers"), []
    for name, arch, seed in (("alpha", "llama", 0), ("beta", "llama", 1)):
        path = str(root / name)
        tiny_model(tokenizer, "xs", arch, seed=seed).save_pretrained(path)
        tokenizer.save_pretrained(path)
        dirs.append(path)
    return dirs


@pytest.fixture(scope="module")
def prompts():
    from trl_distill.lab.world.tasks import make_task_splits

    return make_task_splits(("arithmetic", "copy"), train_size=NUM_PROMPTS, dev_size=1, test_size=1, seed=0)["train"]


def arguments(teacher_dirs, **overrides):
    teachers = [teacher_dirs[0], f"name=beta-t07,model={teacher_dirs[1]},temperature=0.7,max_new_tokens=6"]
    return {
        "teachers": teachers,
        "n": N,
        "verifier": even_length_reward,
        "max_new_tokens": 8,
        "shard_size": SHARD_SIZE,
        "batch_size": 3,
        "seed": 3,
        "show_progress": False,
        **overrides,
    }


@pytest.fixture(scope="module")
def reference_pool(tmp_path_factory, teacher_dirs, prompts):
    """An uninterrupted build, shared by the tests below."""
    output_dir = str(tmp_path_factory.mktemp("reference") / "pool")
    return build_pool(dataset=prompts, output_dir=output_dir, **arguments(teacher_dirs)), output_dir


def test_pool_rows_carry_teacher_settings_and_verified_correctness(reference_pool, prompts, tokenizer):
    pool, output_dir = reference_pool
    assert validate_pool(pool) == "long"
    with open(os.path.join(output_dir, "summary.json")) as f:
        empty = sum(stats["empty"] for stats in json.load(f)["teachers"].values())
    assert len(pool) == 2 * NUM_PROMPTS * N - empty  # empty answers are counted, not pooled
    assert all(completion_text(row["completion"]).strip() for row in pool)

    for row in pool:
        source = prompts[row["prompt_id"]]
        assert (
            row["prompt"] == source["prompt"] and row["answer"] == source["answer"] and row["task"] == source["task"]
        )
        text = completion_text(row["completion"])
        assert row["completion"][0]["role"] == "assistant"  # conversational prompt -> conversational completion
        assert row["reward"] == float(len(text) % 2 == 0)
        assert row["correct"] == (len(text) % 2 == 0)
        assert row["completion_tokens"] == len(tokenizer(text, add_special_tokens=False)["input_ids"])
        expected = {"alpha": (1.0, 8), "beta-t07": (0.7, 6)}[row["teacher"]]
        assert (row["generation"]["temperature"], row["generation"]["max_new_tokens"]) == expected
        assert (
            row["generation"]["backend"] == "transformers"
        )  # token count is of the text: random bytes may not decode 1:1
    assert 0 < sum(pool["correct"]) < len(pool)  # the check above saw both outcomes

    # one row per (prompt, teacher, sample), ordered by prompt, then teacher, then sample
    keys = [(r["prompt_id"], r["teacher"], r["sample_index"]) for r in pool]
    assert len(set(keys)) == len(keys)
    assert keys == sorted(keys, key=lambda k: (k[0], ["alpha", "beta-t07"].index(k[1]), k[2]))
    grouped = to_grouped_pool(pool)
    assert len(grouped) == NUM_PROMPTS and sum(len(row["candidates"]) for row in grouped) == len(pool)
    # per-answer columns travel with their candidate, so the grouped view loses nothing
    assert {c["teacher_model"] for c in grouped[0]["candidates"]} == set(pool["teacher_model"])
    assert to_long_pool(grouped).select_columns(pool.column_names).to_list() == pool.to_list()


def test_summary_matches_a_count_over_the_pool(reference_pool):
    pool, output_dir = reference_pool
    with open(os.path.join(output_dir, "summary.json")) as f:
        summary = json.load(f)
    any_correct = set()
    for teacher in ("alpha", "beta-t07"):
        rows = [r for r in pool if r["teacher"] == teacher]
        assert summary["teachers"][teacher]["empty"] == NUM_PROMPTS * N - len(rows)
        correct_prompts = {r["prompt_id"] for r in rows if r["correct"]}
        any_correct |= correct_prompts
        stats = summary["teachers"][teacher]
        assert stats["answers"] == NUM_PROMPTS * N
        assert stats["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / (NUM_PROMPTS * N))
        assert stats["prompts_with_correct"] == pytest.approx(len(correct_prompts) / NUM_PROMPTS)
        # empty answers count as zero tokens
        tokens = sum(r["completion_tokens"] for r in rows) / (NUM_PROMPTS * N)
        assert stats["mean_completion_tokens"] == pytest.approx(tokens)
    assert summary["any_teacher_prompts_with_correct"] == pytest.approx(len(any_correct) / NUM_PROMPTS)


def test_killed_run_resumes_to_the_uninterrupted_pool(tmp_path, reference_pool, teacher_dirs, prompts):
    pool, reference_dir = reference_pool
    output_dir = str(tmp_path / "pool")
    CALLS["kill_at"] = 5  # alpha's 3 shards and beta's first are on disk; killed inside beta's second
    with pytest.raises(Killed):
        build_pool(dataset=prompts, output_dir=output_dir, **arguments(teacher_dirs))
    shards_dir = os.path.join(output_dir, "shards")
    written = sorted(
        os.path.join(d, f) for d in os.listdir(shards_dir) for f in os.listdir(os.path.join(shards_dir, d))
    )
    assert written == [
        "00-alpha/00000.jsonl",
        "00-alpha/00001.jsonl",
        "00-alpha/00002.jsonl",
        "01-beta-t07/00000.jsonl",
    ]
    assert not os.path.exists(os.path.join(output_dir, "pool.jsonl"))
    # a kill in the middle of writing leaves a temporary file behind; it must be ignored
    with open(os.path.join(shards_dir, "01-beta-t07", "00001.jsonl.tmp12345"), "w") as f:
        f.write('{"half a row": ')

    CALLS.update(shards=0, kill_at=None)
    resumed = build_pool(dataset=prompts, output_dir=output_dir, **arguments(teacher_dirs))
    assert CALLS["shards"] == 2  # only beta's two missing shards were generated
    assert sorted(os.listdir(os.path.join(shards_dir, "01-beta-t07"))) == ["00000.jsonl", "00001.jsonl", "00002.jsonl"]
    assert resumed.to_list() == pool.to_list()
    for name in ("pool.jsonl", "summary.json", "manifest.json"):
        with open(os.path.join(output_dir, name)) as a, open(os.path.join(reference_dir, name)) as b:
            assert a.read() == b.read(), name

    # a finished pool is returned again without generating anything
    CALLS["shards"] = 0
    assert build_pool(dataset=prompts, output_dir=output_dir, **arguments(teacher_dirs)).to_list() == pool.to_list()
    assert CALLS["shards"] == 0


def test_trl_reward_functions_verify_the_pool_unchanged(tmp_path, teacher_dirs, prompts):
    from trl.rewards import think_format_reward

    def even_length(completions, **kwargs):  # a user's GRPO-style reward, reading TRL's message form
        return [float(len(c[0]["content"]) % 2 == 0) for c in completions]

    pool = build_pool(
        dataset=prompts.select(range(3)),
        output_dir=str(tmp_path / "pool"),
        **arguments(teacher_dirs, teachers=teacher_dirs[:1], verifier=[think_format_reward, even_length]),
    )
    assert len(pool) > 0
    for row in pool:
        # the random teacher never writes a <think> block (0), so the sum is the even-length reward
        expected = float(len(completion_text(row["completion"])) % 2 == 0)
        assert row["reward"] == expected and row["correct"] == (expected == 1.0)
    with open(os.path.join(tmp_path, "pool", "manifest.json")) as f:
        names = json.load(f)["verifier"]
    assert names[0] == "trl.rewards.format_rewards.think_format_reward" and names[1].endswith("even_length")


def test_changed_arguments_are_refused(reference_pool, teacher_dirs, prompts):
    _, output_dir = reference_pool
    before = os.listdir(output_dir)
    with pytest.raises(ValueError, match=r"n was 2, now 3.*overwrite"):
        build_pool(dataset=prompts, output_dir=output_dir, **arguments(teacher_dirs, n=3))
    with pytest.raises(ValueError, match="'beta-t07' temperature was 0.7, now 0.9"):
        teachers = [teacher_dirs[0], f"name=beta-t07,model={teacher_dirs[1]},temperature=0.9,max_new_tokens=6"]
        build_pool(dataset=prompts, output_dir=output_dir, **arguments(teacher_dirs, teachers=teachers))
    with pytest.raises(ValueError, match="prompt dataset changed"):
        build_pool(dataset=prompts.select(range(6)), output_dir=output_dir, **arguments(teacher_dirs))
    with pytest.raises(ValueError, match="verifier was"):
        build_pool(dataset=prompts, output_dir=output_dir, **arguments(teacher_dirs, verifier="exact_match"))
    assert os.listdir(output_dir) == before


def test_overwrite_replaces_a_pool_and_foreign_directories_are_refused(tmp_path, teacher_dirs, prompts):
    output_dir = tmp_path / "pool"
    output_dir.mkdir()
    (output_dir / "notes.txt").write_text("not a pool")
    small = prompts.select(range(2))
    with pytest.raises(ValueError, match="holds no pool manifest"):
        build_pool([teacher_dirs[0]], small, str(output_dir), n=1, verifier="exact_match", show_progress=False)

    args = {"n": 1, "verifier": "numeric", "max_new_tokens": 4, "show_progress": False, "overwrite": True}
    first = build_pool([teacher_dirs[0]], small, str(output_dir), **args)
    assert set(first["teacher"]) == {"alpha"} and len(first) == 2
    second = build_pool([f"name=b,model={teacher_dirs[1]}"], small, str(output_dir), **args)
    assert set(second["teacher"]) == {"b"} and len(second) == 2
    assert os.listdir(output_dir / "shards") == ["00-b"]
    assert second.to_list() == load_pool(str(output_dir)).to_list()


def test_bad_inputs_fail_before_any_teacher_is_loaded(tmp_path, prompts):
    missing_teacher = ["/nonexistent/teacher"]  # loading it would fail: every error below must come first
    out = str(tmp_path / "pool")
    with pytest.raises(ValueError, match="needs an `answer` column"):
        build_pool(missing_teacher, prompts.remove_columns("answer"), out, verifier="exact_match")
    with pytest.raises(ValueError, match="no `prompt` column"):
        build_pool(missing_teacher, prompts.rename_column("prompt", "question"), out)
    with pytest.raises(ValueError, match=r"column\(s\) \['teacher'\]"):
        build_pool(missing_teacher, prompts.add_column("teacher", ["x"] * len(prompts)), out)
    with pytest.raises(ValueError, match="`prompt_id` column has repeated values"):
        build_pool(missing_teacher, prompts.add_column("prompt_id", [0] * len(prompts)), out)
    with pytest.raises(ValueError, match="greedily.*n=4"):
        build_pool(["name=g,model=/x,temperature=0"], prompts, out, n=4)
    with pytest.raises(ValueError, match=r"Teacher name\(s\) \['teacher'\] appear more than once"):
        build_pool(["/a/teacher", "/b/teacher"], prompts, out)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['temp'\]"):
        build_pool(["model=/a,temp=0.5"], prompts, out)
    with pytest.raises(ValueError, match="Unknown verifier 'exactmatch'"):
        build_pool(missing_teacher, prompts, out, verifier="exactmatch")

    def per_prompt(prompts, completions, **columns):  # one reward per distinct prompt: a common slip
        return [1.0] * len(dict.fromkeys(map(str, prompts)))

    with pytest.raises(
        ValueError, match=r"per_prompt fails on a dry call .* n=2 .*returned 2 values for 4 completions"
    ):
        build_pool(missing_teacher, prompts, out, n=2, verifier=per_prompt)
    assert not os.path.exists(out)


def test_teacher_specs_parse_and_take_defaults():
    config = BuildPoolConfig(
        teachers=[
            "org/Big-Teacher",
            "name=hot,model=./t,temperature=1.2,top_p=0.9,backend=vllm,tensor_parallel_size=4",
            {"model": "./u", "max_new_tokens": 32, "system": "Be brief."},
        ],
        output_dir="unused",
        temperature=0.6,
        max_new_tokens=256,
    )
    big, hot, u = config.teacher_specs
    assert big == TeacherSpec("org/Big-Teacher", "Big-Teacher", 0.6, 1.0, 256, None, "transformers", "auto", 1)
    assert hot == TeacherSpec("./t", "hot", 1.2, 0.9, 256, None, "vllm", "auto", 4)
    assert (u.name, u.max_new_tokens, u.system, u.temperature) == ("u", 32, "Be brief.", 0.6)
    with pytest.raises(ValueError, match="top_p must be in"):
        BuildPoolConfig(teachers=["model=./t,top_p=0"], output_dir="unused")
    with pytest.raises(ValueError, match="unknown backend 'sglang'"):
        BuildPoolConfig(teachers=["./t"], output_dir="unused", backend="sglang")


def test_plain_text_prompts_own_ids_and_a_greedy_teacher(tmp_path, teacher_dirs):
    prompts = Dataset.from_dict(
        {
            "prompt_id": ["q-a", "q-b", "q-c"],
            "prompt": ["Copy: abc\n", "Copy: hg\n", "Copy: d\n"],
            "answer": ["abc", "hg", "d"],
        }
    )
    teachers = [f"name=greedy,model={teacher_dirs[0]},temperature=0"]
    pool = build_pool(teachers, prompts, str(tmp_path), n=1, max_new_tokens=5, shard_size=2, show_progress=False)
    assert validate_pool(pool) == "long"
    ids = ["q-a", "q-b", "q-c"]
    assert pool["prompt_id"] == [i for i in ids if i in pool["prompt_id"]]  # the dataset's ids, in its order
    assert all(isinstance(c, str) for c in pool["completion"])  # plain prompt -> plain completion
    # greedy: the answer is the teacher's own greedy continuation, whatever the shard's seed
    model, tok = AutoModelForCausalLM.from_pretrained(teacher_dirs[0]), AutoTokenizer.from_pretrained(teacher_dirs[0])
    expected = generate_completions(model, tok, prompts["prompt"], max_new_tokens=5, show_progress=False)
    by_id = dict(zip(pool["prompt_id"], pool["completion"]))
    assert [by_id.get(i, "") for i in ids] == expected
