"""Where a benchmark ran: host, device, threads, versions, commit and fused_lstm's build, as the
result files record it and the runs print it."""
from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess

import torch

import fused_lstm

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def git_commit() -> str:
    """HEAD (with -dirty when tracked files changed); in a copy of the tree without git metadata
    (e.g. on a device machine) $FUSED_LSTM_GIT_COMMIT when set, else "unknown"."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return os.environ.get("FUSED_LSTM_GIT_COMMIT") or "unknown"


def safe_kernel_choices() -> list:
    """fused_lstm.cpu_kernel_choices(), or [] where fused_lstm cannot be imported."""
    try:
        return list(fused_lstm.cpu_kernel_choices())
    except Exception:  # noqa: BLE001 - a benchmark of nn.LSTM alone still writes its results
        return []


def safe_build_info() -> dict:
    try:
        return dict(fused_lstm.build_info())
    except Exception as e:  # report, don't die: the benchmark of nn.LSTM still means something
        return {"cuda_built": False, "why": f"build_info() failed: {type(e).__name__}: {e}"}


def extension_file() -> dict:
    """Where the loaded compiled module is and when it was built (in-place rebuilds change it
    without a commit)."""
    try:
        path = fused_lstm._C.__file__
        mtime = datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc)
        return {"path": path, "mtime": mtime.isoformat(timespec="seconds")}
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}


def device_slug(env: dict) -> str:
    """`cpu` or e.g. `cuda-h100` for file names."""
    if env["device"] == "cpu":
        return "cpu"
    m = re.search(r"\b([A-Z]{1,2}\d{2,4}[A-Za-z]?)\b", env["device_name"] or "")
    return "cuda-" + (m.group(1).lower() if m else "gpu")


def environment(device: torch.device, info: dict) -> dict:
    """What a result file records about where it ran: device, CPU and threads, versions, the
    commit, fused_lstm's build and compiled module, and the 1-minute load average (other work on
    a shared CPU makes timings noisy)."""
    cuda = device.type == "cuda"
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu_model(),
        "cpu_model": cpu_model(),
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if cuda else None,
        "mkldnn_available": torch.backends.mkldnn.is_available(),
        "python_version": platform.python_version(),
        "git_commit": git_commit(),
        "fused_lstm_build_info": info,
        "fused_lstm_extension": extension_file(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def describe_environment(env: dict) -> list[str]:
    """The lines a run prints about environment(): device, CPU, versions, build, and a warning
    when the load average says other work shares the CPU."""
    info = env["fused_lstm_build_info"]
    lines = [f"device: {env['device']} ({env['device_name']})",
             f"cpu: {env['cpu_model']} (capability {env['cpu_capability']}), "
             f"torch threads: {env['threads']} of {env['cpu_count']} CPUs",
             f"torch {env['torch_version']}, CUDA {env['cuda_version']}"
             + (f", cuDNN {env['cudnn_version']}" if env["cudnn_version"] else "")
             + f", python {env['python_version']}, commit {env['git_commit'][:12]}",
             f"fused_lstm build: cuda_built={info.get('cuda_built')} ({info.get('why', '')}), "
             f"cpu kernels: {info.get('cpu_instruction_set')}"]
    load = env["load_average_1min"]
    if load is not None and load > 0.5 * (env["cpu_count"] or 1):
        lines.append(f"WARNING: load average {load:.1f} on {env['cpu_count']} cores: other work "
                     "is running, CPU timings will be noisy and ratios unreliable")
    return lines
