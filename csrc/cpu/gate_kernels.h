// The CPU gate passes, built once per x86 instruction set and picked at run time.
//
// Note [CPU instruction sets]
// The extension is compiled for the baseline x86-64 ISA (never -march=native: others install
// it), where at::vec::Vectorized falls back to scalar loops and sigmoid/tanh become scalar libm
// calls; measured at T=100 B=64 H=512 that gate pass cost 1.8 ms of a 2.4 ms step, three times
// the recurrent GEMM. So gate_kernels_impl.h is compiled three times: default, AVX2+FMA and
// AVX-512 (gate_kernels_{default,avx2,avx512}.cpp, each with `#pragma GCC target` and ATen's
// CPU_CAPABILITY macros, which put at::vec in a namespace of its own), and gate_kernels() picks
// the table matching at::get_cpu_capability() -- the same choice, and the same ATEN_CPU_CAPABILITY
// override, as ATen's own kernels. Sleef's vector exp/tanh come from libtorch_cpu.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>

namespace fused_lstm {
namespace cpu {

// Forward cells (b, j), j in [j_begin, j_end), of one batch row: pre (x · W_ihᵀ, a row [4H]),
// rec (h_prev · W_hhᵀ for these units only: gate g of unit j at rec[g * rec_gate_stride +
// (j - j_begin)], the layout of a unit block's product, Note [Recurrent GEMMs on CPU]) and bias
// (b_ih + b_hh, [4H]; zeros without biases) -> activated gates, c (in place), h;
// gates_out/cells_out (rows of the saved workspace) may be null.
template <typename acc_t>
using ForwardCellsFn = void (*)(const acc_t* pre, const acc_t* rec, int64_t rec_gate_stride, const acc_t* bias,
                                acc_t* c_state, acc_t* h_out, acc_t* gates_out, acc_t* cells_out, int64_t hidden,
                                int64_t j_begin, int64_t j_end);

// The same for bf16 layers whose products run in bf16 (Note [bfloat16 GEMMs on CPU]): pre (the
// bf16 input projection) is widened as it is read and h is written rounded to bf16 -- the next
// step's product and the layer's output take it in bf16 anyway; c, the gates and the arithmetic
// stay in float.
using ForwardCellsBf16Fn = void (*)(const c10::BFloat16* pre, const float* rec, int64_t rec_gate_stride,
                                    const float* bias, float* c_state, c10::BFloat16* h_out, float* gates_out,
                                    float* cells_out, int64_t hidden, int64_t j_begin, int64_t j_end);

// Backward cells of one batch row: saved gates [4H], c_t, c_{t-1}, dh (gradient reaching
// o * tanh(c)) -> pre-activation gradients [4H]; dc_carry is updated in place (c_t -> c_{t-1}).
template <typename acc_t>
using BackwardCellsFn = void (*)(const acc_t* gates, const acc_t* c, const acc_t* c_prev, const acc_t* dh,
                                 acc_t* dc_carry, acc_t* dgates, int64_t hidden, int64_t j_begin, int64_t j_end);

// backward cells of a bf16 layer whose GEMMs run in bf16 (Note [bfloat16 GEMMs on CPU]): also
// writes the pre-activation gradients rounded to bf16 (dgates_rounded, same layout), the operand
// of the next carry product and of the weight/input-gradient GEMMs.
using BackwardCellsBf16Fn = void (*)(const float* gates, const float* c, const float* c_prev, const float* dh,
                                     float* dc_carry, float* dgates, c10::BFloat16* dgates_rounded, int64_t hidden,
                                     int64_t j_begin, int64_t j_end);

// y[b, n] = sum_k x[b, k] * w[n, k] for b < rows and n in [n_begin, n_end): a product by a weight
// in its stored layout ([N, K], row stride ldw), as dot products along k. For the few rows of a
// single step (T = 1 calls, LSTMCell), where a BLAS call's fixed cost and its packing of the
// weight outweigh the arithmetic and no prepared operand would be reused (Note [Single steps on
// CPU] in lstm_cpu.cpp). Reads each weight row once per group of kRowDotRows rows of x.
template <typename acc_t>
using RowDotFn = void (*)(const acc_t* x, int64_t ldx, int64_t rows, const acc_t* w, int64_t ldw, int64_t k, acc_t* y,
                          int64_t ldy, int64_t n_begin, int64_t n_end);
constexpr int64_t kRowDotRows = 4;

// out[c, r] = a[r, c] for r < rows, c < cols (row strides lda, ldo): one tile of a transposed copy
// (the backward's weight-gradient operands, lstm_cpu_backward.cpp). ATen's strided copy_ runs a
// transpose element by element, 2.2 ms for a [2048, 1024] fp32 matrix on 2 cores; 8 x 8 register
// tiles 0.5 ms.
using TransposeFn = void (*)(const float* a, int64_t lda, int64_t rows, int64_t cols, float* out, int64_t ldo);

struct GateKernels {
  const char* instruction_set;
  ForwardCellsFn<float> forward_float;
  ForwardCellsFn<double> forward_double;
  BackwardCellsFn<float> backward_float;
  BackwardCellsFn<double> backward_double;
  ForwardCellsBf16Fn forward_bf16_io;
  BackwardCellsBf16Fn backward_bf16_out;
  RowDotFn<float> row_dot_float;
  RowDotFn<double> row_dot_double;
  TransposeFn transpose_float;

  template <typename acc_t>
  ForwardCellsFn<acc_t> forward() const;
  template <typename acc_t>
  BackwardCellsFn<acc_t> backward() const;
  template <typename acc_t>
  RowDotFn<acc_t> row_dot() const;
};

template <>
inline ForwardCellsFn<float> GateKernels::forward<float>() const {
  return forward_float;
}
template <>
inline ForwardCellsFn<double> GateKernels::forward<double>() const {
  return forward_double;
}
template <>
inline BackwardCellsFn<float> GateKernels::backward<float>() const {
  return backward_float;
}
template <>
inline BackwardCellsFn<double> GateKernels::backward<double>() const {
  return backward_double;
}
template <>
inline RowDotFn<float> GateKernels::row_dot<float>() const {
  return row_dot_float;
}
template <>
inline RowDotFn<double> GateKernels::row_dot<double>() const {
  return row_dot_double;
}

// One table per build; an ISA this compiler or CPU cannot target returns the default table.
const GateKernels& gate_kernels_default();
const GateKernels& gate_kernels_avx2();
const GateKernels& gate_kernels_avx512();

// The table for this CPU (chosen once).
const GateKernels& gate_kernels();

}  // namespace cpu
}  // namespace fused_lstm
