"""Run llama.cpp's ``convert_hf_to_gguf.py --remote`` against another Hub endpoint (the fixture Hub).

    HF_ENDPOINT=http://127.0.0.1:PORT python -m bench.reference_remote LLAMA_CPP_DIR org/name --remote ...

The reference's remote mode downloads the small files with huggingface_hub (which honours
``HF_ENDPOINT``) but builds every tensor URL from ``gguf.utility.SafetensorRemote.BASE_DOMAIN``,
hard-coded to ``https://huggingface.co``. This runner imports the reference's own ``gguf-py``, sets
that class attribute to ``$HF_ENDPOINT``, and runs the unmodified script with ``runpy``: a test
harness patch; nothing of the reference is copied or changed.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m bench.reference_remote LLAMA_CPP_DIR [convert_hf_to_gguf.py args ...]")
    llama_cpp_dir = Path(sys.argv[1]).resolve()
    script = llama_cpp_dir / "convert_hf_to_gguf.py"
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/")
    if not script.is_file() or not endpoint:
        sys.exit(f"need {script} and HF_ENDPOINT")
    # The script puts its gguf-py on sys.path itself; doing it first makes our import the same module.
    os.environ.pop("NO_LOCAL_GGUF", None)
    sys.path[:0] = [str(llama_cpp_dir / "gguf-py"), str(llama_cpp_dir)]
    import gguf.utility

    if not str(Path(gguf.utility.__file__).resolve()).startswith(str(llama_cpp_dir)):
        sys.exit(f"imported {gguf.utility.__file__}, not the reference's gguf-py")
    gguf.utility.SafetensorRemote.BASE_DOMAIN = endpoint
    sys.argv = [str(script), *sys.argv[2:]]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
