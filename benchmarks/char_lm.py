"""The character-level language model that benchmarks/train_char_lm.py trains (its docstring
describes the whole experiment): the presets, the corpus (Python sources, split by a hash of each
path), the model and its loss, validation, generation, and the Trainer that runs one
implementation (fused_lstm.LSTM or torch.nn.LSTM) and measures it."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

import fused_lstm
from benchmarks.workloads import storage_key

VOCAB = 256  # bytes
SEPARATOR = b"\0"  # between files
VAL_ONE_IN = 20  # a file goes to validation when the hash of its path is 0 mod this
SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
IMPLS = {"fused_lstm": "fused_lstm.LSTM", "torch": "torch.nn.LSTM"}


@dataclasses.dataclass
class Preset:
    embed: int  # embedding size (the LSTM's input size)
    hidden: int
    layers: int
    dropout: float
    batch: int  # global batch (rows)
    bptt: int  # window length (time steps per training step)
    steps: int
    lr: float
    val_every: int  # steps between validations (and, by default, checkpoints)
    val_tokens: int  # bytes of the validation stream that a validation reads
    val_batch: int
    train_bytes: int | None  # caps on the corpus (None: everything)
    val_bytes: int | None
    sample_len: int  # bytes generated after the prompt


PRESETS = {
    # CI: seconds on one CPU core.
    "tiny": Preset(embed=16, hidden=32, layers=2, dropout=0.1, batch=8, bptt=32, steps=30,
                   lr=3e-3, val_every=10, val_tokens=4096, val_batch=8,
                   train_bytes=256 << 10, val_bytes=32 << 10, sample_len=60),
    # CPU: a few minutes for both implementations on 2 cores.
    "small": Preset(embed=64, hidden=256, layers=2, dropout=0.1, batch=32, bptt=64, steps=400,
                    lr=2e-3, val_every=40, val_tokens=32768, val_batch=32,
                    train_bytes=8 << 20, val_bytes=1 << 20, sample_len=200),
    # GPU: the whole library.
    "large": Preset(embed=128, hidden=1024, layers=3, dropout=0.2, batch=128, bptt=128,
                    steps=1500, lr=1e-3, val_every=100, val_tokens=262144, val_batch=64,
                    train_bytes=None, val_bytes=None, sample_len=300),
}


# ----------------------------------------------------------------------------- corpus

def corpus_files(root: str) -> list[str]:
    """Sorted relative paths (with /) of the .py files under root, test folders and installed
    packages left out."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        for name in filenames:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                files.append(rel.replace(os.sep, "/"))
    return sorted(files)


def _path_hash(rel: str) -> int:
    return int.from_bytes(hashlib.sha256(rel.encode()).digest()[:8], "big")


def load_corpus(root: str, train_bytes: int | None, val_bytes: int | None):
    """(train stream, validation stream, description), the streams as bytes."""
    caps = {"train": train_bytes, "val": val_bytes}
    parts: dict[str, list[bytes]] = {"train": [], "val": []}
    sizes = {"train": 0, "val": 0}
    for rel in sorted(corpus_files(root), key=lambda r: (_path_hash(r), r)):
        split = "val" if _path_hash(rel) % VAL_ONE_IN == 0 else "train"
        cap = caps[split]
        if cap is not None and sizes[split] >= cap:
            continue
        with open(os.path.join(root, rel), "rb") as f:
            parts[split].append(f.read())
        sizes[split] += len(parts[split][-1]) + len(SEPARATOR)
    streams = {k: SEPARATOR.join(v)[: caps[k]] for k, v in parts.items()}
    info = {"root": root, "python_version": sys.version.split()[0],
            "rule": f"*.py, not under {sorted(SKIP_DIRS)}; validation: sha256(path) % "
                    f"{VAL_ONE_IN} == 0; files joined by NUL, in sha256(path) order"}
    for k, data in streams.items():
        if len(data) < 2:
            raise SystemExit(f"train_char_lm: the corpus under {root} has no {k} text "
                             "(no .py files there? use --corpus DIR)")
        info[k] = {"files": len(parts[k]), "bytes": len(data),
                   "sha256": hashlib.sha256(data).hexdigest()}
    return streams["train"], streams["val"], info


def as_rows(data: bytes, rows: int, device: torch.device) -> torch.Tensor:
    """[rows, n] uint8: the stream cut into `rows` contiguous pieces (the tail that does not fill
    a row is dropped)."""
    n = len(data) // rows
    if n < 2:
        raise SystemExit(f"train_char_lm: {len(data)} bytes cannot make {rows} rows")
    t = torch.frombuffer(bytearray(data[: n * rows]), dtype=torch.uint8)
    return t.view(rows, n).to(device)


def windows(n: int, bptt: int) -> list[tuple[int, int]]:
    """(start, length) of the consecutive windows over a row of n bytes (inputs start..start+len,
    targets one byte later)."""
    return [(i, min(bptt, n - 1 - i)) for i in range(0, n - 1, bptt)]


# ----------------------------------------------------------------------------- model

class CharLM(nn.Module):
    """Embedding -> dropout -> LSTM (dropout between layers) -> dropout -> linear."""

    def __init__(self, lstm_cls, p: Preset):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, p.embed)
        self.drop = nn.Dropout(p.dropout)
        self.lstm = lstm_cls(p.embed, p.hidden, p.layers, batch_first=True,
                             dropout=p.dropout if p.layers > 1 else 0.0)
        self.head = nn.Linear(p.hidden, VOCAB)

    def forward(self, x, state=None):
        out, state = self.lstm(self.drop(self.embed(x)), state)
        return self.head(self.drop(out)), state


def lstm_class(impl: str):
    return fused_lstm.LSTM if impl == "fused_lstm" else nn.LSTM


def build_models(impls: list[str], p: Preset, seed: int, device: torch.device) -> dict:
    """One CharLM per implementation, all holding the weights that nn.LSTM's initialisation
    makes from `seed` (the state_dict keys are the same)."""
    torch.manual_seed(seed)
    reference = CharLM(nn.LSTM, p)
    state = reference.state_dict()
    models = {}
    for impl in impls:
        model = reference if impl == "torch" else CharLM(lstm_class(impl), p)
        model.load_state_dict(state)
        models[impl] = model.to(device)
    return models


# PyTorch's autocast wrapper for cuDNN RNNs (aten/src/ATen/cudnn/AutocastRNN.cpp) casts to
# float16 whatever the autocast dtype, so under --amp bf16 on CUDA nn.LSTM runs in fp16, and
# with no GradScaler its small gradients can underflow. fused_lstm runs the autocast dtype.
CUDA_BF16_NOTE = ("under CUDA autocast nn.LSTM (cuDNN) runs in float16 whatever the autocast "
                  "dtype, so with --amp bf16 it trains in fp16 without loss scaling")


def amp_context(amp: str, device: torch.device):
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def lm_loss(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    return F.cross_entropy(logits.float().reshape(-1, VOCAB), y.reshape(-1), reduction=reduction)


@torch.no_grad()
def validation_loss(model: CharLM, rows: torch.Tensor, bptt: int, amp: str,
                    distributed: bool) -> float:
    """Mean cross-entropy (nats per byte) over `rows` (this rank's share), (h, c) carried."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=rows.device)
    state = None
    for start, length in windows(rows.size(1), bptt):
        x = rows[:, start:start + length].long()
        y = rows[:, start + 1:start + 1 + length].long()
        with amp_context(amp, rows.device):
            logits, state = model(x, state)
        total[0] += lm_loss(logits, y, "sum").double()
        total[1] += y.numel()
    if distributed:
        dist.all_reduce(total)
    model.train(was_training)
    return (total[0] / total[1]).item()


@torch.no_grad()
def generate(model: CharLM, prompt: bytes, length: int, amp: str, device: torch.device,
             temperature: float | None = None, seed: int = 0) -> str:
    """`length` bytes after `prompt`: greedy (argmax) when temperature is None, else sampled
    from softmax(logits / temperature) with a seeded CPU generator. Non-printable bytes other
    than newline and tab are shown as '?'."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.tensor([list(prompt)], dtype=torch.long, device=device)
    state, out = None, []
    for _ in range(length):
        with amp_context(amp, device):
            logits, state = model(x, state)
        last = logits[0, -1].float().cpu()
        if temperature is None:
            nxt = int(last.argmax())
        else:
            nxt = int(torch.multinomial(torch.softmax(last / temperature, -1), 1, generator=gen))
        out.append(nxt)
        x = torch.tensor([[nxt]], dtype=torch.long, device=device)
    model.train(was_training)
    text = bytes(out).decode("utf-8", errors="replace")
    return prompt.decode() + "".join(c if c.isprintable() or c in "\n\t" else "?" for c in text)


# ----------------------------------------------------------------------------- one implementation

@contextlib.contextmanager
def saved_for_backward(counter: dict, exclude: set[int]):
    """Sets counter["bytes"] to the bytes of the unique storages that autograd saves for
    backward while active (the parameters' storages, in exclude, not counted). The tensors are
    kept alive until the end, so that no storage is freed, reused and counted twice."""
    seen: dict[int, int] = {}
    keep = []

    def pack(t):
        k = storage_key(t)
        if k is not None and k[0] not in exclude and k[0] != 0:
            seen[k[0]] = max(seen.get(k[0], 0), k[1])
            keep.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield
    counter["bytes"] = sum(seen.values())


def iqr(values: list[float]) -> float:
    if len(values) < 4:
        return 0.0
    q = statistics.quantiles(values, n=4)
    return q[2] - q[0]


class Trainer:
    """One implementation's model, optimiser, carried state, RNG state and measurements."""

    def __init__(self, impl: str, model: CharLM, args, p: Preset, device: torch.device,
                 distributed: bool, local_rank: int):
        self.impl, self.net, self.p, self.args, self.device = impl, model, p, args, device
        self.distributed = distributed
        if distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP
            self.model = DDP(model, device_ids=[local_rank] if device.type == "cuda" else None)
        else:
            self.model = model
        self.opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=args.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda") if args.amp == "fp16" else None
        self.state = None
        self.rng = None  # set by Runner: this implementation's generator states
        self.step_s: list[float] = []
        self.train_losses: list[tuple[int, float]] = []
        self.val_curve: list[dict] = []
        self.wall_s = 0.0  # time in its own steps and validations
        self.saved = {"bytes": None}
        self.cuda_peak = 0
        self.checkpoint_path = None

    @contextlib.contextmanager
    def own_rng(self):
        """Runs with this implementation's RNG states (CPU, and the current GPU's)."""
        cuda = self.device.type == "cuda"
        outer = (torch.get_rng_state(), torch.cuda.get_rng_state() if cuda else None)
        torch.set_rng_state(self.rng[0])
        if cuda:
            torch.cuda.set_rng_state(self.rng[1])
        try:
            yield
        finally:
            self.rng = (torch.get_rng_state(), torch.cuda.get_rng_state() if cuda else None)
            torch.set_rng_state(outer[0])
            if cuda:
                torch.cuda.set_rng_state(outer[1])

    def train_step(self, x: torch.Tensor, y: torch.Tensor, measure_saved: bool) -> float:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
        t0 = time.perf_counter()
        with self.own_rng():
            counting = (saved_for_backward(self.saved, {k[0] for k in map(
                storage_key, self.net.parameters()) if k}) if measure_saved
                else contextlib.nullcontext())
            with counting, amp_context(self.args.amp, self.device):
                logits, state = self.model(x, self.state)
                loss = lm_loss(logits, y)
            self.state = tuple(s.detach() for s in state)
            self.opt.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.opt)
            else:
                loss.backward()
            nn.utils.clip_grad_norm_(self.net.parameters(), self.args.clip)
            if self.scaler is not None:
                self.scaler.step(self.opt)
                self.scaler.update()
            else:
                self.opt.step()
            value = loss.item()  # synchronises the GPU
        elapsed = time.perf_counter() - t0
        if cuda:
            self.cuda_peak = max(self.cuda_peak,
                                 torch.cuda.max_memory_allocated(self.device) - base)
        self.step_s.append(elapsed)
        self.wall_s += elapsed
        return value

    def validate(self, step: int, tokens: int, val_rows: torch.Tensor) -> float:
        t0 = time.perf_counter()
        loss = validation_loss(self.net, val_rows, self.p.bptt, self.args.amp, self.distributed)
        self.wall_s += time.perf_counter() - t0
        self.val_curve.append({"step": step, "tokens": tokens, "wall_s": self.wall_s,
                               "val_loss": loss})
        return loss

    def save(self, path: str, step: int, meta: dict) -> None:
        torch.save({"model": self.net.state_dict(), "optimizer": self.opt.state_dict(),
                    "step": step, "impl": self.impl, **meta}, path)
        self.checkpoint_path = path

    def summary(self, tokens_per_step: int, warmup: int) -> dict:
        timed = self.step_s[warmup:] or self.step_s
        return {
            "module": IMPLS[self.impl],
            "steps": len(self.step_s),
            "tokens_per_s": tokens_per_step * len(timed) / sum(timed),
            "tokens_per_s_median_step": tokens_per_step / statistics.median(timed),
            "step_ms_median": 1e3 * statistics.median(timed),
            "step_ms_iqr": 1e3 * iqr(timed),
            "train_s": sum(self.step_s),
            "wall_s": self.wall_s,
            "final_val_loss": self.val_curve[-1]["val_loss"] if self.val_curve else None,
            "val_curve": self.val_curve,
            "train_loss_curve": self.train_losses,
            "saved_for_backward_bytes": self.saved["bytes"],
            "cuda_peak_step_bytes": self.cuda_peak if self.device.type == "cuda" else None,
            "checkpoint": self.checkpoint_path,
            "step_ms": [round(1e3 * t, 3) for t in self.step_s],
        }
