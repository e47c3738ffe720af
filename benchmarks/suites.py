"""What the benchmark runs: the implementations compared (--impls), the configs (Config) and the
suites of configs (--suite), and the modes and dtypes a row can have."""
from __future__ import annotations

import dataclasses
import os

import torch

MODES = ("inference", "forward", "fwdbwd")
DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
ALGO_ENV = "FUSED_LSTM_CUDA_ALGO"


# ----------------------------------------------------------------------------- implementations

@dataclasses.dataclass(frozen=True)
class Impl:
    name: str  # key in the JSON
    label: str  # table header
    model: str  # which module runs it: "nn", "fused" or "reference"
    env: tuple[tuple[str, str], ...] = ()  # environment set while it runs
    cuda_only: bool = False


IMPLS = {
    "nn": Impl("nn", "nn.LSTM", "nn"),
    "fused": Impl("fused", "fused", "fused"),
    "fused_persistent": Impl("fused_persistent", "fused[persistent]", "fused",
                             ((ALGO_ENV, "persistent"),), cuda_only=True),
    "fused_step": Impl("fused_step", "fused[step]", "fused", ((ALGO_ENV, "step"),),
                       cuda_only=True),
    "fused_generic": Impl("fused_generic", "fused[generic]", "fused", ((ALGO_ENV, "generic"),),
                          cuda_only=True),
    "reference": Impl("reference", "reference", "reference"),
}


def default_impls(device: torch.device, suite: str) -> list[str]:
    if device.type != "cuda":
        return ["nn", "fused", "reference"]
    if suite == "gpu" or os.environ.get(ALGO_ENV):
        # gpu: the suite of benchmarks/gpu_check.sh, kept as it was for its time box (the script
        # runs it a second time with FUSED_LSTM_CUDA_ALGO=step). An algorithm chosen in the
        # environment is respected: `fused` then runs it, and no variant overrides it.
        return ["nn", "fused"]
    return ["nn", "fused", "fused_persistent", "fused_step", "reference"]


# ----------------------------------------------------------------------------- configs and suites

@dataclasses.dataclass
class Config:
    T: int  # sequence length
    B: int  # batch size
    I: int  # noqa: E741  (input size: the T,B,I,H of --config, the rows' JSON keys and the docs)
    H: int  # hidden size
    layers: int = 1
    bidirectional: bool = False
    proj_size: int = 0
    dtype: str = "float32"
    tf32: bool | None = None  # None: leave torch's setting; True/False: set it for this config
    packed: tuple[int, int] | None = None  # lengths uniform in [lo, hi) when set
    modes: tuple[str, ...] = MODES
    group: str = ""  # what part of the suite it belongs to (plots and tables group by it)

    @property
    def name(self) -> str:
        s = f"T={self.T} B={self.B} I={self.I} H={self.H}"
        if self.layers != 1:
            s += f" L={self.layers}"
        if self.bidirectional:
            s += " bidir"
        if self.proj_size:
            s += f" P={self.proj_size}"
        if self.packed:
            s += f" packed len[{self.packed[0]},{self.packed[1]})"
        return s

    @property
    def dtype_label(self) -> str:
        if self.tf32 is None:
            return self.dtype
        return f"{self.dtype} tf32={'on' if self.tf32 else 'off'}"


def _fp32(cuda: bool, tf32: bool = False) -> dict:
    """float32; on CUDA with TF32 set explicitly (nn.LSTM's cuDNN and all cuBLAS GEMMs)."""
    return {"dtype": "float32", "tf32": tf32 if cuda else None}


def quick_suite(cuda: bool) -> list[Config]:
    return [
        Config(T=100, B=64, I=512, H=512, group="quick"),
        Config(T=100, B=1, I=128, H=128, group="quick"),
        Config(T=50, B=16, I=256, H=256, group="quick"),
        Config(T=50, B=16, I=256, H=256, dtype="bfloat16", group="quick"),
    ]


def gpu_suite(cuda: bool) -> list[Config]:
    # Kept as it was: benchmarks/gpu_check.sh runs it twice inside 100 s + 80 s time boxes.
    return [
        Config(T=100, B=64, I=512, H=512, dtype="float32", tf32=False),
        Config(T=100, B=64, I=512, H=512, dtype="float32", tf32=True),
        Config(T=100, B=64, I=512, H=512, dtype="float16"),
        Config(T=100, B=64, I=512, H=512, dtype="bfloat16"),
        Config(T=100, B=1, I=128, H=128, dtype="float32", tf32=False),
        Config(T=50, B=16, I=256, H=256, dtype="float32", tf32=False),
        Config(T=1024, B=16, I=768, H=768, dtype="bfloat16"),
        Config(T=1000, B=1, I=256, H=256, dtype="float32", tf32=False,
               modes=("inference", "forward")),
        Config(T=100, B=64, I=512, H=512, dtype="float32", tf32=False, packed=(30, 100)),
    ]


# The long-sequence config of the standard suite; on CPU T is cut (its nn.LSTM fwdbwd alone
# would take ~2 s a call at T=1024 on 2 cores, x3 implementations x ~10 calls x 3 modes).
LONG_T_CPU = 256


def standard_suite(cuda: bool) -> list[Config]:
    """PyTorch's fastrnns LSTM config (T=100 B=64 I=H=512: 1 layer, 3 layers, bidirectional),
    small-batch latency (B in {1,4,16} x H in {128,256,512}, T=100, I=H), a long sequence
    (B=16 I=H=768, T=1024 and 128; on CPU T=256 and 64) and, on GPU only, a large one
    (T=256 B=256 I=H=1024)."""
    out: list[Config] = []
    fast = dict(T=100, B=64, I=512, H=512, group="fastrnns")
    if cuda:
        out += [Config(**fast, **_fp32(cuda, False)), Config(**fast, **_fp32(cuda, True)),
                Config(**fast, dtype="float16"), Config(**fast, dtype="bfloat16")]
        for extra in ({"layers": 3}, {"bidirectional": True}):
            out += [Config(**fast, **extra, **_fp32(cuda, False)),
                    Config(**fast, **extra, dtype="bfloat16")]
    else:
        out += [Config(**fast), Config(**fast, dtype="bfloat16"), Config(**fast, layers=3),
                Config(**fast, bidirectional=True)]
    for B in (1, 4, 16):
        for H in (128, 256, 512):
            out.append(Config(T=100, B=B, I=H, H=H, group="small-batch", **_fp32(cuda, False)))
    if not cuda:
        out.append(Config(T=100, B=16, I=256, H=256, dtype="bfloat16", group="small-batch"))
    # The long config at a second, shorter T too, so that the time-per-step-vs-T plot has a line.
    if cuda:
        long = dict(B=16, I=768, H=768, group="long")
        out += [Config(T=1024, **long, dtype="bfloat16"),
                Config(T=1024, **long, **_fp32(cuda, False)),
                Config(T=128, **long, dtype="bfloat16")]
        large = dict(T=256, B=256, I=1024, H=1024, group="large")
        out += [Config(**large, dtype="bfloat16"), Config(**large, **_fp32(cuda, True)),
                Config(**large, **_fp32(cuda, False))]
    else:
        out += [Config(T=LONG_T_CPU, B=16, I=768, H=768, group="long"),
                Config(T=64, B=16, I=768, H=768, group="long")]
    return out


def packed_suite(cuda: bool) -> list[Config]:
    """PackedSequence input, B=64, lengths uniform in [30, 100) (T = the longest = 99); nn.LSTM
    gets the same PackedSequence."""
    p = dict(T=99, B=64, packed=(30, 100), group="packed")
    if cuda:
        return [Config(**p, I=512, H=512, **_fp32(cuda, False)),
                Config(**p, I=512, H=512, **_fp32(cuda, True)),
                Config(**p, I=512, H=512, dtype="bfloat16"),
                Config(**p, I=512, H=512, dtype="float16"),
                Config(**p, I=512, H=512, layers=2, bidirectional=True, dtype="bfloat16"),
                Config(**p, I=1024, H=1024, dtype="bfloat16")]
    return [Config(**p, I=512, H=512), Config(**p, I=256, H=256),
            Config(**p, I=512, H=512, dtype="bfloat16"),
            Config(**p, I=256, H=256, layers=2, bidirectional=True)]


def sweep_suite(cuda: bool) -> list[Config]:
    """B x H at T=100, I=H (speedup vs H plots), and T in {10..1000} at B=16 I=H=256 (time per
    step vs T plots)."""
    Bs = (1, 4, 16, 64, 256) if cuda else (1, 4, 16, 64)
    Hs = (128, 256, 512, 1024)
    dtypes = [{"dtype": "bfloat16"}, _fp32(cuda, False)] if cuda else [_fp32(cuda)]
    out = [Config(T=100, B=B, I=H, H=H, group="sweep-BH", **d)
           for d in dtypes for B in Bs for H in Hs]
    out += [Config(T=T, B=16, I=256, H=256, group="sweep-T", **d)
            for d in dtypes for T in (10, 30, 100, 300, 1000)]
    return out


def tiny_suite(cuda: bool) -> list[Config]:
    """Seconds-long smoke test (tests/test_benchmark_cli.py): two H and two T at one B, and a
    packed bidirectional 2-layer config."""
    return [Config(T=4, B=2, I=8, H=8, group="tiny"), Config(T=4, B=2, I=16, H=16, group="tiny"),
            Config(T=8, B=2, I=8, H=8, group="tiny"),
            Config(T=6, B=3, I=8, H=8, layers=2, bidirectional=True, packed=(2, 7),
                   group="tiny")]


SUITES = {"quick": quick_suite, "standard": standard_suite, "packed": packed_suite,
          "sweep": sweep_suite, "gpu": gpu_suite, "tiny": tiny_suite}
PUBLIC_SUITES = ["quick", "standard", "packed", "sweep", "gpu"]  # tiny: for the tests
SUITE_HELP = {
    "quick": "default on CPU, ~1 min on 2 cores: T=100 B=64 H=512, T=100 B=1 H=128, "
             "T=50 B=16 H=256 (float32 and bfloat16)",
    "standard": "fastrnns T=100 B=64 I=H=512 (1 layer, 3 layers, bidir); B in {1,4,16} x "
                "H in {128,256,512} at T=100; B=16 H=768 at T=1024,128 (CPU: 256,64); GPU "
                "only: T=256 B=256 H=1024. ~6 min on a 2-core CPU",
    "packed": "PackedSequence, B=64, lengths uniform in [30,100), H 256..1024, 1 and 2 "
              "bidirectional layers",
    "sweep": "B x H grid at T=100 (speedup-vs-H plots) and T in 10..1000 at B=16 H=256 "
             "(time-per-step-vs-T plots); long",
    "gpu": "default on CUDA: the suite of benchmarks/gpu_check.sh (nn and fused only, sized "
           "for its time box)",
}
