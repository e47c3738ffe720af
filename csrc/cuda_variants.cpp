// The CUDA kernel variant table and the default selection (Note [Verified CUDA kernel variants]).
#include "cuda_variants.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <sstream>

namespace fused_lstm {
namespace cuda {

namespace {

// The GPU check that passed at 1f3fd5b: benchmarks/results/cuda-h200-auto-v4-20261126-verify.txt
// (H200; the H100 checks of the same day ran earlier versions of the same kernels). The kernels of
// these variants still compile to the PTX of that commit (tests/verified_kernels_ptx.json).
constexpr const char* k1f3fd5b = "1f3fd5b4941fec986ddbc8a77b9cb16127ef0419";
constexpr const char* kH200 = "NVIDIA H200";

}  // namespace

const std::vector<VariantInfo>& variant_table() {
  static const std::vector<VariantInfo> table = {
      {Variant::kForwardSimt, "forward_simt", "SIMT 16x16 forward tile (float32, float64)", k1f3fd5b, kH200},
      {Variant::kForwardSplitK, "forward_splitk", "split-K SIMT forward tile for batches <= 8 (float32, float64)",
       k1f3fd5b, kH200},
      {Variant::kForwardSimtHalf, "forward_simt_half", "the SIMT forward tiles in float16/bfloat16 (GPUs before sm_80)",
       nullptr, ""},
      {Variant::kForwardMma, "forward_mma", "4-warp tensor-core forward tile (float16, bfloat16)", k1f3fd5b, kH200},
      {Variant::kForwardMma8Warp, "forward_mma_8warp",
       "8-warp tensor-core forward tile, cell operands loaded ahead (float16, bfloat16)", nullptr, ""},
      {Variant::kFloatTensorCores, "float32_tensor_cores",
       "float32 recurrences on tensor cores, TF32 or 3xTF32, forward (8-warp tile) and backward", nullptr, ""},
      {Variant::kBackwardMma, "backward_mma", "tensor-core persistent backward recurrence (float16, bfloat16)",
       k1f3fd5b, kH200},
      {Variant::kBackwardSimt, "backward_simt",
       "SIMT backward recurrence, persistent or one launch per step (FUSED_LSTM_CUDA_ALGO=persistent/step)", k1f3fd5b,
       kH200},
      {Variant::kBackwardGeneric, "backward_generic", "per-step cuBLAS carry GEMM + pointwise backward kernel",
       k1f3fd5b, kH200},
  };
  return table;
}

const VariantInfo& variant_info(Variant variant) {
  for (const VariantInfo& info : variant_table()) {
    if (info.variant == variant) return info;
  }
  TORCH_CHECK(false, "fused_lstm: CUDA kernel variant missing from variant_table()");
}

namespace {

Algorithm algorithm_from_env() {
  const char* algo = std::getenv("FUSED_LSTM_CUDA_ALGO");
  if (algo == nullptr || std::strcmp(algo, "auto") == 0) return Algorithm::kAuto;
  if (std::strcmp(algo, "persistent") == 0) return Algorithm::kPersistent;
  if (std::strcmp(algo, "generic") == 0) return Algorithm::kGeneric;
  TORCH_CHECK_VALUE(std::strcmp(algo, "step") == 0,
                    "fused_lstm: FUSED_LSTM_CUDA_ALGO must be auto, persistent, step or generic, got '", algo, "'");
  return Algorithm::kStep;
}

Fp32Mode fp32_mode_from_env() {
  const char* mode = std::getenv("FUSED_LSTM_CUDA_FP32");
  if (mode == nullptr || std::strcmp(mode, "auto") == 0) return Fp32Mode::kAuto;
  if (std::strcmp(mode, "tf32") == 0) return Fp32Mode::kTf32;
  if (std::strcmp(mode, "3xtf32") == 0) return Fp32Mode::kSplitTf32;
  TORCH_CHECK_VALUE(std::strcmp(mode, "simt") == 0,
                    "fused_lstm: FUSED_LSTM_CUDA_FP32 must be auto, tf32, 3xtf32 or simt, got '", mode, "'");
  return Fp32Mode::kSimt;
}

// FUSED_LSTM_CUDA_UNVERIFIED: comma-separated variant names, or "all".
std::vector<std::string> unverified_allowed_from_env() {
  std::vector<std::string> names;
  const char* env = std::getenv("FUSED_LSTM_CUDA_UNVERIFIED");
  if (env == nullptr) return names;
  std::stringstream list(env);
  std::string name;
  while (std::getline(list, name, ',')) {
    if (name.empty()) continue;
    const auto& table = variant_table();
    const bool known = name == "all" || std::any_of(table.begin(), table.end(),
                                                    [&](const VariantInfo& info) { return name == info.name; });
    if (!known) {
      std::string valid = "all";
      for (const VariantInfo& info : table) valid += std::string(", ") + info.name;
      TORCH_CHECK_VALUE(false, "fused_lstm: FUSED_LSTM_CUDA_UNVERIFIED names an unknown kernel variant '", name,
                        "' (expected a comma-separated list of: ", valid, ")");
    }
    names.push_back(name);
  }
  return names;
}

bool allowed(const SelectionInputs& in, Variant variant) {
  const VariantInfo& info = variant_info(variant);
  if (info.verified_at != nullptr) return true;
  for (const std::string& name : in.unverified_allowed) {
    if (name == "all" || name == info.name) return true;
  }
  return false;
}

}  // namespace

SelectionInputs selection_inputs(DType dtype, int sm_major, int64_t batch, bool has_proj, bool allow_tf32) {
  return {dtype,
          sm_major,
          batch,
          has_proj,
          allow_tf32,
          algorithm_from_env(),
          fp32_mode_from_env(),
          unverified_allowed_from_env()};
}

Selection select_variants(const SelectionInputs& in) {
  Selection s;
  s.algorithm = in.algorithm;
  const bool half_type = in.dtype == DType::kHalf || in.dtype == DType::kBFloat16;
  const bool ampere_or_newer = in.sm_major >= 8;
  // FUSED_LSTM_CUDA_FP32=tf32 / 3xtf32 asks for float on tensor cores by name; `auto` takes it only
  // once it is verified (or allowed), following cudnn.allow_tf32 for TF32 vs 3xTF32 as nn.LSTM does.
  const bool float_tensor_cores_asked = in.fp32 == Fp32Mode::kTf32 || in.fp32 == Fp32Mode::kSplitTf32;
  bool float_tensor_cores = false;
  if (in.dtype == DType::kFloat && ampere_or_newer) {
    float_tensor_cores =
        float_tensor_cores_asked || (in.fp32 == Fp32Mode::kAuto && allowed(in, Variant::kFloatTensorCores));
  }
  s.tensor_cores = (half_type && ampere_or_newer) || float_tensor_cores;
  s.split_tf32 = in.fp32 == Fp32Mode::kSplitTf32 || (in.fp32 == Fp32Mode::kAuto && !in.allow_tf32);
  s.mma_k_split = half_type && allowed(in, Variant::kForwardMma8Warp) ? 2 : 1;

  // Forward: one tile kind, persistent or launched per step (projection, FUSED_LSTM_CUDA_ALGO=step,
  // or a grid that cannot be resident), both verified together by the GPU check.
  if (half_type) {
    s.forward.push_back(!ampere_or_newer     ? Variant::kForwardSimtHalf
                        : s.mma_k_split == 2 ? Variant::kForwardMma8Warp
                                             : Variant::kForwardMma);
  } else if (float_tensor_cores && in.batch > 8) {  // kSmallBatchMax: small batches keep split-K
    s.forward.push_back(Variant::kFloatTensorCores);
  } else {
    s.forward.push_back(in.batch <= 8 ? Variant::kForwardSplitK : Variant::kForwardSimt);
  }

  // Backward recurrence (csrc/cuda/lstm_cuda.cu, backward_recurrence_cuda); a projection always
  // takes the generic loop.
  const Variant mma_backward = half_type ? Variant::kBackwardMma : Variant::kFloatTensorCores;
  if (in.has_proj || in.algorithm == Algorithm::kGeneric) {
    s.backward.push_back(Variant::kBackwardGeneric);
  } else if (in.algorithm == Algorithm::kStep) {
    s.backward.push_back(Variant::kBackwardSimt);
  } else if (s.tensor_cores) {
    s.backward.push_back(mma_backward);  // where it fits; else:
    s.backward.push_back(in.algorithm == Algorithm::kPersistent ? Variant::kBackwardSimt : Variant::kBackwardGeneric);
  } else {
    s.backward.push_back(in.algorithm == Algorithm::kPersistent ? Variant::kBackwardSimt : Variant::kBackwardGeneric);
  }

  for (const auto* list : {&s.forward, &s.backward}) {
    for (Variant variant : *list) {
      const bool asked = variant == Variant::kFloatTensorCores && float_tensor_cores_asked;
      if (!asked && !allowed(in, variant)) {
        const VariantInfo& info = variant_info(variant);
        s.refused = std::string("fused_lstm: this layer needs the CUDA kernel variant '") + info.name + "' (" +
                    info.description +
                    "), which has not yet passed the GPU check; set "
                    "FUSED_LSTM_CUDA_UNVERIFIED=" +
                    info.name + " to run it anyway";
        return s;
      }
    }
  }
  return s;
}

}  // namespace cuda
}  // namespace fused_lstm
