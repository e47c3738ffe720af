// Which CUDA kernel variants a layer may run, and which of them have passed the GPU check.
//
// Note [Verified CUDA kernel variants]
// GPU time is rare, so kernels are often written and compile-checked long before a GPU runs them.
// Each kernel variant records the commit at which it last passed the GPU check (the CUDA tests and
// compute-sanitizer, benchmarks/gpu_check.sh; the evidence is the committed
// benchmarks/results/*-verify.txt of that commit). The default selection (select_variants) only
// ever picks verified variants; an unverified one runs only when asked for, by name, in
// FUSED_LSTM_CUDA_UNVERIFIED (or by FUSED_LSTM_CUDA_FP32=tf32/3xtf32 for float on tensor cores).
// Where no verified variant can serve a call the op raises, naming the variant to opt into.
// A verified variant's kernels must stay the code that was checked: tests/test_nvcc_compile.py
// compares their PTX with the fingerprints recorded at the check (tests/verified_kernels_ptx.json),
// so any change to them fails until the variant is marked unverified (or the change reverted). New
// work goes into new variants, unverified until a GPU check passes; then variant_table() gets that
// commit and the fingerprints are recorded again (tests/verified_kernels.py says how). Tests:
// tests/test_cuda_variants.py (every default choice is verified, every commit has its results).
//
// This file and cuda_variants.cpp are plain host code, compiled into every build, so the
// selection is tested on machines without a GPU too.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fused_lstm {
namespace cuda {

enum class Variant {
  kForwardSimt,       // SIMT 16x16 forward tile (float, double)
  kForwardSplitK,     // split-K SIMT forward tile for batches <= 8 (float, double)
  kForwardSimtHalf,   // the SIMT tiles in float16/bfloat16 (GPUs before sm_80)
  kForwardMma,        // 4-warp tensor-core forward tile (float16, bfloat16)
  kForwardMma8Warp,   // 8-warp tensor-core forward tile with operands loaded ahead (float16, bfloat16)
  kFloatTensorCores,  // float32 recurrences on tensor cores (TF32 / 3xTF32), forward and backward
  kBackwardMma,       // tensor-core persistent backward recurrence (float16, bfloat16)
  kBackwardSimt,      // SIMT backward recurrence, persistent or per step (FUSED_LSTM_CUDA_ALGO)
  kBackwardGeneric,   // per-step cuBLAS carry GEMM + pointwise kernel
};

struct VariantInfo {
  Variant variant;
  const char* name;  // as FUSED_LSTM_CUDA_UNVERIFIED spells it
  const char* description;
  const char* verified_at;  // commit of the last passing GPU check, or nullptr: never run on a GPU
  const char* verified_on;  // the GPUs of that check
};

const std::vector<VariantInfo>& variant_table();
const VariantInfo& variant_info(Variant variant);

// FUSED_LSTM_CUDA_ALGO: which recurrence kernels (read per call; tests switch it).
enum class Algorithm { kAuto, kPersistent, kStep, kGeneric };
// FUSED_LSTM_CUDA_FP32: how float32 recurrences multiply (read per call).
enum class Fp32Mode { kAuto, kTf32, kSplitTf32, kSimt };
enum class DType { kHalf, kBFloat16, kFloat, kDouble };

struct SelectionInputs {
  DType dtype;
  int sm_major;  // compute capability of the device
  int64_t batch;
  bool has_proj;
  bool allow_tf32;  // torch.backends.cudnn.allow_tf32 (what nn.LSTM's cuDNN call follows)
  Algorithm algorithm;
  Fp32Mode fp32;
  std::vector<std::string> unverified_allowed;  // names, or {"all"}
};

struct Selection {
  bool tensor_cores = false;  // the recurrent products run on tensor cores
  bool split_tf32 = false;    // float on tensor cores: 3xTF32 rather than TF32
  int mma_k_split = 1;        // the 16-bit tensor-core forward tile's warps per gate (1: 4 warps, 2: 8)
  Algorithm algorithm = Algorithm::kAuto;
  std::vector<Variant> forward;   // every variant the forward may run (fallbacks included)
  std::vector<Variant> backward;  // every variant the backward may run (fallbacks included)
  std::string refused;            // non-empty: a variant needed here is unverified and not allowed; the message
};

// Pure function of its inputs: what a layer with these properties runs.
Selection select_variants(const SelectionInputs& inputs);

// The inputs a call sees, from the environment (FUSED_LSTM_CUDA_ALGO, FUSED_LSTM_CUDA_FP32,
// FUSED_LSTM_CUDA_UNVERIFIED; bad values raise ValueError naming the variable) and its arguments.
SelectionInputs selection_inputs(DType dtype, int sm_major, int64_t batch, bool has_proj, bool allow_tf32);

}  // namespace cuda
}  // namespace fused_lstm
