"""Randomized differential testing: fused_lstm.LSTM against torch.nn.LSTM over 512 seeded random
configs (tests/differential.py says what a config covers and how results are compared), in CI
in about half a minute. benchmarks/fuzz_differential.py runs thousands more, off CI and on CUDA.
"""
import importlib.util
import os

import pytest
import torch

from tests.differential import MODES, draw_config, run_config

CI_CONFIGS, CHUNKS = 512, 8
PER_CHUNK = CI_CONFIGS // CHUNKS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def assert_all_match(seeds, device="cpu", **draw):
    failures = {}
    for seed in seeds:
        cfg = draw_config(seed, **draw)
        problems = run_config(cfg, device=device)
        if problems:
            failures[str(cfg)] = problems
    assert not failures, (
        f"{len(failures)} of {len(seeds)} configs differ from nn.LSTM:\n"
        + "\n".join(
            f"{cfg}\n    " + "\n    ".join(problems[:5]) for cfg, problems in failures.items()
        )
    )


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_random_configs_match_nn_lstm(chunk):
    assert_all_match(range(chunk * PER_CHUNK, (chunk + 1) * PER_CHUNK))


def test_ci_configs_cover_the_space():
    """The 512 CI configs reach every value of every axis (so a regression in any is seen)."""
    cfgs = [draw_config(seed) for seed in range(CI_CONFIGS)]
    axes = dict(layers={1, 2, 3}, bias={True, False}, batch_first={True, False},
                bidirectional={True, False}, mode=set(MODES), with_state={True, False},
                dtype={torch.float64, torch.float32, torch.bfloat16}, train={True, False},
                input_grad={True, False}, strided={True, False}, T=set(range(1, 7)),
                B=set(range(1, 5)), I=set(range(1, 9)), H=set(range(1, 9)))
    for axis, values in axes.items():
        assert {getattr(c, axis) for c in cfgs} == values, axis
    assert {bool(c.proj_size) for c in cfgs} == {True, False}
    assert {bool(c.frozen) for c in cfgs} == {True, False}
    assert sum(c.dtype == torch.float64 for c in cfgs) > CI_CONFIGS // 2


def test_a_config_is_reproducible_from_its_seed():
    assert str(draw_config(1234)) == str(draw_config(1234))
    assert str(draw_config(1234)) != str(draw_config(1235))


def test_fuzz_script_reports_counts(capsys):
    spec = importlib.util.spec_from_file_location(
        "fuzz_differential", os.path.join(ROOT, "benchmarks", "fuzz_differential.py"))
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    assert fuzz.main(["--count", "4", "--seed", "7", "--dtypes", "float64,float16"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "tried 4 configs" in line and "0 mismatches" in line, line


@pytest.mark.cuda
def test_random_configs_match_nn_lstm_cuda(no_tf32):
    dtypes = ((torch.float64, 4), (torch.float32, 3), (torch.bfloat16, 2), (torch.float16, 1))
    assert_all_match(range(10_000, 10_256), device="cuda", dtypes=dtypes)
