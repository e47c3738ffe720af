"""The torch-free CUDA kernel sources (csrc/kernels/*.cu) compile with plain nvcc for sm_90.

Skipped when nvcc is not installed. Prints ptxas' register/spill report (see it with `pytest -s`).
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KERNELS = REPO / "csrc" / "kernels"
TIMEOUT_S = 240


def find_nvcc():
    p = shutil.which("nvcc")
    if p:
        return p
    for cand in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if cand and os.access(os.path.join(cand, "bin", "nvcc"), os.X_OK):
            return os.path.join(cand, "bin", "nvcc")
    return None


NVCC = find_nvcc()
pytestmark = pytest.mark.skipif(
    NVCC is None, reason="nvcc not found (PATH, $CUDA_HOME, /usr/local/cuda)"
)

CU_FILES = sorted(KERNELS.glob("*.cu"))


def test_kernel_sources_present():
    assert (KERNELS / "nvcc_check.cu").is_file(), "csrc/kernels/nvcc_check.cu is missing"


@pytest.mark.parametrize("src", CU_FILES, ids=[p.name for p in CU_FILES])
def test_nvcc_compiles(src, tmp_path):
    cmd = [NVCC, "-c", "-std=c++17", "-arch=sm_90", "-Xptxas", "-v",
           "-I", str(REPO / "csrc"), "-o", str(tmp_path / "x.o"), str(src)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"nvcc took more than {TIMEOUT_S}s on {src.name}")
    report = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines()
              if "registers" in ln or "spill" in ln or "Compiling entry function" in ln]
    print(f"\n== {src.relative_to(REPO)}: ptxas report")
    print("\n".join(report) if report else "(no kernels reported)")
    assert proc.returncode == 0, (
        f"nvcc failed on {src.relative_to(REPO)} (rc={proc.returncode}):\n{' '.join(cmd)}\n"
        f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    assert (tmp_path / "x.o").stat().st_size > 0
    # torch-free: the kernel sources must not include torch/ATen headers
    text = src.read_text(errors="replace")
    for bad in ("#include <torch/", "#include <ATen/", "#include <c10/", '#include "torch/',
                '#include "ATen/'):
        assert bad not in text, f"{src.name} includes {bad!r}: kernel sources must be torch-free"


def test_verified_kernels_compile_as_they_were_checked_on_a_gpu(tmp_path):
    # Note [Verified CUDA kernel variants]: a variant marked verified must still be the code that
    # passed the GPU check. Each of its kernels' PTX must match the fingerprint recorded then.
    import json

    import fused_lstm
    from tests.verified_kernels import FINGERPRINTS, kernel_fingerprints, nvcc_version, variant_of

    recorded = json.loads(FINGERPRINTS.read_text())
    if nvcc_version(NVCC) != recorded["nvcc"]:
        pytest.skip(
            f"fingerprints were recorded with nvcc {recorded['nvcc']}, this is {nvcc_version(NVCC)}"
        )
    verified = {v["name"] for v in fused_lstm.cuda_kernel_variants() if v["verified"]}
    checked = 0
    for name, (demangled, sha) in kernel_fingerprints(NVCC, tmp_path).items():
        variant = variant_of(demangled)
        if variant not in verified:
            continue
        assert name in recorded["kernels"], (
            f"{demangled} belongs to the verified variant {variant} but was not part of its GPU "
            "check"
        )
        assert recorded["kernels"][name]["sha256"] == sha, (
            f"{demangled} changed since the GPU check that verified {variant}: revert the change, "
            f"or mark {variant} unverified in csrc/cuda_variants.cpp until a GPU check passes again"
        )
        checked += 1
    assert checked == len(recorded["kernels"]), "a fingerprinted kernel is no longer compiled"
