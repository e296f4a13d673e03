"""`trl-distill dmc`: SFT over several candidate datasets, reselected by data–model compatibility ([`DMCCallback`]).

```bash
trl-distill dmc --config dmc/toy     # the packaged toy recipe: offline, CPU, a few minutes
accelerate launch --config_file recipes/accelerate/zero3.yaml -m trl_distill.cli dmc \
    --config recipes/dmc/qwen2.5-1.5b-math.yaml --datasets qwq=data/qwq.jsonl r1=data/r1.jsonl --dev_dataset dev.jsonl
```

Ranking the datasets without training is `trl-distill dmc-rank`. `examples/dmc.py` runs this job as a standalone
script.
"""

from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig, SFTConfig, SFTTrainer

from ..core.data import load_data
from ..core.sources import resolve_model
from ..core.tokenizers import ensure_pad_token
from ..dmc.dmc_callback import CandidateDatasets, DMCArguments, DMCCallback
from .dmc_rank import DMCDataArguments
from .utils import (
    build_trainer,
    cast_to_dtype,
    check_quantization,
    quantization_config,
    student_init_kwargs,
    train_and_finish,
    training_command,
)


def load_model(training_args: SFTConfig, model_args: ModelConfig):
    """The student and its tokenizer, `model_args.model_name_or_path` loaded after the config is parsed (so
    DeepSpeed's `zero3_init_flag` applies), or the model its source builds."""
    model, tokenizer = resolve_model(model_args.model_name_or_path, "student (--model_name_or_path)")
    if not isinstance(model, str):
        return cast_to_dtype(model, model_args), tokenizer
    tokenizer = AutoTokenizer.from_pretrained(model, revision=model_args.model_revision)
    ensure_pad_token(tokenizer)
    kwargs = student_init_kwargs(model_args, training_args)
    model = AutoModelForCausalLM.from_pretrained(model, quantization_config=quantization_config(model_args), **kwargs)
    return model, tokenizer


def load_eval_rows(data_args: DMCDataArguments, training_args: SFTConfig):
    """The SFT eval rows when `training_args.eval_strategy` is not `"no"` (as TRL's scripts load
    `dataset_test_split`), else `None`. Raises, naming `--eval_dataset`, when evaluation is asked without one."""
    if str(training_args.eval_strategy) in ("no", "IntervalStrategy.NO"):
        return None
    if not data_args.eval_dataset:
        raise ValueError(
            f"--eval_strategy {training_args.eval_strategy} needs rows to evaluate on: give --eval_dataset "
            "(prompt/completion rows, --eval_split picks the split), or drop --eval_strategy."
        )
    return load_data(data_args.eval_dataset, split=data_args.eval_split, whole_file=True)


def train(
    data_args: DMCDataArguments, dmc_args: DMCArguments, training_args: SFTConfig, model_args: ModelConfig
) -> SFTTrainer:
    """Builds an [`~trl.SFTTrainer`] over the concatenated candidates with a [`DMCCallback`], trains and saves."""
    check_quantization(model_args)  # before anything is loaded
    datasets, dev, verifier = data_args.load()
    model, tokenizer = load_model(training_args, model_args)
    candidates = CandidateDatasets(datasets)
    trainer = build_trainer(
        SFTTrainer,
        training_args,
        model_args,
        model=model,
        train_dataset=candidates.train_dataset,
        eval_dataset=load_eval_rows(data_args, training_args),
        processing_class=tokenizer,
    )
    trainer.add_callback(DMCCallback(candidates, dev, verifier, args=dmc_args, trainer=trainer))
    return train_and_finish(trainer, training_args)


make_parser, main = training_command("dmc", (DMCDataArguments, DMCArguments, SFTConfig, ModelConfig), train)


if __name__ == "__main__":
    raise SystemExit(main())
