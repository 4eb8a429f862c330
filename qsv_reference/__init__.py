"""Plain PyTorch + transformers re-implementation of the original Quicksviewer inference.

It loads checkpoints in the ORIGINAL on-disk format (``model_type: quicksviewer_qwen``)
and serves as the parity oracle for the SGLang port and as the transformers baseline.
"""
