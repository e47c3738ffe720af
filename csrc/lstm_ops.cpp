// Op schemas (the contract between C++ and Python) and the fused_lstm._C Python module.
//
// Note [Op schemas]
// One forward and one backward op for one LSTM layer in one direction over a whole sequence.
// Every feature of nn.LSTM that changes a layer's computation is an argument: reverse direction,
// optional biases, an optional projection weight (proj_size), optional batch_sizes for packed
// input. The forward returns everything backward needs (gates, cells: the workspace) as outputs,
// empty when save_workspace is false, so fake kernels, opcheck and torch.compile see them.
// Device kernels are registered per dispatch key in csrc/cpu/ and csrc/cuda/.
// Both ops are tagged cudagraph_unsafe: the CUDA kernels stage their step schedule and row
// indices through (pinned) host memory every call, which a captured CUDA graph would replay from
// a buffer that has since been reused. torch.compile(mode="reduce-overhead") then leaves graphs
// holding these ops out of CUDA graphs instead of capturing them (and a manual capture is
// refused with an error, csrc/cuda/lstm_cuda.cu).
#include <torch/extension.h>
#include <torch/library.h>

#include "cpu/gate_kernels.h"
#include "cpu/packed_gemm.h"

#ifndef FUSED_LSTM_BUILD_REASON
#define FUSED_LSTM_BUILD_REASON "unknown"
#endif
#ifndef FUSED_LSTM_ARCH_LIST
#define FUSED_LSTM_ARCH_LIST ""
#endif

TORCH_LIBRARY(fused_lstm, m) {
  m.def(
      "lstm_layer_forward(Tensor input, Tensor hx, Tensor cx, Tensor weight_ih, Tensor weight_hh, "
      "Tensor? bias_ih, Tensor? bias_hh, Tensor? weight_hr, Tensor? batch_sizes, bool reverse, "
      "bool save_workspace) -> (Tensor output, Tensor hy, Tensor cy, Tensor gates, Tensor cells)",
      {at::Tag::cudagraph_unsafe});
  m.def(
      "lstm_layer_backward(Tensor? grad_output, Tensor? grad_hy, Tensor? grad_cy, Tensor input, "
      "Tensor hx, Tensor cx, Tensor weight_ih, Tensor weight_hh, Tensor? weight_hr, "
      "Tensor? batch_sizes, bool reverse, bool has_bias, Tensor output, Tensor gates, "
      "Tensor cells, bool[2] output_mask) -> (Tensor grad_input, Tensor grad_hx, Tensor grad_cx, "
      "Tensor grad_weight_ih, Tensor grad_weight_hh, Tensor grad_bias, Tensor grad_weight_hr)",
      {at::Tag::cudagraph_unsafe});
}

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

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "fused_lstm compiled ops (registered under torch.ops.fused_lstm)";
  module.def("build_info", &build_info, "Facts about how this extension was built.");
  module.def(
      "cpu_instruction_set", [] { return std::string(fused_lstm::cpu::gate_kernels().instruction_set); },
      "Which build of the CPU gate passes runs here: default, avx2 or avx512 (ATEN_CPU_CAPABILITY "
      "overrides it, as for ATen's own kernels).");
  module.def("cpu_recurrent_gemms", &fused_lstm::cpu::recurrent_gemm_kernels,
             "Which kernels serve the CPU per-step recurrent products here (Note [Recurrent GEMMs "
             "on CPU]).");
}
