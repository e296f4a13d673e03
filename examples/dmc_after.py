# After: the same script with DMC. Compare with examples/sft_before.py (`diff examples/sft_before.py examples/dmc_after.py`):
# the dataset becomes several candidate datasets and one line adds the callback that reselects them every epoch.
#   python examples/dmc_after.py
import os

from trl import SFTConfig, SFTTrainer

from trl_distill import DMCCallback
from trl_distill.dmc.dmc_callback import CandidateDatasets
from trl_distill.lab.world.models import tiny_model
from trl_distill.lab.world.tasks import task_reward
from trl_distill.lab.world.tokenizer import build_tokenizer
from trl_distill.lab.world.toys import toy_candidates


os.environ.setdefault("TQDM_DISABLE", "1")

tokenizer = build_tokenizer()
model = tiny_model(tokenizer, "xs", "qwen2")
datasets, dev = toy_candidates(train_size=32, dev_size=8)  # several teachers' datasets and a dev split
dataset = CandidateDatasets(datasets)

args = SFTConfig("outputs/tiny-run", num_train_epochs=2, per_device_train_batch_size=8, learning_rate=3e-3,
                 logging_steps=2, report_to="none", save_strategy="no", use_cpu=True)  # fmt: skip
trainer = SFTTrainer(model=model, args=args, train_dataset=dataset.train_dataset, processing_class=tokenizer)
trainer.add_callback(DMCCallback(dataset, dev, task_reward, trainer=trainer, probe_size=32, max_new_tokens=24))
trainer.train()
trainer.save_model()
