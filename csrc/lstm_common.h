// Device-independent part of the ATen ops: argument checks, the step schedule, the row
// gathers, and the backward recurrence (which only needs a device-specific pointwise kernel).
#pragma once

#include <ATen/ATen.h>

#include <tuple>
#include <vector>

#include "kernels/lstm_step.h"

namespace fused_lstm {

using at::Tensor;
using kernels::StepRows;

// Sizes of one layer call, after the checks. See Note [Row layout and step schedule].
struct LayerShape {
  int64_t steps;   // T
  int64_t batch;   // B (batch_sizes[0] when packed)
  int64_t input;   // I
  int64_t hidden;  // H
  int64_t proj;    // P (== H without projection)
  int64_t tokens;  // N = rows of every per-token buffer
  bool packed;
  bool has_bias;
  bool has_proj;
};

using ForwardResult = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;
using BackwardResult = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

// Validates every argument of lstm_layer_forward (also used by backward) and returns the sizes.
// Errors name the op and the argument: ValueError for dims/dtypes, RuntimeError for the rest.
LayerShape check_layer_arguments(const char* op, const Tensor& input, const Tensor& hx, const Tensor& cx,
                                 const Tensor& weight_ih, const Tensor& weight_hh, const c10::optional<Tensor>& bias_ih,
                                 const c10::optional<Tensor>& bias_hh, const c10::optional<Tensor>& weight_hr,
                                 const c10::optional<Tensor>& batch_sizes);

// The steps in processing order (forward or reverse).
std::vector<StepRows> make_step_schedule(const LayerShape& shape, const c10::optional<Tensor>& batch_sizes,
                                         bool reverse);

// float for reduced-precision inputs, double for double: the arithmetic and workspace dtype.
at::ScalarType opmath_type(at::ScalarType dtype);

// [B] row index of each sequence's last processed step, on `device` (for hy).
Tensor final_row_index(const std::vector<StepRows>& schedule, int64_t batch, at::Device device);

// [N] index into cat(hx, output) of the h each row consumed as h_prev (for dW_hh).
Tensor previous_row_index(const std::vector<StepRows>& schedule, int64_t tokens, int64_t batch, at::Device device);

// Output shapes for one call: [T, B, X] when padded, [N, X] when packed.
std::vector<int64_t> per_token_shape(const LayerShape& shape, int64_t width);

// Empty results for a call with no tokens (T = 0 or B = 0): output empty, states unchanged.
ForwardResult forward_without_tokens(const LayerShape& shape, const Tensor& input, const Tensor& hx, const Tensor& cx,
                                     bool save_workspace);

// Backward pointwise of one step on the tensors' device: fills dgates rows and updates dc_carry.
using BackwardPointwiseFn = void (*)(const kernels::StepRows& step, int64_t hidden, const Tensor& gates,
                                     const Tensor& cells, const Tensor& cx, const Tensor& dh, const Tensor& dc_carry,
                                     const Tensor& dgates);

// Tensors of a fused reverse recurrence (no projection), all opmath dtype, contiguous.
struct BackwardRecurrenceArgs {
  const std::vector<StepRows>& schedule;  // forward processing order
  int64_t batch, hidden;
  Tensor weight_hh;     // [4H, H], input dtype
  Tensor grad_output;   // [N, H] or undefined
  Tensor grad_hy;       // [B, H] or undefined
  Tensor gates, cells;  // [N, 4H], [N, H]
  Tensor cx;            // [B, H]
  Tensor dc_carry;      // [B, H] in: grad_cy (or zeros); out: grad_cx
  Tensor dgates;        // [N, 4H] out
  // [N, 4H] in the input dtype, out, or undefined. Given only where the backward's GEMMs run in
  // the input dtype (BackwardKernels::input_dtype_gemms, CPU bf16): a recurrence that returns
  // true has filled it with dgates rounded, and the weight/input-gradient GEMMs take it as is.
  Tensor dgates_rounded;
};
// Runs the whole reverse recurrence on the device, filling dgates and dc_carry; returns false
// to let the generic per-step loop do it.
using BackwardRecurrenceFn = bool (*)(const BackwardRecurrenceArgs& args);

struct BackwardKernels {
  BackwardPointwiseFn pointwise;          // required
  BackwardRecurrenceFn fused_recurrence;  // optional (nullptr): used when there is no projection
  // Run the carry and weight/input-gradient GEMMs in the input dtype (bf16 on CPUs with bf16
  // dot products, Note [bfloat16 GEMMs on CPU]) rather than in the opmath type.
  bool input_dtype_gemms = false;
  // Allocates the call's large internal buffers (gate gradients, carries, GEMM operands): the
  // CPU's pooled scratch memory (Note [CPU scratch memory] in cpu/scratch_pool.h); nullptr: at::empty.
  Tensor (*temporary)(at::IntArrayRef sizes, at::ScalarType dtype) = nullptr;
  // a · wᵀ (w [N, K] contiguous) for the input gradient: the CPU's measured choice of GEMM (Note
  // [Measured GEMM choice on CPU] in cpu/gemm_choice.h); nullptr: at::mm.
  Tensor (*linear)(const Tensor& a, const Tensor& w, const Tensor& out) = nullptr;
};

// A host int64 buffer to fill and then copy to `device` with non_blocking=true: pinned when the
// device is CUDA, so the copy is asynchronous (a pageable copy waits for the stream to drain).
Tensor host_index_buffer(at::IntArrayRef sizes, at::Device device);

// [B] row index of each sequence's first processed step (the step that consumed hx).
Tensor first_row_index(const std::vector<StepRows>& schedule, int64_t batch, at::Device device);

// The backward op for any device: the reverse recurrence (a device's fused kernel, or per step:
// carry GEMM, optional projection GEMM, pointwise kernel), then the weight gradients as single
// large GEMMs over all N rows.
BackwardResult lstm_layer_backward_impl(const c10::optional<Tensor>& grad_output, const c10::optional<Tensor>& grad_hy,
                                        const c10::optional<Tensor>& grad_cy, const Tensor& input, const Tensor& hx,
                                        const Tensor& cx, const Tensor& weight_ih, const Tensor& weight_hh,
                                        const c10::optional<Tensor>& weight_hr,
                                        const c10::optional<Tensor>& batch_sizes, bool reverse, bool has_bias,
                                        const Tensor& output, const Tensor& gates, const Tensor& cells,
                                        std::array<bool, 2> output_mask, BackwardKernels kernels);

}  // namespace fused_lstm
