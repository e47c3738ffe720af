"""The CUDA kernel selection uses only variants that passed the GPU check, unless asked for.

Note [Verified CUDA kernel variants] (csrc/cuda_variants.h). The selection is host code compiled
into every build, so these tests run without a GPU: they enumerate what a call would run for every
dtype, compute capability, batch class, projection and FUSED_LSTM_CUDA_* setting.
"""

import itertools
import pathlib
import re

import pytest

import fused_lstm
from fused_lstm import _C

RESULTS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "results"
DTYPES = ["float16", "bfloat16", "float32", "float64"]
SM_MAJORS = [7, 8, 9, 10]
BATCHES = [1, 8, 9, 64]


def variants():
    return {v["name"]: v for v in fused_lstm.cuda_kernel_variants()}


def selections():
    """(case, selection) for every combination of call properties."""
    for dtype, sm, batch, proj, tf32 in itertools.product(DTYPES, SM_MAJORS, BATCHES, [False, True],
                                                          [False, True]):
        yield (dtype, sm, batch, proj, tf32), _C.cuda_kernel_selection(dtype, sm, batch, proj, tf32)


@pytest.fixture
def no_opt_in(monkeypatch):
    for name in ("FUSED_LSTM_CUDA_UNVERIFIED", "FUSED_LSTM_CUDA_ALGO", "FUSED_LSTM_CUDA_FP32"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("algo", ["auto", "persistent", "step", "generic"])
@pytest.mark.parametrize("fp32", ["auto", "simt"])
def test_default_selection_picks_only_verified_variants(algo, fp32, no_opt_in, monkeypatch):
    monkeypatch.setenv("FUSED_LSTM_CUDA_ALGO", algo)
    monkeypatch.setenv("FUSED_LSTM_CUDA_FP32", fp32)
    table = variants()
    for case, selection in selections():
        used = selection["forward"] + selection["backward"]
        assert used, case
        unverified = [name for name in used if not table[name]["verified"]]
        # Either everything it would run is verified, or it refuses with a message naming the
        # variant.
        if unverified:
            assert selection["refused"], (case, unverified)
            assert f"FUSED_LSTM_CUDA_UNVERIFIED={unverified[0]}" in selection["refused"]
        else:
            assert selection["refused"] == "", case


def test_default_selection_serves_every_dtype_on_ampere_and_newer(no_opt_in):
    # The GPUs the default build targets (sm_80, sm_90) must have a verified path for every dtype.
    for (dtype, sm, batch, proj, tf32), selection in selections():
        if sm >= 8:
            assert selection["refused"] == "", (dtype, sm, batch, proj, tf32, selection["refused"])


def test_unverified_variants_run_only_when_asked(no_opt_in, monkeypatch):
    # Float32 on tensor cores and the 8-warp tile are unverified today: absent by default ...
    default_f32 = _C.cuda_kernel_selection("float32", 9, 64, False, True)
    default_bf16 = _C.cuda_kernel_selection("bfloat16", 9, 64, False, True)
    assert "float32_tensor_cores" not in default_f32["forward"] + default_f32["backward"]
    assert not default_f32["tensor_cores"]
    assert default_bf16["forward"] == ["forward_mma"] and default_bf16["mma_k_split"] == 1
    # ... selected by name (or all) ...
    monkeypatch.setenv("FUSED_LSTM_CUDA_UNVERIFIED", "float32_tensor_cores,forward_mma_8warp")
    asked_f32 = _C.cuda_kernel_selection("float32", 9, 64, False, True)
    asked_bf16 = _C.cuda_kernel_selection("bfloat16", 9, 64, False, True)
    assert asked_f32["forward"] == ["float32_tensor_cores"] and asked_f32["tensor_cores"]
    assert not asked_f32["split_tf32"]  # TF32, as cudnn.allow_tf32=True asks
    assert _C.cuda_kernel_selection("float32", 9, 64, False, False)["split_tf32"]
    assert asked_bf16["forward"] == ["forward_mma_8warp"] and asked_bf16["mma_k_split"] == 2
    monkeypatch.setenv("FUSED_LSTM_CUDA_UNVERIFIED", "all")
    assert _C.cuda_kernel_selection("float16", 7, 64, False, True)["refused"] == ""
    # ... or, for float32, by FUSED_LSTM_CUDA_FP32=tf32 / 3xtf32.
    monkeypatch.delenv("FUSED_LSTM_CUDA_UNVERIFIED")
    monkeypatch.setenv("FUSED_LSTM_CUDA_FP32", "3xtf32")
    forced = _C.cuda_kernel_selection("float32", 9, 64, False, True)
    assert forced["tensor_cores"] and forced["split_tf32"] and forced["refused"] == ""


def test_unknown_unverified_name_is_rejected(monkeypatch):
    monkeypatch.setenv("FUSED_LSTM_CUDA_UNVERIFIED", "forward_mma,fastest_tile")
    with pytest.raises(ValueError, match="FUSED_LSTM_CUDA_UNVERIFIED.*fastest_tile"):
        _C.cuda_kernel_selection("float32", 9, 64, False, True)


def test_build_info_lists_the_verified_variants():
    table = variants()
    assert fused_lstm.build_info()["cuda_verified_variants"] == [
        name for name, v in table.items() if v["verified"]]
    assert {"forward_mma_8warp", "float32_tensor_cores"}.isdisjoint(
        fused_lstm.build_info()["cuda_verified_variants"])


def test_every_verified_commit_has_committed_gpu_check_results():
    # "Verified at C" must be backed by a committed GPU check of commit C that passed: a
    # benchmarks/results/*-verify.txt whose environment names C and whose tests passed.
    passed_at = {}
    for path in RESULTS.glob("*-verify.txt"):
        text = path.read_text()
        commit = re.search(r"^commit ([0-9a-f]{40})", text, re.M)
        tests = re.search(r"^(\d+) passed(?!.*failed)", text, re.M)
        if commit and tests and "sanitizer" in text:
            passed_at.setdefault(commit.group(1), []).append(path.name)
    for name, v in variants().items():
        if v["verified"]:
            assert v["verified_at"] in passed_at, (name, v["verified_at"], sorted(passed_at))
            assert v["verified_on"], name
        else:
            assert v["verified_at"] is None, name
