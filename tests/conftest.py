import os
import random

import pytest
import torch

from tests.lstm_testing import cuda_skip_reason, cuda_usable

# An inference call of a CPU layer may run ATen's LSTM where it measures faster (Note [ATen's LSTM
# as a candidate] in csrc/cpu/lstm_cpu.cpp): the suite tests the fused layer unless a test says
# otherwise (tests/test_cpu_layer_choice.py tests the choice and ATen's side of it).
os.environ.setdefault("FUSED_LSTM_CPU_LAYER", "fused")
# Likewise the two directions of a bidirectional CPU layer run one after the other, as each
# direction's own op call would (Note [Concurrent directions on CPU] in
# csrc/cpu/lstm_cpu_directions.cpp): tests/test_cpu_directions.py runs both ways.
os.environ.setdefault("FUSED_LSTM_CPU_DIRECTIONS", "sequential")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "cuda: needs a CUDA GPU and a CUDA build of fused_lstm (skipped otherwise)")
    # nn.LSTM's own chatter; not what these tests are about.
    config.addinivalue_line(
        "filterwarnings", "ignore:dropout option adds dropout after all but last recurrent layer")
    config.addinivalue_line("filterwarnings", "ignore:LSTM with projections is not supported")


def pytest_collection_modifyitems(config, items):
    # Anything marked `cuda` is skipped unless a GPU and a CUDA build are present: the one
    # CUDA-skip mechanism of the suite (mark a test, class or module with pytest.mark.cuda).
    if cuda_usable():
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA GPU and a CUDA build of fused_lstm: "
                                   f"{cuda_skip_reason()}")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    random.seed(0)
    yield


def _tf32_fixture(enabled: bool):
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.fixture
def no_tf32():
    """Full fp32 matmuls/cuDNN for the duration of a test (so fp32 tolerances are meaningful)."""
    yield from _tf32_fixture(False)


@pytest.fixture
def with_tf32():
    """TF32 allowed in cuBLAS and cuDNN (and so in fused_lstm's fp32 recurrence) for a test."""
    yield from _tf32_fixture(True)
