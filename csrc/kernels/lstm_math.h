// Gate math shared by the CPU and CUDA kernels. Torch-free: plain C++ that nvcc and a host
// compiler both accept, so the CUDA kernels can be compile-checked without torch headers.
//
// Conventions (see DESIGN.md): gate order i, f, g, o; acc_t is the arithmetic ("opmath") type:
// float for float/half/bfloat16 inputs, double for double.
#pragma once

#include <cmath>
#include <cstdint>

// `static`: internal linkage, so the per-instruction-set CPU builds (csrc/cpu/gate_kernels_*.cpp)
// each keep their own copy and the linker can never hand an AVX-512 copy to an AVX2 machine.
#if defined(__CUDACC__)
#define FUSED_LSTM_HD static __host__ __device__ __forceinline__
#else
#define FUSED_LSTM_HD static inline
#endif

namespace fused_lstm {
namespace kernels {

constexpr int kNumGates = 4;  // i, f, g, o

FUSED_LSTM_HD float exp_op(float x) { return expf(x); }
FUSED_LSTM_HD double exp_op(double x) { return exp(x); }
FUSED_LSTM_HD float tanh_op(float x) { return tanhf(x); }
FUSED_LSTM_HD double tanh_op(double x) { return tanh(x); }

template <typename acc_t>
FUSED_LSTM_HD acc_t sigmoid(acc_t x) {
  return acc_t(1) / (acc_t(1) + exp_op(-x));
}

// Activated gate values of one (batch row, hidden unit) cell.
template <typename acc_t>
struct Gates {
  acc_t i, f, g, o;
};

// One cell update from the four pre-activations:
//   i, f, o = sigmoid(.), g = tanh(.), c = f * c_prev + i * g, h = o * tanh(c).
// Returns the activated gates; writes c and h.
template <typename acc_t>
FUSED_LSTM_HD Gates<acc_t> cell_forward(acc_t pre_i, acc_t pre_f, acc_t pre_g, acc_t pre_o, acc_t c_prev, acc_t* c_out,
                                        acc_t* h_out) {
  Gates<acc_t> a;
  a.i = sigmoid(pre_i);
  a.f = sigmoid(pre_f);
  a.g = tanh_op(pre_g);
  a.o = sigmoid(pre_o);
  const acc_t c = a.f * c_prev + a.i * a.g;
  *c_out = c;
  *h_out = a.o * tanh_op(c);
  return a;
}

// Gradients of the pre-activations of one cell.
//   dh:      total gradient reaching h_t (the unprojected h when there is a projection)
//   dc_next: gradient reaching c_t from step t+1 (or from c_n)
// Writes the four pre-activation gradients (i, f, g, o order) and returns dc_prev, the gradient
// that flows to c_{t-1}.
template <typename acc_t>
FUSED_LSTM_HD acc_t cell_backward(const Gates<acc_t>& a, acc_t c, acc_t c_prev, acc_t dh, acc_t dc_next,
                                  acc_t* d_pre /* [4] */) {
  const acc_t tanh_c = tanh_op(c);
  const acc_t dc = dc_next + dh * a.o * (acc_t(1) - tanh_c * tanh_c);
  d_pre[0] = dc * a.g * a.i * (acc_t(1) - a.i);     // d pre_i
  d_pre[1] = dc * c_prev * a.f * (acc_t(1) - a.f);  // d pre_f
  d_pre[2] = dc * a.i * (acc_t(1) - a.g * a.g);     // d pre_g
  d_pre[3] = dh * tanh_c * a.o * (acc_t(1) - a.o);  // d pre_o
  return dc * a.f;
}

}  // namespace kernels
}  // namespace fused_lstm
