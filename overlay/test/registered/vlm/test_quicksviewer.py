"""Quicksviewer through the offline Engine.

QUICKSVIEWER_MODEL_PATH names a converted checkpoint (model_type "quicksviewer").
The test writes its own mp4 files, so it needs no data set. It checks the
prompt layout the model writes after cubing, the segmentation returned with
return_segments, radix-cache reuse for the same video, greedy determinism, and
clear errors for videos the model cannot use.
"""

import os
import tempfile
import unittest

import cv2
import numpy as np
import torch

import sglang as sgl
from sglang.test.ci.ci_register import register_cuda_ci

register_cuda_ci(est_time=120, suite="stage-b-test-1-gpu-small")

MODEL_PATH = os.environ.get("QUICKSVIEWER_MODEL_PATH", "qijithu/Quicksviewer-8B")
PROMPT = "<|im_start|>user\n<video>\n{}<|im_end|>\n<|im_start|>assistant\n"


def write_video(path: str, seconds: float, fps: float = 30.0) -> None:
    """A moving disc on a changing background, so frames differ."""
    width, height = 96, 64
    writer = cv2.VideoWriter(
        path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height)
    )
    for i in range(int(round(seconds * fps))):
        t = i / fps
        frame = np.full((height, width, 3), (int(t * 40) % 256, 90, 160), np.uint8)
        center = (int(t * 17) % width, height // 2)
        cv2.circle(frame, center, 10 + int(t) % 8, (255, 255, 255), -1)
        writer.write(frame)
    writer.release()


class TestQuicksviewerEngine(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.video = os.path.join(cls.tmp.name, "clip.mp4")
        write_video(cls.video, seconds=12)
        cls.other_video = os.path.join(cls.tmp.name, "other.mp4")
        write_video(cls.other_video, seconds=9, fps=25)
        if torch.cuda.is_available():
            device_args = dict(dtype="bfloat16", mm_attention_backend="sdpa")
        else:
            device_args = dict(
                device="cpu",
                attention_backend="torch_native",
                dtype="float32",
                mm_attention_backend="sdpa",
            )
        cls.engine = sgl.Engine(
            model_path=MODEL_PATH, max_total_tokens=16384, **device_args
        )
        cls.tokenizer = cls.engine.tokenizer_manager.tokenizer

    @classmethod
    def tearDownClass(cls):
        cls.engine.shutdown()
        cls.tmp.cleanup()

    def generate(self, video, **kwargs):
        return self.engine.generate(
            prompt=PROMPT.format("Describe the video."),
            video_data=[video],
            sampling_params={"temperature": 0, "max_new_tokens": 8},
            **kwargs,
        )

    def token_id(self, token: str) -> int:
        return self.tokenizer.convert_tokens_to_ids(token)

    def test_prompt_layout_after_cubing(self):
        out = self.generate(self.video, return_logprob=True, logprob_start_len=0)
        # visual positions carry hash pad values, which SGLang reports as 0
        ids = [t[1] for t in out["meta_info"]["input_token_logprobs"]]
        start = ids.index(self.token_id("<video_start>"))
        end = ids.index(self.token_id("<video_end>"))
        self.assertEqual(ids[start + 1], self.token_id("<thumbnail_start>"))
        self.assertEqual(ids[start + 2 : start + 66], [0] * 64)
        # 12 s at 1 fps = 12 frames -> max(round(12/5)-1, 1) + 1 = 2 cubes; each
        # cube is the timestamp of its first frame + 64 visual positions, and
        # only the first frame's timestamp is known in advance.
        cubes = ids[start + 67 : end]
        first = self.tokenizer.encode("0.5", add_special_tokens=False)
        self.assertEqual(cubes[: len(first)], first)
        self.assertEqual(cubes[len(first) : len(first) + 64], [0] * 64)
        rest = cubes[len(first) + 64 :]
        second, visual = rest[:-64], rest[-64:]
        self.assertEqual(visual, [0] * 64)
        # the second cube starts at a later frame, shown at the middle of its second
        self.assertIn(self.tokenizer.decode(second), [f"{s}.5" for s in range(1, 12)])

    def test_same_video_reuses_cache_and_is_deterministic(self):
        first = self.generate(self.video)
        second = self.generate(self.video)
        self.assertEqual(first["output_ids"], second["output_ids"])
        self.assertGreater(second["meta_info"]["cached_tokens"], 64)
        other = self.generate(self.other_video)
        # the prefix before the first visual token is all the videos share
        self.assertLess(other["meta_info"]["cached_tokens"], 8)

    def test_return_segments(self):
        plain = self.generate(self.video, return_logprob=True, logprob_start_len=0)
        self.assertNotIn("segments", plain["meta_info"])
        out = self.generate(self.video, return_segments=True)
        self.assertEqual(out["output_ids"], plain["output_ids"])
        (segments,) = out["meta_info"]["segments"]
        self.assertEqual(segments["timestamps"], [s + 0.5 for s in range(12)])
        # 2 cubes covering the 12 frames in order
        cubes = segments["cubes"]
        self.assertEqual(len(cubes), 2)
        self.assertEqual(cubes[0]["start_frame"], 0)
        self.assertEqual(cubes[0]["end_frame"], cubes[1]["start_frame"])
        self.assertEqual(cubes[1]["end_frame"], 12)
        for cube in cubes:
            times = segments["timestamps"]
            self.assertEqual(cube["start_s"], times[cube["start_frame"]])
            self.assertEqual(cube["end_s"], times[cube["end_frame"] - 1])
        # the second cube starts where the prompt layout says: after the
        # thumbnail, cube 1's timestamp + 64 positions, then cube 2's timestamp
        ids = [t[1] for t in plain["meta_info"]["input_token_logprobs"]]
        start = ids.index(self.token_id("<video_start>"))
        end = ids.index(self.token_id("<video_end>"))
        first = self.tokenizer.encode("0.5", add_special_tokens=False)
        second = ids[start + 67 + len(first) + 64 : end - 64]
        self.assertEqual(self.tokenizer.decode(second), str(cubes[1]["start_s"]))
        # segmentation only: no token generated
        only = self.engine.generate(
            prompt=PROMPT.format("Describe the video."),
            video_data=[self.video],
            sampling_params={"temperature": 0, "max_new_tokens": 0},
            return_segments=True,
        )
        self.assertEqual(only["output_ids"], [])
        self.assertEqual(only["meta_info"]["segments"], [segments])
        with self.assertRaisesRegex(ValueError, "return_segments"):
            self.generate(self.video, return_segments="yes")

    def test_unusable_videos_fail_clearly(self):
        corrupt = os.path.join(self.tmp.name, "corrupt.mp4")
        with open(corrupt, "wb") as f:
            f.write(os.urandom(4096))
        one_frame = os.path.join(self.tmp.name, "one_frame.mp4")
        write_video(one_frame, seconds=1)
        for video, message in ((corrupt, "decode"), (one_frame, "2 frames")):
            with self.assertRaisesRegex(ValueError, message):
                self.generate(video)
        # the engine keeps serving
        self.assertTrue(self.generate(self.video)["output_ids"])


if __name__ == "__main__":
    unittest.main()
