"""The install stage: what ci/gpu/setup.sh installed, and on which host.

run.sh reinstalls the bundle when this stage is asked for (QSV_REINSTALL=1), so
check_imports.py has just written $OUT/imports.json; this records its verdict with
the GPU, the sglang that Python imports and the host's versions. Writes
$OUT/install.json (the gates read ``device``, ``imports`` and ``sglang_version``).
"""

import hashlib
import json
import os
import platform
import sys
from pathlib import Path

import torch
from common import OUT, write_result


def sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main():
    import sglang

    imports_path = OUT / "imports.json"
    imports = None
    if imports_path.exists():
        data = json.loads(imports_path.read_text())
        imports = {"problems": data.get("problems"), "missing": data.get("missing")}
    site = os.environ.get("QSV_SITE", "/tmp/qsv-site")
    bundle = Path(os.environ.get("QSV_BUNDLE", "dist/qsv-wheelhouse-cp312-sm90.tar.xz"))
    cuda = torch.cuda.is_available()
    write_result(
        "install",
        {
            "device": torch.cuda.get_device_name(0) if cuda else None,
            "gpu_count": torch.cuda.device_count() if cuda else 0,
            "capability": list(torch.cuda.get_device_capability(0)) if cuda else None,
            "sglang_version": sglang.__version__,
            "sglang_file": sglang.__file__,
            "sglang_from_site": Path(sglang.__file__)
            .resolve()
            .is_relative_to(Path(site).resolve()),
            "overlay_dev": os.environ.get("QSV_OVERLAY_DEV", "0") == "1",
            "bundle": str(bundle),
            "bundle_sha256": sha256(bundle),
            "imports": imports,
            "setup_s": int(os.environ.get("QSV_SETUP_S", "0")) or None,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "executable": sys.executable,
        },
    )


if __name__ == "__main__":
    main()
