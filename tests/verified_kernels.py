"""PTX fingerprints of the CUDA kernels that have passed the GPU check (Note [Verified CUDA kernel
variants] in csrc/cuda_variants.h): what tests/test_nvcc_compile.py checks, and how to record them.

A kernel's fingerprint is the SHA-256 of its PTX (`nvcc -ptx -arch=sm_90` of
csrc/kernels/nvcc_check.cu) with source line info and label numbers left out, so that moving code
around the file does not change it but any change to what the kernel does does.

Recording (after a GPU check passed at the current commit, with the nvcc that VERIFIED_PTX names):
    python3 tests/verified_kernels.py > tests/verified_kernels_ptx.json
"""
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FINGERPRINTS = Path(__file__).resolve().parent / "verified_kernels_ptx.json"

# Which variant each kernel belongs to (csrc/cuda_variants.cpp's names), from its demangled name.
KERNEL_VARIANTS = [
    (
        r"lstm_forward_(step_simt|persistent)<(__half|__nv_bfloat16), float(, 0)?>",
        "forward_simt_half",
    ),
    (
        r"lstm_forward_(step_splitk|persistent)<(__half|__nv_bfloat16), float, 3>|"
        r"lstm_forward_step_splitk<(__half|__nv_bfloat16)",
        "forward_simt_half",
    ),
    (r"lstm_forward_(step_simt<|persistent<(float|double), (float|double), 0>)", "forward_simt"),
    (
        r"lstm_forward_(step_splitk<|persistent<(float|double), (float|double), 3>)",
        "forward_splitk",
    ),
    (r"lstm_forward_(step_mma<|persistent<(__half|__nv_bfloat16), float, [12]>)", "forward_mma"),
    (r"lstm_forward_(step_mma8|persistent_mma8)<(__half|__nv_bfloat16)", "forward_mma_8warp"),
    (
        r"lstm_forward_(step_mma8|persistent_mma8)<float|lstm_backward_persistent_mma_tf32",
        "float32_tensor_cores",
    ),
    (r"lstm_backward_persistent_mma<", "backward_mma"),
    (r"lstm_backward_(step|persistent)<", "backward_simt"),
    (r"lstm_backward_pointwise<", "backward_generic"),
]


def variant_of(demangled):
    for pattern, variant in KERNEL_VARIANTS:
        if re.search(pattern, demangled):
            return variant
    raise KeyError(f"no variant for kernel {demangled}")


def nvcc_version(nvcc):
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout
    return re.search(r"release [\d.]+, V[\d.]+", out).group(0)


def kernel_fingerprints(nvcc, out_dir):
    """{mangled kernel name: (demangled, sha256)} of every kernel nvcc_check.cu instantiates."""
    ptx = Path(out_dir) / "kernels.ptx"
    subprocess.run(
        [
            nvcc,
            "-ptx",
            "-std=c++17",
            "-arch=sm_90",
            "-I",
            str(REPO / "csrc"),
            "-o",
            str(ptx),
            str(REPO / "csrc" / "kernels" / "nvcc_check.cu"),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    text = ptx.read_text()
    names = re.findall(r"\.visible \.entry (\S+)\(", text)
    demangled = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True,
                               check=True).stdout.splitlines()
    result = {}
    for match in re.finditer(r"\.visible \.entry (\S+)\(.*?\n\}\n", text, re.S):
        name = match.group(1)
        body = match.group(0).replace(name, "KERNEL")
        body = re.sub(r"^\s*\.loc.*\n", "", body, flags=re.M)  # source line info
        body = re.sub(r"\$L__\w+", "L", body)                   # label numbering
        result[name] = (demangled[names.index(name)], hashlib.sha256(body.encode()).hexdigest())
    return result


def main():
    import shutil
    import tempfile
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    verified = set(json.loads(sys.argv[1])) if len(sys.argv) > 1 else None
    with tempfile.TemporaryDirectory() as tmp:
        prints = kernel_fingerprints(nvcc, tmp)
    kernels = {name: {"kernel": d, "variant": variant_of(d), "sha256": h}
               for name, (d, h) in sorted(prints.items())
               if verified is None or variant_of(d) in verified}
    json.dump(
        {"nvcc": nvcc_version(nvcc), "arch": "sm_90", "kernels": kernels}, sys.stdout, indent=1
    )
    print()


if __name__ == "__main__":
    main()
