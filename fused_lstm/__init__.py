"""fused_lstm: fused CPU/CUDA LSTM kernels for PyTorch, and a drop-in ``torch.nn.LSTM``.

Importing the package loads the compiled extension ``fused_lstm._C`` (there is no pure-Python
fallback: an import error here means the extension was not built; see README.md).
"""

import torch

from . import (
    _C,
    _ops,  # noqa: F401  (registers the fake kernels)
    onnx,  # noqa: F401  (fused_lstm.onnx.export; imports onnxscript only when used)
)
from .cell import LSTMCell
from .convert import convert, revert
from .functional import LSTMLayerFunction, lstm_layer
from .modules import LSTM
from .reference import lstm_layer_reference

__all__ = ["LSTM", "LSTMCell", "LSTMLayerFunction", "build_info", "convert", "cpu_kernel_choices",
           "cuda_kernel_variants", "lstm_layer", "lstm_layer_reference", "revert"]
__version__ = "0.1.0"


def build_info() -> dict:
    """How the extension was built (CUDA or not, and why; arch list; versions) and which build
    of the CPU kernels runs on this machine."""
    info = dict(_C.build_info())
    info["torch_version"] = torch.__version__
    info["cuda_version"] = torch.version.cuda
    info["cpu_instruction_set"] = _C.cpu_instruction_set()
    info["cpu_recurrent_gemms"] = _C.cpu_recurrent_gemms()
    info["cuda_verified_variants"] = [v["name"] for v in _C.cuda_kernel_variants() if v["verified"]]
    return info


def cpu_kernel_choices() -> list:
    """The CPU GEMM kernels chosen so far in this process: per shape class (kind, sizes, dtype,
    threads), which kernel serves it and how it was chosen (the timings measured on this host at
    the first call of that class, or the environment variable that pinned it).
    ``FUSED_LSTM_CPU_GEMM=aten|onednn`` pins the big GEMMs, ``FUSED_LSTM_CPU_RECURRENT_GEMM=
    mkl_packed|brgemm`` the per-step recurrent products. Inference layers ("layer ..." classes)
    run the fused layer or ATen's LSTM, whichever measured faster (``FUSED_LSTM_CPU_LAYER=
    fused|aten_lstm`` pins it)."""
    return [dict(c) for c in _C.cpu_kernel_choices()]


def cuda_kernel_variants() -> list:
    """Every CUDA kernel variant: name, description, whether it has passed the GPU check (CUDA
    tests and compute-sanitizer), at which commit and on which GPU. By default only verified
    variants run; ``FUSED_LSTM_CUDA_UNVERIFIED=name[,name...]`` (or
    ``all``) allows others."""
    return [dict(v) for v in _C.cuda_kernel_variants()]
