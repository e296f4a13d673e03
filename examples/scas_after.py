# After: the same script with SCAS. Compare with examples/sft_before.py (`diff examples/sft_before.py examples/scas_after.py`):
# only the trainer class and the dataset change.
#   python examples/scas_after.py
import os

from trl import SFTConfig

from trl_distill import SCASTrainer
from trl_distill.lab.world.models import tiny_model
from trl_distill.lab.world.tokenizer import build_tokenizer
from trl_distill.lab.world.toys import toy_pool


os.environ.setdefault("TQDM_DISABLE", "1")

tokenizer = build_tokenizer()
model = tiny_model(tokenizer, "xs", "qwen2")
dataset = toy_pool(32)  # several verified teacher answers per prompt

args = SFTConfig("outputs/tiny-run", num_train_epochs=2, per_device_train_batch_size=8, learning_rate=3e-3,
                 logging_steps=2, report_to="none", save_strategy="no", use_cpu=True)  # fmt: skip
trainer = SCASTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
trainer.train()
trainer.save_model()
