"""Names and a loader the real-model tests share."""

SMOLLM2 = "smollm2-135m-instruct"
GEMMA3 = "gemma-3-270m"


def load(path):
    """A fresh float32 model and its tokenizer from a checkpoint directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)
