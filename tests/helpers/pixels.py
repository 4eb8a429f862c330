"""The processor's video pixels as the SigLIP tower sees them."""

import torch


def processor_pixels(processor, path):
    """The processor's uint8 frames through the model's pixel table (fp16, NCHW),
    and the timestamps, decoded now (not from the processor's frame cache)."""
    from sglang.srt.models.quicksviewer import lookup_pixels

    frames, timestamps, _ = processor._decode_video(path)
    assert frames.dtype == torch.uint8
    return lookup_pixels(frames, processor.pixel_table), timestamps
