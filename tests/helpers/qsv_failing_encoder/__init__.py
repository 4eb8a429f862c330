"""A model package for SGLANG_EXTERNAL_MODEL_PACKAGE: Quicksviewer with a failing encoder.

tests/model/test_model_async_encode.py serves it to check what a client sees when the
visual encoder raises (on a GPU, for example, CUDA running out of memory).
"""
