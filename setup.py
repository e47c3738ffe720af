"""Build fused_lstm._C ahead of time with torch.utils.cpp_extension.

CUDA sources are compiled when torch itself is a CUDA build (torch.version.cuda is set) and nvcc
is found; no GPU is needed to build. Otherwise, or with FUSED_LSTM_FORCE_CPU=1, a CPU-only
extension is built and one line says why. Install with `pip install --no-build-isolation .`:
building in an isolated environment would compile against a different torch than the one that
runs it.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

try:
    import torch
except ModuleNotFoundError:
    # pip's default build runs in an isolated environment without the installed torch; building
    # against another torch would give an extension that does not load with the user's.
    sys.exit(
        "fused_lstm: the build needs the torch you will run it with, and cannot see one.\n"
        "  1. install PyTorch first (https://pytorch.org), e.g.  pip install torch\n"
        "  2. then build without build isolation:  pip install --no-build-isolation .\n"
        "(a plain `pip install .` builds in an isolated environment, without your torch).")
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def read_version() -> str:
    """fused_lstm/__init__.py's __version__, the one place the version is written (read as text:
    importing the package would need the extension this script builds)."""
    with open(os.path.join(ROOT, "fused_lstm", "__init__.py")) as f:
        match = re.search(r'^__version__ = "([^"]+)"$', f.read(), re.MULTILINE)
    if not match:
        raise RuntimeError("fused_lstm/__init__.py: no __version__ = \"...\" line")
    return match.group(1)


def nvcc_version(nvcc: str) -> str | None:
    """'13.0' from `nvcc --version` ("... release 13.0, V13.0.88"), or None if it cannot tell."""
    try:
        text = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"release (\d+)\.(\d+)", text)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def check_cuda_versions(nvcc: str) -> None:
    """Fails the build, saying what to do, when nvcc's CUDA major version differs from the one
    torch was built with: the extension would not load (or not link) against that torch."""
    found = nvcc_version(nvcc)
    wanted = torch.version.cuda
    if found is None or found.split(".")[0] == wanted.split(".")[0]:
        return
    sys.exit(
        f"fused_lstm: nvcc at {nvcc} is CUDA {found}, but torch {torch.__version__} was built with "
        f"CUDA {wanted}. Either point CUDA_HOME at a CUDA {wanted.split('.')[0]}.x toolkit, install "
        f"a torch built for CUDA {found.split('.')[0]}.x, or build without CUDA: "
        f"FUSED_LSTM_FORCE_CPU=1 pip install --no-build-isolation .")


def cuda_build_decision():
    """Returns (build_cuda, reason). The reason ends up in fused_lstm.build_info()."""
    if os.environ.get("FUSED_LSTM_FORCE_CPU", "0") == "1":
        return False, "FUSED_LSTM_FORCE_CPU=1"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is a CPU-only build"
    nvcc = os.path.join(CUDA_HOME, "bin", "nvcc") if CUDA_HOME else shutil.which("nvcc")
    if not nvcc or not os.path.exists(nvcc):
        return False, "nvcc not found (set CUDA_HOME)"
    check_cuda_versions(nvcc)
    return True, f"torch CUDA {torch.version.cuda}, nvcc at {nvcc}"


def openmp_parallel_for():
    """Whether to compile the C++ sources with -fopenmp.

    at::parallel_for is a header template whose body is `#pragma omp parallel` when torch's
    parallel backend is OpenMP: compiled without -fopenmp, the pragma is dropped and every
    at::parallel_for in this extension runs on one thread (measured: the CPU step loops used one
    of two cores). The extension then links libgomp.so.1, which resolves to the copy torch has
    already loaded (same soname), so there is one OpenMP runtime in the process. Linux with
    GCC/Clang only (Apple's clang has no -fopenmp; MSVC spells it differently)."""
    if not sys.platform.startswith("linux") or not torch.backends.openmp.is_available():
        return False
    return "OpenMP" in torch.__config__.parallel_info()


def main():
    build_cuda, reason = cuda_build_decision()
    if build_cuda and not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        # No GPU to detect the arch from: build for Ampere and Hopper.
        os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
    print(f"fused_lstm: {'CUDA' if build_cuda else 'CPU-only'} build ({reason})", file=sys.stderr)

    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    # Per-ISA objects link last, so that the baseline copy of any inline function they share
    # with other objects is the one the linker keeps (Note [CPU instruction sets]).
    sources.sort(key=lambda path: path.endswith(("_avx2.cpp", "_avx512.cpp")))
    macros = [
        ("FUSED_LSTM_BUILD_REASON", '"' + reason.replace('"', "'") + '"'),
        ("FUSED_LSTM_ARCH_LIST", '"' + os.environ.get("TORCH_CUDA_ARCH_LIST", "") + '"'),
    ]
    # Release builds carry no debug info (Python's own CFLAGS add -g: a 17 MB extension instead of
    # a few MB); FUSED_LSTM_DEBUG=1 keeps it.
    debug = os.environ.get("FUSED_LSTM_DEBUG", "0") == "1"
    cxx_flags = ["-O3", "-std=c++17", "-g" if debug else "-g0"]
    link_flags = []
    if openmp_parallel_for():
        cxx_flags.append("-fopenmp")
        link_flags.append("-fopenmp")
    if build_cuda:
        sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        macros.append(("FUSED_LSTM_WITH_CUDA", "1"))
        nvcc_flags = ["-O3", "-std=c++17", "-lineinfo"]
        ext = CUDAExtension(
            "fused_lstm._C", sources, define_macros=macros,
            include_dirs=[os.path.join(ROOT, "csrc")],
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags}, extra_link_args=link_flags,
        )
    else:
        ext = CppExtension(
            "fused_lstm._C", sources, define_macros=macros,
            include_dirs=[os.path.join(ROOT, "csrc")],
            extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags,
        )

    setup(
        # name, description, python_requires, dependencies: pyproject.toml's [project] table.
        version=read_version(),
        packages=find_packages(include=["fused_lstm", "fused_lstm.*"]),
        ext_modules=[ext],
        cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    )


if __name__ == "__main__":
    main()
