// The backward op's device-independent driver. A device's backward (cpu/lstm_cpu_backward.cpp,
// cuda/lstm_cuda.cu) calls layer_backward with its kernels; the driver runs, top-down:
//   1. the checks (check_backward_arguments) and the case of no tokens;
//   2. the reverse recurrence: the device's fused kernel where it has one and there is no
//      projection, else one step at a time (carry GEMM, optional projection GEMM, the device's
//      pointwise kernel);
//   3. the input and weight gradients, each one large GEMM over all N rows.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "layer_args.h"
#include "step_schedule.h"

namespace fused_lstm {

// Backward pointwise of one step on the tensors' device: fills dgates rows and updates dc_carry.
using BackwardPointwiseFn = void (*)(const StepRows& step, int64_t hidden, const Tensor& gates, const Tensor& cells,
                                     const Tensor& cx, const Tensor& dh, const Tensor& dc_carry, const Tensor& dgates);

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
// to let the per-step loop do it.
using BackwardRecurrenceFn = bool (*)(const BackwardRecurrenceArgs& args);

// What a device supplies to the driver.
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
  // A contiguous transposed copy of a matrix, or an undefined tensor where the device has no fast
  // one for its dtype. Given, the weight gradients multiply transposed copies, dgatesᵀ [4H, N] by
  // the operands' [K, N] (as a · wᵀ through `linear`), rather than dgates read transposed: MKL and
  // oneDNN both run their best kernels only on operands stored the way the product reads them
  // (Note [Weight gradients on CPU] in cpu/lstm_cpu_backward.cpp). nullptr: at::mm on dgates.t().
  Tensor (*transposed)(const Tensor& a) = nullptr;
};

// The backward op on the arguments' device, with that device's kernels.
BackwardResult layer_backward(const BackwardArgs& args, const BackwardKernels& kernels);

}  // namespace fused_lstm
