"""fused_lstm's benchmarks as a package: the library that benchmarks/benchmark.py (the CLI) and
the other scripts here (train_char_lm.py, cpu_step_probe.py, gpu_step_probe.py) and the tests
import.

    suites       implementations, configs and suites (what runs)
    timing       warm-up, synchronised interleaved timing, medians (how it is timed)
    workloads    models, inputs, one call per mode, memory and output differences (what is timed)
    environment  host, device, versions, commit, build (where it ran)
    tables       markdown table, progress, JSON files (what comes out)
    char_lm      the character-level language model that train_char_lm.py trains

The scripts run either way: `python3 benchmarks/benchmark.py ...` or, from the repo root,
`python3 -m benchmarks.benchmark ...`. Run by path, a script first appends the repo root to
sys.path (the few commented lines at its top), since Python puts only benchmarks/ there.
"""
