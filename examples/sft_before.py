# Before: a plain SFT script. Two "after" versions, each a small diff of this one:
#   diff examples/sft_before.py examples/scas_after.py   # SCAS: the trainer class and the dataset (a candidate pool)
#   diff examples/sft_before.py examples/dmc_after.py    # DMC: the dataset (candidate datasets) and one callback line
#   python examples/sft_before.py
import os

from trl import SFTConfig, SFTTrainer

from trl_distill.lab.world.models import tiny_model
from trl_distill.lab.world.tasks import make_task_splits
from trl_distill.lab.world.tokenizer import build_tokenizer


os.environ.setdefault("TQDM_DISABLE", "1")

tokenizer = build_tokenizer()
model = tiny_model(tokenizer, "xs", "qwen2")
dataset = make_task_splits(("arithmetic",), 32, 1, 1, style="cot")["train"]  # one answer per prompt

args = SFTConfig("outputs/tiny-run", num_train_epochs=2, per_device_train_batch_size=8, learning_rate=3e-3,
                 logging_steps=2, report_to="none", save_strategy="no", use_cpu=True)  # fmt: skip
trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
trainer.train()
trainer.save_model()
