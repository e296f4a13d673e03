"""What the recipe tests of the methods share: a job's packaged recipes and its example script (`examples/<job>.py`),
parsed as the example parses them."""

import importlib.util
import os

from trl import ModelConfig, TrlParser


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def recipes_dir(job: str) -> str:
    """`recipes/<job>/`, the job's packaged recipes."""
    return os.path.join(ROOT, "recipes", job)


def load_example(job: str):
    """`examples/<job>.py` imported as a module."""
    spec = importlib.util.spec_from_file_location(f"{job}_example", os.path.join(ROOT, "examples", f"{job}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def example_parser(example, config_class) -> TrlParser:
    """The parser over the example's own script arguments, `config_class` and `ModelConfig`."""
    return TrlParser((example.make_parser().dataclass_types[0], config_class, ModelConfig))


def parse_recipe(job: str, config_class, recipe: str, tmp_path) -> tuple:
    """`(script_args, config, model_args)` of `recipes/<job>/<recipe>` on the CPU, writing under `tmp_path`."""
    overrides = ["--output_dir", str(tmp_path), "--use_cpu", "true", "--bf16", "false"]
    parser = example_parser(load_example(job), config_class)
    return parser.parse_args_and_config(args=["--config", os.path.join(recipes_dir(job), recipe), *overrides])


def train_example_on_toy(job: str, config_class, output_dir, *flags: str):
    """Runs `examples/<job>.py`'s `train` on the job's toy recipe, saving to `output_dir`, with `flags` overriding the
    recipe; returns what `train` returns (the trainer)."""
    example = load_example(job)
    args = ["--config", os.path.join(recipes_dir(job), "toy.yaml"), "--output_dir", str(output_dir), *flags]
    return example.train(*example_parser(example, config_class).parse_args_and_config(args=args))
