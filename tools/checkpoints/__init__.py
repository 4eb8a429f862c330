"""Checkpoint tooling: a local Qwen2.5 tokenizer, seeded tiny Quicksviewer checkpoints in
the original on-disk format, and the converter to the SGLang-loadable layout."""
