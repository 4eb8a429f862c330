"""The project's QuicksviewerForCausalLM, except that encoding a video of exactly
FAIL_FRAMES frames raises. Registered under the same architecture name, so
SGLang's registry (``SGLANG_EXTERNAL_MODEL_PACKAGE``, overwrite) serves it for the
converted tiny checkpoint; every other video takes the real code path."""

from sglang.srt.models import quicksviewer

FAIL_FRAMES = 17


class QuicksviewerForCausalLM(quicksviewer.QuicksviewerForCausalLM):
    def encode_video(self, frames, pixel_table):
        if frames.shape[0] == FAIL_FRAMES:
            raise RuntimeError(f"test encoder failure on a {FAIL_FRAMES}-frame video")
        return super().encode_video(frames, pixel_table)


EntryClass = QuicksviewerForCausalLM
