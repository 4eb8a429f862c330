"""The clips of the time-to-first-token benchmark, for ci/gpu/serving.py.

Not a stage of its own any more: the serving stage runs
benchmarks/bench_video_ttft.py against its one server with these clips and writes
$OUT/ttft.json (clip -> request -> run; the gates' METRICS read it). For a run of
that benchmark alone: ``QSV_SERVING_BENCHES=ttft bash ci/gpu/run.sh serving``.

The warm-up uses a 12 s clip of its own, so the "first" request of every measured
clip is a video the server has not seen (the gates refuse a "first" request served
from the cache).
"""

from common import WORK, write_clips

# clip name in ttft.json -> common.VIDEOS name; "warm" is only the warm-up
CLIPS = {"60f": "60s", "420f_360p": "420s", "420f_720p": "420s_720p"}
WARM = (12, 30.0, 640, 360)  # seconds, fps, width, height


WARM_SEED = 2


def warm_clip_path():
    return WORK / "warm12s.mp4"


def warm_clip():
    path = warm_clip_path()
    if not path.exists():
        write_clips({path: (*WARM, WARM_SEED)})
    return path
