"""The soak (#10), short form: 32 concurrent clients, one round of every kind of
request (benchmarks/soak.py), against the real HTTP server on CPU.

Checked by the soak itself: the server stays healthy, every good request gets the
greedy tokens it gets alone, every bad one a 4xx, dropped streams leave nothing
behind, and the server's resident memory is back within 25% of its warm value.
The longer GPU form is recorded in docs/gpu-runs.md.
"""

from __future__ import annotations

import sys

from tests.helpers.http_server import start_server
from tests.helpers.project import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
import soak  # noqa: E402


def test_soak_short(checkpoints, tmp_path):
    server = start_server(checkpoints.converted("fp32"), tmp_path / "server.log")
    try:
        server.wait_ready()
        cases = soak.build_cases(soak.write_media(tmp_path / "media"), tokens=4)
        kinds = {case.kind for case in cases}
        assert kinds == {"good", "bad", "drop"}
        report = soak.run(
            server.url, cases, clients=32, rounds=1, server_pid=server.proc.pid
        )
        assert report["requests"] == 32 * len(cases)
        assert report["ok"], f"{report}{server.log_tail()}"
        assert report["token_check"] == "exact" and report["token_mismatches"] == 0
    finally:
        server.stop()
