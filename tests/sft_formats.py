"""One small dataset in each format `SFTTrainer` accepts, built from the same question–answer pairs."""

import json

from datasets import Dataset


PAIRS = [
    ("Compute 2+3.", "2+3 = 5. Answer: 5"),
    ("Compute 7-4.", "7-4 = 3. Answer: 3"),
    ("Compute 6*2.", "6*2 = 12. Answer: 12"),
    ("Compute 9+1.", "9+1 = 10. Answer: 10"),
    ("Compute 8-8.", "8-8 = 0. Answer: 0"),
    ("Compute 3*3.", "3*3 = 9. Answer: 9"),
]
ANSWERS = ["5", "3", "12", "10", "0", "9"]
TOOLS = json.dumps([{"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}])


def _messages(q, a):
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


FORMATS = {
    "text": lambda tok: {"text": [f"{q} {a}" for q, a in PAIRS]},
    "prompt_completion": lambda tok: {"prompt": [q for q, _ in PAIRS], "completion": [" " + a for _, a in PAIRS]},
    "conversational_prompt_completion": lambda tok: {
        "prompt": [[{"role": "user", "content": q}] for q, _ in PAIRS],
        "completion": [[{"role": "assistant", "content": a}] for _, a in PAIRS],
    },
    "messages": lambda tok: {"messages": [_messages(q, a) for q, a in PAIRS]},
    "extra_columns": lambda tok: {
        "prompt": [q for q, _ in PAIRS],
        "completion": [" " + a for _, a in PAIRS],
        "answer": ANSWERS,
        "source": ["synthetic"] * len(PAIRS),
    },
    "input_ids": lambda tok: {"input_ids": [tok(f"{q} {a}")["input_ids"] for q, a in PAIRS]},
    "messages_tools": lambda tok: {"messages": [_messages(q, a) for q, a in PAIRS], "tools": [TOOLS] * len(PAIRS)},
    "chat_template_kwargs": lambda tok: {
        "prompt": [[{"role": "user", "content": q}] for q, _ in PAIRS],
        "completion": [[{"role": "assistant", "content": a}] for _, a in PAIRS],
        "chat_template_kwargs": [{"enable_thinking": False}] * len(PAIRS),
    },
    "conversations": lambda tok: {
        "conversations": [[{"from": "human", "value": q}, {"from": "gpt", "value": a}] for q, a in PAIRS]
    },
}


def sft_dataset(name: str, tokenizer) -> Dataset:
    """The `PAIRS` in format `name` (a key of `FORMATS`)."""
    return Dataset.from_dict(FORMATS[name](tokenizer))
