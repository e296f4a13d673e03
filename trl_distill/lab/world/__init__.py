"""The tiny world: a byte-level tokenizer, arithmetic and string tasks with their verifier, tiny random-init models
with a cached pre-training routine, and the toy pools, datasets and models that `--lab` runs on. Built offline in
seconds; everything here takes plain arguments and imports the methods never."""
