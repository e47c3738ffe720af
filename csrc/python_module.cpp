// The fused_lstm._C Python module: importing it registers the ops (lstm_ops.cpp and the device
// files); its functions report how this build was made and what the kernels chose.
#include <torch/extension.h>

#include <algorithm>
#include <array>
#include <limits>
#include <vector>

#include "cpu/gate_kernels.h"
#include "cpu/gemm_choice.h"
#include "cpu/lstm_cpu_directions.h"
#include "cpu/packed_gemm.h"
#include "cuda_variants.h"

#ifndef FUSED_LSTM_BUILD_REASON
#define FUSED_LSTM_BUILD_REASON "unknown"
#endif
#ifndef FUSED_LSTM_ARCH_LIST
#define FUSED_LSTM_ARCH_LIST ""
#endif

namespace {

pybind11::dict build_info() {
  pybind11::dict info;
#ifdef FUSED_LSTM_WITH_CUDA
  info["cuda_built"] = true;
#else
  info["cuda_built"] = false;
#endif
  info["why"] = FUSED_LSTM_BUILD_REASON;
  info["arch_list"] = FUSED_LSTM_ARCH_LIST;
  info["torch_version_built"] = TORCH_VERSION;
  return info;
}

pybind11::list cuda_kernel_variants() {
  pybind11::list variants;
  for (const auto& info : fused_lstm::cuda::variant_table()) {
    pybind11::dict entry;
    entry["name"] = info.name;
    entry["description"] = info.description;
    entry["verified"] = info.verified_at != nullptr;
    entry["verified_at"] = info.verified_at != nullptr ? pybind11::object(pybind11::str(info.verified_at))
                                                       : pybind11::object(pybind11::none());
    entry["verified_on"] = info.verified_on;
    variants.append(entry);
  }
  return variants;
}

// The selection for a hypothetical call, with the environment as it is now (tests enumerate it
// without a GPU).
pybind11::dict cuda_kernel_selection(const std::string& dtype, int sm_major, int64_t batch, bool has_proj,
                                     bool allow_tf32) {
  using fused_lstm::cuda::DType;
  DType kind;
  if (dtype == "float16") {
    kind = DType::kHalf;
  } else if (dtype == "bfloat16") {
    kind = DType::kBFloat16;
  } else if (dtype == "float32") {
    kind = DType::kFloat;
  } else if (dtype == "float64") {
    kind = DType::kDouble;
  } else {
    TORCH_CHECK_VALUE(false, "cuda_kernel_selection: dtype must be float16, bfloat16, float32 or float64, got '", dtype,
                      "'");
  }
  const auto selection = fused_lstm::cuda::select_variants(
      fused_lstm::cuda::selection_inputs(kind, sm_major, batch, has_proj, allow_tf32));
  const auto names = [](const std::vector<fused_lstm::cuda::Variant>& variants) {
    pybind11::list out;
    for (auto v : variants) out.append(fused_lstm::cuda::variant_info(v).name);
    return out;
  };
  pybind11::dict out;
  out["forward"] = names(selection.forward);
  out["backward"] = names(selection.backward);
  out["tensor_cores"] = selection.tensor_cores;
  out["split_tf32"] = selection.split_tf32;
  out["mma_k_split"] = selection.mma_k_split;
  out["refused"] = selection.refused;
  return out;
}

// Test-only (and for benchmarks): c = a · b through BlockedOperandBf16's dot-product kernel (Note
// [bf16 dot-product GEMM on CPU]), b's columns split into the blocks that column_begin starts, each
// block's product written at its columns of c (row stride n: wider than a block's). a: bf16
// [m, k] with unit column stride (any row stride); b: [k, n], rounded to bf16. `repeats` runs
// the products that many times (timing without Python's per-call overhead).
at::Tensor bf16_dot_gemm_for_tests(const at::Tensor& a, const at::Tensor& b, std::vector<int64_t> column_begin,
                                   int64_t repeats) {
  using fused_lstm::cpu::BlockedOperandBf16;
  TORCH_CHECK(BlockedOperandBf16::bf16_dot_available(),
              "_bf16_dot_gemm_for_tests: this CPU (or ATEN_CPU_CAPABILITY) has no AVX512_BF16");
  TORCH_CHECK_VALUE(a.dim() == 2 && b.dim() == 2 && a.scalar_type() == at::kBFloat16 && a.stride(1) == 1 &&
                        a.size(1) == b.size(0) && column_begin.size() >= 2 && column_begin.front() == 0 &&
                        column_begin.back() == b.size(1) && std::is_sorted(column_begin.begin(), column_begin.end()),
                    "_bf16_dot_gemm_for_tests: bad arguments");
  const int64_t m = a.size(0), n = b.size(1);
  const BlockedOperandBf16 operand(b, column_begin, BlockedOperandBf16::Kernel::kBf16Dot);
  at::Tensor c = at::full({m, n}, std::numeric_limits<float>::quiet_NaN(), a.options().dtype(at::kFloat));
  for (int64_t r = 0; r < repeats; ++r) {
    for (int64_t u = 0; u + 1 < static_cast<int64_t>(column_begin.size()); ++u) {
      operand.multiply(u, m, a.const_data_ptr<c10::BFloat16>(), a.stride(0), c.data_ptr<float>() + column_begin[u], n);
    }
  }
  return c;
}

using OptionalTensor = c10::optional<at::Tensor>;

// The plain-eager route of a bidirectional CPU layer (fused_lstm/_eager.py): lstm_layer_forward
// of both directions in one call (Note [Concurrent directions on CPU]); the forward direction's
// five results, then the reverse direction's.
std::vector<at::Tensor> cpu_forward_directions(const at::Tensor& input, const OptionalTensor& batch_sizes,
                                               bool save_workspace, std::array<at::Tensor, 4> forward,
                                               std::array<OptionalTensor, 3> forward_optional,
                                               std::array<at::Tensor, 4> reverse,
                                               std::array<OptionalTensor, 3> reverse_optional) {
  using fused_lstm::cpu::DirectionTensors;
  const std::array<DirectionTensors, 2> directions = {
      DirectionTensors{forward[0], forward[1], forward[2], forward[3], forward_optional[0], forward_optional[1],
                       forward_optional[2]},
      DirectionTensors{reverse[0], reverse[1], reverse[2], reverse[3], reverse_optional[0], reverse_optional[1],
                       reverse_optional[2]}};
  std::vector<at::Tensor> out;
  for (const auto& r : fused_lstm::cpu::forward_directions(input, batch_sizes, save_workspace, directions)) {
    out.insert(out.end(), {std::get<0>(r), std::get<1>(r), std::get<2>(r), std::get<3>(r), std::get<4>(r)});
  }
  return out;
}

// lstm_layer_backward of both directions in one call: per direction (hx, cx, weight_ih,
// weight_hh, weight_hr), (grad_output, grad_hy, grad_cy), (output, gates, cells) and output_mask;
// the forward direction's seven gradients, then the reverse direction's.
std::vector<at::Tensor> cpu_backward_directions(
    const at::Tensor& input, const OptionalTensor& batch_sizes, bool has_bias, std::array<at::Tensor, 4> forward,
    const OptionalTensor& forward_weight_hr, std::array<OptionalTensor, 3> forward_grads,
    std::array<at::Tensor, 3> forward_saved, std::array<bool, 2> forward_mask, std::array<at::Tensor, 4> reverse,
    const OptionalTensor& reverse_weight_hr, std::array<OptionalTensor, 3> reverse_grads,
    std::array<at::Tensor, 3> reverse_saved, std::array<bool, 2> reverse_mask) {
  using fused_lstm::cpu::DirectionGradients;
  using fused_lstm::cpu::DirectionTensors;
  const std::array<DirectionTensors, 2> directions = {
      DirectionTensors{forward[0], forward[1], forward[2], forward[3], c10::nullopt, c10::nullopt, forward_weight_hr},
      DirectionTensors{reverse[0], reverse[1], reverse[2], reverse[3], c10::nullopt, c10::nullopt, reverse_weight_hr}};
  const std::array<DirectionGradients, 2> grads = {
      DirectionGradients{forward_grads[0], forward_grads[1], forward_grads[2], forward_saved[0], forward_saved[1],
                         forward_saved[2]},
      DirectionGradients{reverse_grads[0], reverse_grads[1], reverse_grads[2], reverse_saved[0], reverse_saved[1],
                         reverse_saved[2]}};
  std::vector<at::Tensor> out;
  for (const auto& r : fused_lstm::cpu::backward_directions(input, batch_sizes, has_bias, forward_mask, reverse_mask,
                                                            grads, directions)) {
    out.insert(out.end(), {std::get<0>(r), std::get<1>(r), std::get<2>(r), std::get<3>(r), std::get<4>(r),
                           std::get<5>(r), std::get<6>(r)});
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "fused_lstm compiled ops (registered under torch.ops.fused_lstm)";
  module.def("build_info", &build_info, "Facts about how this extension was built.");
  module.def(
      "cpu_instruction_set", [] { return std::string(fused_lstm::cpu::gate_kernels().instruction_set); },
      "Which build of the CPU gate passes runs here: default, avx2 or avx512 (ATEN_CPU_CAPABILITY "
      "overrides it, as for ATen's own kernels).");
  module.def("cuda_kernel_variants", &cuda_kernel_variants,
             "Every CUDA kernel variant, with the commit at which it last passed the GPU check (Note "
             "[Verified CUDA kernel variants]).");
  module.def("cuda_kernel_selection", &cuda_kernel_selection,
             "The CUDA kernel variants a layer would run: (dtype, sm_major, batch, has_proj, allow_tf32).");
  module.def(
      "cpu_kernel_choices",
      [] {
        pybind11::list out;
        for (const auto& choice : fused_lstm::cpu::kernel_choices()) {
          pybind11::dict entry;
          entry["shape_class"] = choice.shape_class;
          entry["chosen"] = choice.chosen;
          entry["how"] = choice.how;
          out.append(entry);
        }
        return out;
      },
      "The GEMM kernels chosen so far in this process, per shape class, and how (Note [Measured GEMM "
      "choice on CPU]).");
  module.def("_bf16_dot_gemm_for_tests", &bf16_dot_gemm_for_tests, pybind11::arg("a"), pybind11::arg("b"),
             pybind11::arg("column_begin"), pybind11::arg("repeats") = 1,
             "Test-only: a · b through the AVX512_BF16 dot-product kernel, b's columns in the given blocks "
             "(Note [bf16 dot-product GEMM on CPU]).");
  // Without the GIL, as the dispatcher runs the ops: the worker threads take the caller's
  // thread-local state, which may hold Python objects (saved-tensor hooks) they must incref.
  module.def("_cpu_forward_directions", &cpu_forward_directions, pybind11::call_guard<pybind11::gil_scoped_release>(),
             "Both directions' lstm_layer_forward of a bidirectional CPU layer (Note [Concurrent directions "
             "on CPU]): (input, batch_sizes, save_workspace, (hx, cx, weight_ih, weight_hh), (bias_ih, "
             "bias_hh, weight_hr) of the forward direction, the same of the reverse).");
  module.def("_cpu_backward_directions", &cpu_backward_directions, pybind11::call_guard<pybind11::gil_scoped_release>(),
             "Both directions' lstm_layer_backward of a bidirectional CPU layer (Note [Concurrent "
             "directions on CPU]).");
  module.def("cpu_recurrent_gemms", &fused_lstm::cpu::recurrent_gemm_kernels,
             "Which kernels serve the CPU per-step recurrent products here (Note [Recurrent GEMMs "
             "on CPU]).");
}
