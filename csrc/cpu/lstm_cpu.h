// The CPU kernels of the layer ops (registered for the CPU dispatch key in lstm_cpu.cpp): the
// forward in lstm_cpu.cpp, the backward in lstm_cpu_backward.cpp, over the recurrence driver
// (recurrence.h), the prepared operands (operand_cache.h), the GEMM kernels (packed_gemm.h,
// gemm_choice.h) and the gate passes (gate_kernels.h).
#pragma once

#include <ATen/ATen.h>

#include <array>

#include "lstm_common.h"

namespace fused_lstm {
namespace cpu {

// The schemas' arguments (csrc/lstm_ops.cpp, Note [Op schemas]).
ForwardResult lstm_layer_forward_cpu(const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& weight_ih,
                                     const Tensor& weight_hh, const c10::optional<Tensor>& bias_ih,
                                     const c10::optional<Tensor>& bias_hh, const c10::optional<Tensor>& weight_hr,
                                     const c10::optional<Tensor>& batch_sizes, bool reverse, bool save_workspace);
BackwardResult lstm_layer_backward_cpu(const c10::optional<Tensor>& grad_output, const c10::optional<Tensor>& grad_hy,
                                       const c10::optional<Tensor>& grad_cy, const Tensor& input, const Tensor& hx,
                                       const Tensor& cx, const Tensor& weight_ih, const Tensor& weight_hh,
                                       const c10::optional<Tensor>& weight_hr, const c10::optional<Tensor>& batch_sizes,
                                       bool reverse, bool has_bias, const Tensor& output, const Tensor& gates,
                                       const Tensor& cells, std::array<bool, 2> output_mask);

// Note [bfloat16 GEMMs on CPU] (lstm_cpu.cpp): whether a bf16 layer's GEMMs run in bf16 here.
bool use_bf16_gemms();

}  // namespace cpu
}  // namespace fused_lstm
