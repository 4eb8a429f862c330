"""The offline bundle for the GPU host (``make wheelhouse``; docs/gpu.md).

* ``requirements.txt``: the third-party wheels, in pip's hash-checking format;
* ``bundle.toml``: the download target, the GPU host's own packages, the slimming;
* ``lock.py``: reads both, downloads with ``pip download --require-hashes``, and
  rewrites the hashes on purpose (``python -m tools wheelhouse lock``);
* ``bundle.py``: re-packs the wheels into one tar.xz and checks a built one;
* ``install.sh``, ``check_imports.py``: shipped inside the bundle, run on the host.
"""
