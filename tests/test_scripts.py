"""One layout: the import graph has no arrow from a method to `lab` or `scripts`, and every training command takes
the same common flags the same way (`--config`, a local `--dataset_name` file, `--use_peft`, `--load_in_4bit`
refused on CPU, `--resume_from_checkpoint`, a missing path named)."""

import ast
import importlib
import json
import os
import threading
import warnings

import pytest
import torch
from datasets import Dataset

from trl_distill import cli


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "trl_distill")
METHODS = ("scas", "dmc", "ogls_sd", "camopd", "pool", "evaluation")
TRAINING = ("scas", "dmc", "ogls-sd", "camopd")


def imported_subpackages(path: str) -> set[str]:
    """The `trl_distill` sub-packages a module imports (absolute or relative, at any depth of the file)."""
    relative = os.path.relpath(path, ROOT).removesuffix(".py").split(os.sep)
    package = relative[:-1] if not path.endswith("__init__.py") else relative[:-1]
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = base + (node.module.split(".") if node.module else [])
                names = [target + [alias.name] for alias in node.names] if not node.module else [target]
            else:
                names = [(node.module or "").split(".")]
        elif isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        else:
            continue
        for parts in names:
            if parts[0] == "trl_distill" and len(parts) > 1:
                found.add(parts[1])
    return found


def import_graph() -> dict[str, set[str]]:
    """Sub-package -> sub-packages it imports, over every module of the package."""
    graph: dict[str, set[str]] = {}
    for directory, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                parts = os.path.relpath(path, PACKAGE).split(os.sep)
                source = parts[0].removesuffix(".py") if len(parts) > 1 else "__root__"
                graph.setdefault(source, set()).update(imported_subpackages(path) - {source})
    return graph


def test_import_graph_has_no_arrow_from_a_method_to_lab_or_scripts_and_no_cycle():
    graph = import_graph()
    assert {"core", "scripts", "lab", *METHODS} <= set(graph)
    for method in METHODS:
        assert not graph[method] & {"lab", "scripts", "cli"}, (method, graph[method])
    assert graph["core"] <= set(), graph["core"]  # core imports no method
    assert "scripts" not in graph["lab"]
    # no cycle among the sub-packages (a depth-first search over the graph)
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in graph.get(node, ()):
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join([*trail, node, nxt])}"
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_the_graph_parser_sees_relative_and_nested_imports(tmp_path):
    module = os.path.join(PACKAGE, "scas", "scas_trainer.py")
    assert "core" in imported_subpackages(module)
    assert {"scas", "scripts"} <= imported_subpackages(os.path.join(PACKAGE, "scripts", "scas.py"))
    assert "lab" in imported_subpackages(os.path.join(PACKAGE, "scripts", "lab.py"))


# --- the common flags, on local files -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny student and general teacher on disk, and each command's data as local jsonl files."""
    from trl_distill.lab.world.models import tiny_model
    from trl_distill.lab.world.tasks import GENERAL_TASKS, make_task_splits
    from trl_distill.lab.world.tokenizer import build_tokenizer
    from trl_distill.lab.world.toys import toy_candidates, toy_pool

    root = tmp_path_factory.mktemp("scripts")
    tokenizer = build_tokenizer()
    for name, seed in (("student", 0), ("teacher", 1)):
        tiny_model(tokenizer, "xs", seed=seed).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    toy_pool(8).to_json(root / "pool.jsonl")
    arithmetic = make_task_splits(("arithmetic",), 16, 8, 8, seed=0)
    rows = arithmetic["train"].map(lambda row: {"privileged_context": row["completion"][0]["content"]})
    rows.to_json(root / "ogls.jsonl")
    arithmetic["train"].remove_columns("completion").to_json(root / "domain.jsonl")
    make_task_splits(GENERAL_TASKS, 16, 8, 8, seed=0)["train"].remove_columns("completion").to_json(
        root / "general.jsonl"
    )
    candidates, dev = toy_candidates(train_size=16, dev_size=4)
    for name in ("cot", "terse"):
        candidates[name].to_json(root / f"{name}.jsonl")
    dev.to_json(root / "dev.jsonl")
    return root


def job_args(job: str, root) -> list[str]:
    """The job's toy recipe on local files, with a LoRA student and 2 steps saved every step."""
    args = ["--config", os.path.join(ROOT, "recipes", job.replace("-", "_"), "toy.yaml")]
    args += [
        "--model_name_or_path",
        str(root / "student"),
        "--max_steps",
        "2",
        "--save_strategy",
        "steps",
        "--save_steps",
        "1",
        "--logging_steps",
        "1",
    ]
    args += ["--use_peft", "--lora_r", "4", "--lora_target_modules", "q_proj", "v_proj", "--report_to", "none"]
    return (
        args
        + {
            "scas": ["--dataset_name", str(root / "pool.jsonl"), "--per_device_train_batch_size", "4"],
            "dmc": ["--datasets", f"cot={root / 'cot.jsonl'}", f"terse={root / 'terse.jsonl'}"]
            + [
                "--dev_dataset",
                str(root / "dev.jsonl"),
                "--verifier",
                "lab:task",
                "--per_device_train_batch_size",
                "4",
            ]
            + ["--probe_size", "4", "--dev_size", "4", "--max_new_tokens", "4"],
            "ogls-sd": ["--dataset_name", str(root / "ogls.jsonl"), "--reward", "lab:task"]
            + ["--per_device_train_batch_size", "4", "--max_completion_length", "4"],
            "camopd": ["--general_teacher", str(root / "teacher"), "--general_prompts", str(root / "general.jsonl")]
            + ["--domain_prompts", str(root / "domain.jsonl"), "--per_device_train_batch_size", "2"]
            + ["--max_completion_length", "4", "--gradient_coherence_every", "0"],
        }[job]
    )


def run_job(job: str, argv: list[str]):
    module = importlib.import_module(cli.COMMANDS[job][0])
    return module.train(*module.make_parser().parse_args_and_config(args=argv))


@pytest.mark.parametrize("job", TRAINING)
def test_each_training_command_trains_on_local_files_with_lora_and_resumes(job, files, tmp_path):
    from peft import PeftModel

    out = str(tmp_path / "out")
    trainer = run_job(job, [*job_args(job, files), "--output_dir", out])
    assert isinstance(trainer.accelerator.unwrap_model(trainer.model), PeftModel) and trainer.state.global_step == 2
    assert os.path.exists(os.path.join(out, "checkpoint-2")) and os.path.exists(
        os.path.join(out, "adapter_model.safetensors")
    )
    if job in ("scas", "dmc"):  # the selection rounds are in the model card, before the citations
        with open(os.path.join(out, "README.md")) as f:
            card = f.read()
        share = "`scas/teacher_share/" if job == "scas" else "`dmc/capability`"
        assert card.index("## Data selection") < card.index(share) < card.index("## Citations")

    # resumed from the first checkpoint: steps 2 and 3 run again, step 1 is not redone (its checkpoint stays as it
    # was; a fresh start would write it anew)
    first = os.path.join(out, "checkpoint-1", "trainer_state.json")
    written = os.stat(first).st_mtime_ns
    argv = [*job_args(job, files), "--output_dir", out, "--max_steps", "3"]
    resumed = run_job(job, [*argv, "--resume_from_checkpoint", os.path.join(out, "checkpoint-1")])
    assert resumed.state.global_step == 3 and os.path.exists(os.path.join(out, "checkpoint-3"))
    assert os.stat(first).st_mtime_ns == written
    with open(first) as f:
        assert json.load(f)["global_step"] == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
@pytest.mark.parametrize("job", TRAINING)
def test_each_training_command_refuses_4bit_on_cpu_before_loading(job, files, tmp_path):
    with pytest.raises(ValueError, match="--load_in_4bit .*needs a CUDA device"):
        run_job(job, [*job_args(job, files), "--output_dir", str(tmp_path), "--load_in_4bit"])


@pytest.mark.parametrize("job", TRAINING)
def test_each_training_command_names_a_missing_model_path(job, files, tmp_path):
    argv = [*job_args(job, files), "--output_dir", str(tmp_path), "--model_name_or_path", str(tmp_path / "nope")]
    with pytest.raises(FileNotFoundError, match=r"student \(--model_name_or_path\) path .*nope.* does not exist"):
        run_job(job, argv)


def test_a_missing_model_path_names_its_flag(files, tmp_path):
    gone = str(tmp_path / "gone")
    argv = [*job_args("camopd", files), "--output_dir", str(tmp_path), "--general_teacher", gone]
    with pytest.raises(FileNotFoundError, match=r"general teacher \(--general_teacher\) path .*gone.* does not exist"):
        run_job("camopd", argv)
    scas_score = importlib.import_module(cli.COMMANDS["scas-score"][0])
    with pytest.raises(FileNotFoundError, match=r"student \(--model\) path .*gone.* does not exist"):
        scas_score.main(["--model", gone, "--pool", str(files / "pool.jsonl"), "--output_dir", str(tmp_path)])


def test_the_one_loader_reads_files_directories_and_names_a_missing_path(tmp_path):
    from trl_distill.core.data import load_data

    rows = [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d"}]
    Dataset.from_list(rows).to_json(tmp_path / "rows.jsonl")
    Dataset.from_list(rows).to_parquet(tmp_path / "rows.parquet")
    Dataset.from_list(rows).to_csv(tmp_path / "rows.csv", index=False)
    Dataset.from_list(rows).save_to_disk(tmp_path / "saved")
    (tmp_path / "splits").mkdir()
    Dataset.from_list(rows).to_json(tmp_path / "splits" / "train.jsonl")
    Dataset.from_list(rows[:1]).to_json(tmp_path / "splits" / "test.jsonl")
    for name in ("rows.jsonl", "rows.parquet", "rows.csv", "saved", "splits"):
        assert load_data(str(tmp_path / name)).to_list() == rows, name
    assert load_data(str(tmp_path / "splits"), split="test").to_list() == rows[:1]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_data(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="Cannot read"):
        (tmp_path / "notes.txt").write_text("x")
        load_data(str(tmp_path / "notes.txt"))


def test_one_verifier_registry_serves_every_command():
    from trl_distill.core.verifiers import VERIFIERS, resolve_verifier
    from trl_distill.lab.world.tasks import task_reward

    assert resolve_verifier("lab:task") is task_reward  # a source: the lab registers itself on first use
    assert VERIFIERS["lab_task"] is task_reward and resolve_verifier("lab_task") is task_reward
    assert resolve_verifier("exact_match") is VERIFIERS["exact_match"]
    with pytest.raises(ValueError, match="Unknown verifier"):
        resolve_verifier("nope")
    with pytest.raises(ValueError, match="lab:scas_pool is a dataset, not a reward"):
        resolve_verifier("lab:scas_pool")


def test_scas_score_reads_a_released_pool_directory_and_selects_by_any_score_key(tmp_path, tokenizer):
    """`scas-score --pool DIR` on the released layout (one `<teacher>.jsonl` each), ranked by `--score_key`."""
    from trl_distill.lab.world.models import tiny_model

    tiny_model(tokenizer, "xs").save_pretrained(tmp_path / "student")
    tokenizer.save_pretrained(tmp_path / "student")
    pool = tmp_path / "math"
    pool.mkdir()
    answers = {"brief": ["Answer: 4", "Answer: 9"], "wordy": ["We add 2 and 2. Answer: 4", "3 times 3. Answer: 9"]}
    for teacher, outputs in answers.items():
        rows = [
            {"id": i, "teacher_name": teacher, "system": "", "instruction": q, "teacher_output": out}
            | {"is_common_correct": True}
            for i, (q, out) in enumerate(zip(["2+2?", "3*3?"], outputs))
        ]
        Dataset.from_list(rows).to_json(pool / f"{teacher}.jsonl")
    out = tmp_path / "o"
    argv = ["--model", str(tmp_path / "student"), "--pool", str(pool), "--output_dir", str(out)]
    scas_score = importlib.import_module(cli.COMMANDS["scas-score"][0])
    summary = scas_score.main([*argv, "--score_key", "answer_mean_nll_score", "--q_nll_scope", "prompt_no_gen"])
    assert summary["prompts"] == 2 and summary["selected"] == 2
    scores = [json.loads(line) for line in open(out / "scores.jsonl")]
    for prompt_id in (0, 1):
        rows = [row for row in scores if row["prompt_id"] == prompt_id]
        chosen = next(row for row in rows if row["selected"])
        assert chosen["answer_mean_nll_score"] == min(row["answer_mean_nll_score"] for row in rows)


def as_parquet(arg: str) -> str:
    """`arg` (a path, or `name=path`) with its `.jsonl` file replaced by a `.parquet` copy."""
    prefix, _, path = arg.rpartition("=")
    if not path.endswith(".jsonl"):
        return arg
    target = path.removesuffix(".jsonl") + ".parquet"
    if not os.path.exists(target):
        Dataset.from_json(path).to_parquet(target)
    return f"{prefix}={target}" if prefix else target


@pytest.mark.parametrize("job", TRAINING)
def test_each_training_command_loads_an_eval_split_when_eval_strategy_is_set(job, files, tmp_path):
    # the same commands on parquet files this time (the other tests read jsonl)
    argv = [as_parquet(arg) for arg in job_args(job, files)]
    argv += ["--output_dir", str(tmp_path), "--max_steps", "1", "--save_strategy", "no"]
    argv += ["--eval_strategy", "steps", "--eval_steps", "1", "--per_device_eval_batch_size", "4"]
    if job == "dmc":
        argv += ["--eval_dataset", as_parquet(str(files / "terse.jsonl"))]
    elif job == "camopd":  # eval prompts of their own: a single training file has no `test` split
        argv += ["--general_eval_prompts", as_parquet(str(files / "general.jsonl"))]
        argv += ["--domain_eval_prompts", as_parquet(str(files / "domain.jsonl"))]
    else:  # a slice of the single training file (it has no `test` split)
        argv += ["--dataset_test_split", "train[:4]"]
    assert any(arg.endswith(".parquet") for arg in argv)
    trainer = run_job(job, argv)
    assert trainer.eval_dataset is not None
    evaluated = [record for record in trainer.state.log_history if any(key.startswith("eval_") for key in record)]
    assert evaluated and evaluated[0]["step"] == 1, trainer.state.log_history


def test_dmc_asked_to_evaluate_without_eval_rows_names_the_flag(files, tmp_path):
    argv = [*job_args("dmc", files), "--output_dir", str(tmp_path), "--eval_strategy", "steps"]
    with pytest.raises(ValueError, match="needs rows to evaluate on: give --eval_dataset"):
        run_job("dmc", argv)


def test_the_selection_rounds_go_into_the_model_card_once_before_the_citations(tmp_path):
    from types import SimpleNamespace

    from trl_distill.core.sampler import SelectionCallback, add_selection_to_model_card

    class Rounds(SelectionCallback):
        def rounds(self):
            return [(0, {"share/a": 0.25, "cost": 12.34567}), (2, {"share/a": 0.5, "changed": 0.125})]

    trainer = SimpleNamespace(
        callback_handler=SimpleNamespace(callbacks=[object(), Rounds()]), is_world_process_zero=lambda: True
    )
    path = tmp_path / "README.md"
    path.write_text("# Model\n\n## Training procedure\n\ntext\n\n## Citations\n\nbib\n")
    expected = (
        "## Data selection\n\nSelection rounds of `Rounds`:\n\n"
        "| epoch | `share/a` | `cost` | `changed` |\n|---|---|---|---|\n"
        "| 0 | 0.25 | 12.35 |  |\n| 2 | 0.5 |  | 0.125 |\n\n"
    )
    add_selection_to_model_card(trainer, str(path))
    add_selection_to_model_card(trainer, str(path))  # a second card write (a later checkpoint) replaces it
    assert path.read_text() == "# Model\n\n## Training procedure\n\ntext\n\n" + expected + "\n## Citations\n\nbib\n"


def test_source_student_ignores_quantization_flags_with_a_warning():
    from types import SimpleNamespace

    from trl_distill.scripts.utils import student_quantization_config

    quantized = SimpleNamespace(model_name_or_path="lab:scas_student", load_in_4bit=True, load_in_8bit=False)
    with pytest.warns(UserWarning, match="'lab:scas_student' is built in full precision"):
        assert student_quantization_config(quantized) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no flag, no warning
        plain = SimpleNamespace(model_name_or_path="lab:scas_student", load_in_4bit=False, load_in_8bit=False)
        assert student_quantization_config(plain) is None


def test_camopd_command_trains_and_resumes_with_a_served_general_teacher(files, tmp_path):
    """`--general_teacher http://...`: the general teacher is `serve-teacher` on loopback, the domain teacher the
    student's frozen copy; two steps with a LoRA student, then a resume from the first checkpoint."""
    from trl_distill.scripts.serve_teacher import load_server, make_parser

    server = load_server(make_parser().parse_args([str(files / "teacher"), "--port", "0", "--device", "cpu"]))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = str(tmp_path / "out")
        argv = [*job_args("camopd", files), "--output_dir", out, "--general_teacher", server.url]
        trainer = run_job("camopd", argv)
        assert trainer.state.global_step == 2 and type(trainer.teachers["general"]).__name__ == "ServedTeacher"
        scored = server.requests["/completions"]
        assert scored >= 1  # the recovery step scored its completions on the server
        resumed = run_job("camopd", [*argv, "--max_steps", "3", "--resume_from_checkpoint", f"{out}/checkpoint-1"])
        assert resumed.state.global_step == 3 and server.requests["/completions"] > scored
    finally:
        server.stop()


def test_scoring_and_evaluation_commands_take_a_source_as_their_model():
    """`scas-score`, `dmc-rank` and `evaluate` load their model through `load_pretrained`: a path, a Hub id or a
    source (the sources module's promise: every command that takes a model takes a source)."""
    import torch

    from trl_distill.scripts.evaluate import _load_model
    from trl_distill.scripts.scas_score import _load_student

    model, tokenizer = _load_student("lab:scas_student?size=xs", "bfloat16", "cpu")
    assert isinstance(model, torch.nn.Module) and model.dtype == torch.bfloat16 and tokenizer.pad_token is not None
    model, tokenizer = _load_model("lab:scas_student?size=xs")
    assert not model.training and tokenizer.pad_token_id is not None
    with pytest.raises(ValueError, match="Unknown|unknown"):
        _load_model("lab:no_such_model")
