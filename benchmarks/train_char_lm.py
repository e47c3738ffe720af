#!/usr/bin/env python3
"""Train a character-level LSTM language model with fused_lstm.LSTM and torch.nn.LSTM side by
side, on the Python standard library's own sources (no download).

    python3 benchmarks/train_char_lm.py --preset tiny             # seconds (CI)
    python3 benchmarks/train_char_lm.py --preset small --out-dir benchmarks/results   # CPU, minutes
    python3 benchmarks/train_char_lm.py --preset large --amp bf16 # GPU
    python3 -m torch.distributed.run --standalone --nproc_per_node=2 \\
        benchmarks/train_char_lm.py --preset tiny                 # DistributedDataParallel

Model: byte embedding (vocabulary: the 256 byte values) -> dropout -> multi-layer LSTM (dropout
between layers) -> dropout -> linear to 256 logits; cross-entropy on the next byte.

Corpus: the .py files under sysconfig.get_paths()["stdlib"] (or --corpus DIR), skipping
site-packages and test folders. The list of relative paths is sorted, then ordered by the SHA-256
of each path (so a byte cap takes a spread of modules, not the alphabet's first), and a file goes
to validation when that hash is 0 mod 20, else to training: the split depends only on the path,
never on the machine's file order. Files are joined with a NUL byte (never in source text) and
cut at the preset's byte caps. The corpus differs between Python versions; the JSON records the
version, the file counts and the SHA-256 of both streams.

Training (both implementations identically): the training stream is cut into --batch contiguous
rows; step s reads the s-th window of --bptt bytes of every row (truncated backpropagation
through time), and the LSTM's (h, c) are carried, detached, from one window to the next (reset
when the stream wraps around). AdamW, gradient clipping to a global norm, optional autocast
(--amp bf16 on CPU or CUDA, --amp fp16 with a GradScaler on CUDA). Every --val-every steps the
validation loss (mean cross-entropy in nats per byte over the first --val-tokens bytes of the
validation stream, (h, c) carried across windows), and a checkpoint (state_dict of the model and
the optimizer) is written.

Side by side: the nn.LSTM model is built from --seed, the fused model loads its state_dict (same
keys), and both train on the same windows. The two implementations run step by step in turn
(interleaved) so that both see the same machine (other load, clocks, thermals); each one has its
own copy of the random number generator state, started from the same seed, so the dropout masks
are the same whichever one runs (on CPU both draw the inter-layer masks the same way; cuDNN's
dropout has its own generator, so on CUDA the masks differ). Each step is synchronised and timed
on its own. Per implementation: tokens/s = tokens of the timed steps / their time (the first
--warmup steps, which allocate and pick kernels, are left out; a throughput, so stalls from
other work on a shared machine count), the median and IQR of the time of a whole training step
(data, forward, loss, backward, clipping, optimiser) and the tokens/s at that median (robust to
such stalls), and the wall-clock time that implementation used (its steps and its
validations), which the validation curve is plotted against.

Memory: the bytes that one training forward saves for backward (autograd's saved tensors, not
counting the parameters), and on CUDA the peak memory allocated during a training step above what
was allocated before it.

Distributed: under torchrun (WORLD_SIZE > 1) each model is wrapped in DistributedDataParallel
(gloo on CPU, NCCL on CUDA). --batch is the global batch: rank r trains rows
[r*B/W, (r+1)*B/W) of it and validates its share of the validation rows, and DDP averages the
gradients, so W processes follow one process on the same global batch (up to summation order;
dropout masks differ per rank). Rank 0 writes the outputs.

Outputs, in --out-dir (default benchmarks/out/train-char-lm under the repository, git-ignored), with
<stem> = train-char-lm-<preset>-<device>[-<W>proc]-<timestamp>:
  <stem>.json        the environment as benchmark.py records it (device, versions, commit,
                     build, load average), preset and hyperparameters, corpus, and per
                     implementation: tokens/s, step time, wall time, validation and training loss
                     curves, memory, samples; the speedup, the agreement of the two
                     implementations' losses, and the interchange check
  <stem>.png         validation loss against wall-clock time and against training tokens
  <stem>-<impl>.pt   checkpoints (or in --checkpoint-dir): state_dicts of model and optimiser
A table and text sampled from each trained model go to stdout. --plot RESULT.json remakes the
PNG of a JSON.

Interchange check (at the end, unless --no-interchange): the final checkpoint of each trained
implementation is loaded into a fresh model of the other implementation; the validation loss and
the greedy sample of both must match.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import resource
import sys
import sysconfig
import time

if __package__ in (None, ""):
    # Run by path (python3 benchmarks/<script>.py, and so under torchrun), not with -m: Python
    # put benchmarks/ on sys.path, not the repo root that holds the `benchmarks` package. Append
    # the root (after site-packages: an installed fused_lstm keeps precedence).
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
import torch.distributed as dist

from benchmarks import plot
from benchmarks.char_lm import (
    CUDA_BF16_NOTE,
    IMPLS,
    PRESETS,
    CharLM,
    Preset,
    Trainer,
    as_rows,
    build_models,
    generate,
    load_corpus,
    lstm_class,
    validation_loss,
    windows,
)
from benchmarks.environment import (
    describe_environment,
    device_slug,
    environment,
    safe_build_info,
)
from benchmarks.tables import fmt_mb

# Outputs go under the repository, in a git-ignored folder, whatever the working directory.
DEFAULT_OUT_DIR = pathlib.Path(__file__).resolve().parent / "out" / "train-char-lm"
COLORS = {"fused_lstm": "tab:red", "torch": "tab:blue"}
# ----------------------------------------------------------------------------- run

def parse_args(argv, info: dict):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="sizes and step count (default: large on cuda, small on cpu)")
    p.add_argument("--impl", choices=["both", *IMPLS], default="both",
                   help="which implementation(s) to train (default both, side by side)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="default: cuda when a GPU is present and fused_lstm was built with CUDA")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none",
                   help="autocast: bf16 (CPU or CUDA) or fp16 with a GradScaler (CUDA only)")
    for field in dataclasses.fields(Preset):
        p.add_argument("--" + field.name.replace("_", "-"), type=float if field.name in (
            "dropout", "lr") else int, default=None, help=f"override the preset's {field.name}")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW (default 0.01)")
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clip (default 1.0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=3,
                   help="first steps left out of tokens/s and the median (default 3)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop training (both implementations at the same step) after this long")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--corpus", default=None, help="folder of .py files (default: the stdlib)")
    p.add_argument("--prompt", default="def ", help="start of the generated samples")
    p.add_argument("--out-dir", default=str(DEFAULT_OUT_DIR),
                   help="where the outputs go (default: %(default)s, git-ignored)")
    p.add_argument("--checkpoint-dir", default=None, help="where the checkpoints go "
                   "(default: --out-dir)")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="steps between checkpoints (default: every validation); the last step "
                   "is always saved")
    p.add_argument("--plot", metavar="RESULT.json", default=None,
                   help="only make the PNG of an earlier run's JSON (next to it) and exit")
    p.add_argument("--no-interchange", action="store_true",
                   help="skip the checkpoint interchange check at the end")
    p.add_argument("--progress", choices=["auto", "on", "off"], default="auto",
                   help="progress bar on stderr (tqdm if installed); auto: when a terminal")
    args = p.parse_args(argv)
    if args.plot:
        return args, None
    cuda_ok = torch.cuda.is_available() and bool(info.get("cuda_built"))
    args.device = args.device or ("cuda" if cuda_ok else "cpu")
    if args.device == "cuda" and not cuda_ok:
        p.error("--device cuda: needs a visible GPU and fused_lstm built with CUDA "
                f"({info.get('why', '')})")
    if args.amp == "fp16" and args.device != "cuda":
        p.error("--amp fp16 needs --device cuda (fp16 training uses a CUDA GradScaler); "
                "use --amp bf16 on the CPU")
    if args.amp == "bf16" and args.device == "cuda" and not torch.cuda.is_bf16_supported():
        p.error(f"--amp bf16: {torch.cuda.get_device_name()} does not support bfloat16")
    args.preset = args.preset or ("large" if args.device == "cuda" else "small")
    preset = dataclasses.replace(PRESETS[args.preset], **{
        f.name: getattr(args, f.name) for f in dataclasses.fields(Preset)
        if getattr(args, f.name) is not None})
    if not 0 <= preset.dropout < 1:
        p.error("--dropout: expected a value in [0, 1)")
    return args, preset


def init_distributed(device_type: str) -> tuple[int, int, int]:
    """(rank, world size, local rank); starts the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return dist.get_rank(), world, local_rank


def finish_distributed() -> None:
    """Every rank waits for the others, then leaves the process group.

    Without the barrier a rank other than 0 (which has no report to write) reached interpreter
    shutdown while a gloo worker thread was still dropping its reference to the last gradient
    all-reduce; that drop needs the GIL, which a finalizing interpreter no longer hands out, and
    the process aborted ("terminate called without an active exception"), about 1 run in 10 on
    torch 2.11. Gloo's barrier waits for all earlier collectives, and the round trip to the
    other rank gives the workers ample time to release them: 40 of 40 runs clean afterwards.
    As the same race was once seen elsewhere after a barrier, the script's entry point also
    leaves a distributed run without interpreter teardown."""
    dist.barrier()
    dist.destroy_process_group()


def shard(rows: torch.Tensor, rank: int, world: int, what: str) -> torch.Tensor:
    if rows.size(0) % world:
        raise SystemExit(f"train_char_lm: {what} {rows.size(0)} is not divisible by the "
                         f"{world} processes")
    per = rows.size(0) // world
    return rows[rank * per:(rank + 1) * per]


class Progress:
    """tqdm bar on stderr when available and wanted, else a line per validation; silent on
    ranks other than 0."""

    def __init__(self, total: int, lead: bool, bar: bool):
        self.bar, self.lead = None, lead
        if lead and bar:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, file=sys.stderr, unit="step", dynamic_ncols=True)
            except ImportError:
                pass

    def update(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stdout)
        elif self.lead:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def rate_text(trainer: Trainer, tokens_per_step: int, loss: float) -> str:
    recent = trainer.step_s[-20:]
    rate = tokens_per_step * len(recent) / sum(recent)
    return f"{trainer.impl} {rate:,.0f} tok/s loss {loss:.3f}"


def interchange_check(trainers: dict, p: Preset, args, val_rows: torch.Tensor,
                      device: torch.device) -> list[dict]:
    """Each final checkpoint loaded into a fresh model of the other implementation: its
    validation loss (on all the validation rows, in this process) and greedy sample there and
    in its own implementation."""
    checks = []
    prompt = args.prompt.encode()
    for impl, trainer in trainers.items():
        ckpt = torch.load(trainer.checkpoint_path, map_location=device)
        other = "torch" if impl == "fused_lstm" else "fused_lstm"
        entry = {"checkpoint": impl, "loaded_into": other}
        for key, target in (("own", impl), ("loaded", other)):
            model = CharLM(lstm_class(target), p).to(device)
            model.load_state_dict(ckpt["model"])  # strict: the keys are the same
            entry[f"val_loss_{key}"] = validation_loss(model, val_rows, p.bptt, args.amp, False)
            entry[f"greedy_{key}"] = generate(model, prompt, p.sample_len, args.amp, device)
        entry["val_loss_rel_diff"] = (abs(entry["val_loss_loaded"] - entry["val_loss_own"])
                                      / entry["val_loss_own"])
        entry["same_greedy_sample"] = entry["greedy_loaded"] == entry["greedy_own"]
        checks.append(entry)
    return checks


def plot_curves(result: dict, path: str) -> str:
    """Validation loss against wall-clock time and against training tokens."""
    plt = plot._pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for impl, r in result["impls"].items():
        curve = r["val_curve"]
        label = (f"{r['module']}: {r['tokens_per_s']:,.0f} tok/s, "
                 f"final {r['final_val_loss']:.3f}")
        for ax, key in zip(axes, ("wall_s", "tokens")):
            ax.plot([c[key] for c in curve], [c["val_loss"] for c in curve], marker="o",
                    markersize=3, color=COLORS[impl], label=label)
    axes[0].set_xlabel("wall-clock time of that implementation (s): its steps and validations")
    axes[1].set_xlabel("training tokens (bytes)")
    for ax in axes:
        ax.set_ylabel("validation loss (nats/byte)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    c = result["config"]
    fig.suptitle(f"char LM, preset {result['preset']} (E={c['embed']} H={c['hidden']} "
                 f"L={c['layers']} B={c['batch']} T={c['bptt']}, amp {result['amp']}, "
                 f"{result['world_size']} proc) on {result['device_name']}, torch "
                 f"{result['torch_version']}, commit {result['git_commit'][:12]}", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def table(result: dict) -> list[str]:
    """Markdown: per implementation, throughput, step time, times, final loss and memory."""
    cuda = result["device"].startswith("cuda")
    mem = "CUDA peak MB / step" if cuda else "saved for bwd MB"
    lines = ["| implementation | steps | tokens/s | tokens/s at median step | step ms median "
             f"[IQR] | train s | wall s | final val loss | {mem} |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["impls"].values():
        m = r["cuda_peak_step_bytes"] if cuda else r["saved_for_backward_bytes"]
        lines.append(f"| {r['module']} | {r['steps']} | {r['tokens_per_s']:,.0f} | "
                     f"{r['tokens_per_s_median_step']:,.0f} | {r['step_ms_median']:.1f} "
                     f"[{r['step_ms_iqr']:.1f}] | {r['train_s']:.1f} | {r['wall_s']:.1f} | "
                     f"{r['final_val_loss']:.4f} | {fmt_mb(m)} |")
    return lines


def train_loop(trainers: dict, train_rows: torch.Tensor, val_rows: torch.Tensor, p: Preset,
               args, lead: bool, checkpoint_path, meta: dict) -> float:
    """Trains every implementation on the same windows, one step each in turn; validates (and
    rank 0 checkpoints) every p.val_every steps and at the end. Returns the seconds it took."""
    distributed = dist.is_initialized()
    spans = windows(train_rows.size(1), p.bptt)
    tokens_per_step = p.batch * p.bptt  # global
    for t in trainers.values():
        t.validate(0, 0, val_rows)
    progress = Progress(p.steps, lead, args.progress == "on" or (
        args.progress == "auto" and sys.stderr.isatty()))
    t_start = time.perf_counter()
    step = 0
    try:
        while step < p.steps:
            window = step % len(spans)
            start, length = spans[window]
            x = train_rows[:, start:start + length].long()
            y = train_rows[:, start + 1:start + 1 + length].long()
            step += 1
            texts = []
            for t in trainers.values():
                if window == 0:
                    t.state = None  # the stream starts again
                loss = t.train_step(x, y, measure_saved=step == 1)
                t.train_losses.append((step, loss))
                texts.append(rate_text(t, tokens_per_step, loss))
            progress.update(" | ".join(texts))
            out_of_time = (args.max_seconds is not None
                           and time.perf_counter() - t_start > args.max_seconds)
            if distributed:  # every rank stops at the same step
                flag = torch.tensor([float(out_of_time)], device=train_rows.device)
                dist.all_reduce(flag)
                out_of_time = bool(flag.item())
            if step % p.val_every == 0 or step == p.steps or out_of_time:
                line = [f"step {step}"]
                for t in trainers.values():
                    loss = t.validate(step, step * tokens_per_step, val_rows)
                    line.append(f"{t.impl}: val {loss:.4f}")
                    if lead and (step % (args.checkpoint_every or p.val_every) == 0
                                 or step == p.steps or out_of_time):
                        t.save(checkpoint_path(t), step, meta)
                progress.write(", ".join(line))
            if out_of_time:
                progress.write(f"--max-seconds {args.max_seconds:g} reached at step {step}")
                break
    finally:
        progress.close()
    if distributed:  # train losses: the mean over ranks (each rank's is over its shard)
        for t in trainers.values():
            values = torch.tensor([v for _, v in t.train_losses], dtype=torch.float64,
                                  device=train_rows.device)
            dist.all_reduce(values)
            t.train_losses = [(s, v / dist.get_world_size())
                              for (s, _), v in zip(t.train_losses, values.tolist())]
    return time.perf_counter() - t_start


def compare(fused: dict, ref: dict) -> dict:
    """Speedups of fused_lstm over nn.LSTM (> 1: fused is faster) and how far apart the two
    implementations' losses are (largest relative difference over the run)."""
    return {
        "speedup": {
            "train_step_median": ref["step_ms_median"] / fused["step_ms_median"],
            "tokens_per_s": fused["tokens_per_s"] / ref["tokens_per_s"],
            "wall": ref["wall_s"] / fused["wall_s"],
        },
        "agreement": {
            "val_loss_max_rel_diff": max(
                abs(a["val_loss"] - b["val_loss"]) / b["val_loss"]
                for a, b in zip(fused["val_curve"], ref["val_curve"])),
            "train_loss_max_rel_diff": max(
                abs(a[1] - b[1]) / b[1]
                for a, b in zip(fused["train_loss_curve"], ref["train_loss_curve"])),
        },
    }


def print_report(result: dict) -> None:
    """The table, the speedup, the interchange check and the samples, to stdout."""
    print()
    for line in table(result):
        print(line)
    if "speedup" in result:
        s = result["speedup"]
        print(f"\nwhole training step, nn.LSTM median / fused_lstm median: "
              f"{s['train_step_median']:.2f}x; tokens/s fused/nn: {s['tokens_per_s']:.2f}x; "
              f"validation losses agree within {result['agreement']['val_loss_max_rel_diff']:.1e}"
              " (relative)")
    for check in result.get("interchange", []):
        print(f"interchange: {check['checkpoint']} checkpoint in {check['loaded_into']}: val loss "
              f"{check['val_loss_loaded']:.6f} vs {check['val_loss_own']:.6f}, same greedy "
              f"sample: {check['same_greedy_sample']}")
    for impl, r in result["impls"].items():
        print(f"\n--- {IMPLS[impl]}, greedy:\n{r['greedy_sample']}\n--- {IMPLS[impl]}, "
              f"sampled at temperature 0.8:\n{r['sampled_text']}")


def main(argv: list[str] | None = None) -> int:
    info = safe_build_info()
    args, p = parse_args(argv, info)
    if args.plot:
        with open(args.plot) as f:
            print(f"wrote {plot_curves(json.load(f), os.path.splitext(args.plot)[0] + '.png')}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    rank, world, local_rank = init_distributed(args.device)
    distributed = world > 1
    device = torch.device(f"cuda:{local_rank}" if args.device == "cuda" else "cpu")
    lead = rank == 0
    say = print if lead else (lambda *a, **k: None)
    impls = list(IMPLS) if args.impl == "both" else [args.impl]

    now = datetime.datetime.now(datetime.timezone.utc)
    env = environment(device, info)
    for line in describe_environment(env):
        say(line)
    train, val, corpus = load_corpus(args.corpus or sysconfig.get_paths()["stdlib"],
                                     p.train_bytes, p.val_bytes)
    say(f"corpus: {corpus['root']}: train {corpus['train']['files']} files "
        f"{corpus['train']['bytes']:,} bytes, validation {corpus['val']['files']} files "
        f"{corpus['val']['bytes']:,} bytes")
    train_rows = shard(as_rows(train, p.batch, device), rank, world, "--batch")
    all_val_rows = as_rows(val, p.val_batch, device)[:, :p.val_tokens // p.val_batch + 1]
    val_rows = shard(all_val_rows, rank, world, "--val-batch")
    tokens_per_step = p.batch * p.bptt  # global
    notes = [CUDA_BF16_NOTE] if (args.amp == "bf16" and device.type == "cuda"
                                 and "torch" in impls) else []
    for note in notes:
        say(f"note: {note}")
    say(f"preset {args.preset}: {dataclasses.asdict(p)}; amp {args.amp}; {world} process(es); "
        f"{len(windows(train_rows.size(1), p.bptt))} windows of {p.bptt} per epoch")

    models = build_models(impls, p, args.seed, device)
    torch.manual_seed(args.seed + 1 + rank)  # dropout: the same stream for every implementation
    rng0 = (torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda"
            else None)
    trainers = {}
    for impl in impls:
        trainers[impl] = Trainer(impl, models[impl], args, p, device, distributed, local_rank)
        trainers[impl].rng = rng0
    stem = (f"train-char-lm-{args.preset}-{device_slug(env)}"
            + (f"-{world}proc" if distributed else "") + f"-{now.strftime('%Y%m%dT%H%M%SZ')}")
    out_dir = os.path.abspath(args.out_dir)
    checkpoint_dir = os.path.abspath(args.checkpoint_dir or out_dir)
    if lead:
        os.makedirs(out_dir, exist_ok=True)
        os.makedirs(checkpoint_dir, exist_ok=True)
    meta = {"preset": args.preset, "config": dataclasses.asdict(p), "amp": args.amp,
            "seed": args.seed}

    elapsed = train_loop(trainers, train_rows, val_rows, p, args, lead,
                         lambda t: os.path.join(checkpoint_dir, f"{stem}-{t.impl}.pt"), meta)

    if not lead:
        finish_distributed()
        return 0

    result = dict(env, preset=args.preset, config=dataclasses.asdict(p), amp=args.amp,
                  seed=args.seed, weight_decay=args.weight_decay, clip=args.clip,
                  warmup_steps=args.warmup, world_size=world,
                  backend=dist.get_backend() if distributed else None,
                  tokens_per_step=tokens_per_step, corpus=corpus, notes=notes,
                  tf32={"matmul": torch.backends.cuda.matmul.allow_tf32,
                        "cudnn": torch.backends.cudnn.allow_tf32},
                  argv=sys.argv[1:] if argv is None else list(argv),
                  timestamp=now.isoformat(timespec="seconds"), elapsed_s=elapsed,
                  impls={impl: t.summary(tokens_per_step, args.warmup)
                         for impl, t in trainers.items()})
    prompt = args.prompt.encode()
    for impl, t in trainers.items():
        r = result["impls"][impl]
        r["greedy_sample"] = generate(t.net, prompt, p.sample_len, args.amp, device)
        r["sampled_text"] = generate(t.net, prompt, p.sample_len, args.amp, device,
                                     temperature=0.8, seed=args.seed)
    if len(trainers) == 2:
        result.update(compare(result["impls"]["fused_lstm"], result["impls"]["torch"]))
    if not args.no_interchange:
        result["interchange"] = interchange_check(trainers, p, args, all_val_rows, device)
    result["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result["load_average_1min_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    json_path = os.path.join(out_dir, stem + ".json")
    with open(json_path, "w") as f:
        json.dump(result, f, indent=2)
    print_report(result)
    print(f"\nwrote {json_path}")
    try:
        print(f"wrote {plot_curves(result, os.path.join(out_dir, stem + '.png'))}")
    except ImportError as e:  # matplotlib is optional here: the JSON has everything
        print(f"no plot ({e}); install matplotlib", file=sys.stderr)
    if distributed:
        finish_distributed()
    return 0


if __name__ == "__main__":
    status = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Under torchrun, leave without interpreter teardown (every file is written and closed):
        # see finish_distributed for the gloo worker thread that can abort a finalizing process.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)
