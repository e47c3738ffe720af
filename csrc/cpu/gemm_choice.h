// Which GEMM kernel serves a product on this CPU: measured, not assumed.
//
// Note [Measured GEMM choice on CPU]
// The fastest GEMM library differs from host to host: on Intel Xeons with AMX MKL's SGEMM is as
// fast as oneDNN's; on AMD EPYC (AVX-512 or AVX2) MKL does not pick its fast kernels and runs at
// about half of oneDNN's speed (docs/DESIGN.md, measured facts). A choice right on one host is
// wrong on another, so the CPU layers choose by timing the candidates on the running host the
// first time they meet a shape class, and keep the winner for the rest of the process:
//  - big GEMMs (the hoisted input projection x · W_ihᵀ, the backward's dgates · W_ih and weight
//    gradients, Note [Weight gradients on CPU] in lstm_cpu_backward.cpp): ATen's
//    at::mm (MKL on x86 wheels) or oneDNN's matmul (the mkldnn::_linear_pointwise op);
//  - the per-block recurrent products of fp32 layers, batches of kMklPackedMinRows rows or more:
//    MKL's packed SGEMM or oneDNN's brgemm micro-kernel (Note [Recurrent GEMMs on CPU]);
//  - a single step's small products (T = 1 calls): row dot products or at::mm.
// A shape class is (kind, rows and -- for big GEMMs -- depth rounded up to powers of two, since
// either may be a token count that changes from call to call, the other sizes, dtype, threads).
// Timing uses operands of the class's shape, each candidate's fastest of a few runs;
// it costs a few extra products on the first call of a class only. Where oneDNN has no primitive
// for a product on this CPU (bf16 on AVX2-only CPUs), at::mm serves it. Results are deterministic
// for a given choice; FUSED_LSTM_CPU_GEMM and FUSED_LSTM_CPU_RECURRENT_GEMM pin one (tests force
// each in turn; FUSED_LSTM_CPU_GEMM=aten also pins the single-step products to at::mm, =onednn to
// the row dot products), and fused_lstm.cpu_kernel_choices() lists what was chosen, with timings.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace fused_lstm {
namespace cpu {

// out[M, N] = a[M, K] · wᵀ, w [N, K] contiguous (a weight as stored): into `out` (if defined) when
// the chosen kernel writes into a given tensor (at::mm), else a new tensor; returns the result.
// Float and bfloat16 (oneDNN's bf16 matmul where this CPU has it), other dtypes through at::mm.
at::Tensor linear(const at::Tensor& a, const at::Tensor& w, const at::Tensor& out);

// y[rows, N] = x[rows, K] · wᵀ for a single step's few rows (Note [Single steps on CPU] in
// lstm_cpu.cpp): dot products along w's stored rows (RowDotFn) or at::mm, whichever is measured
// faster for this shape class. x, w contiguous; y [rows, N] contiguous.
void small_linear(const at::Tensor& x, const at::Tensor& w, at::Tensor& y);

// A choice among whole strategies (bf16 recurrences without AMX, say): run(i) runs candidate i
// once; returns the fastest's index, measured at the first call of `shape_class` and kept
// (recorded in kernel_choices()). `pinned`: an index to take without measuring, or -1.
int fastest_candidate(const std::string& shape_class, const std::vector<std::string>& candidates,
                      const std::function<void(int)>& run, int pinned);

enum class RecurrentKernel { kMklPacked, kBrgemm };

// The kernel for fp32 per-block products of `rows` rows by a [k, n_block] block, where both can
// serve (mkl_packed_possible: MKL's packed API is there and rows >= kMklPackedMinRows).
RecurrentKernel recurrent_kernel(int64_t rows, int64_t k, int64_t n_block, bool mkl_packed_possible);

// FUSED_LSTM_CPU_BF16_RECURRENCE (bf16 layers without AMX's path, Note [bfloat16 GEMMs on CPU] in
// lstm_cpu.cpp): -1 for auto (measured), else the index of the pinned strategy in the forward's
// candidates: 0 bf16_mm, 1 fp32, 2 bf16_dot. ValueError for any other value.
int bf16_recurrence_from_env();

// FUSED_LSTM_CPU_LAYER (Note [ATen's LSTM as a candidate] in lstm_cpu.cpp): -1 for auto
// (measured), 0 for the fused layer, 1 for ATen's LSTM. ValueError for any other value.
int layer_kernel_from_env();

// FUSED_LSTM_CPU_DIRECTIONS (Note [Concurrent directions on CPU] in lstm_cpu_directions.cpp): -1
// for auto (measured), 0 sequential, 1 concurrent. ValueError for any other value.
int directions_from_env();

// A power of two >= x (shape classes round sizes that vary from call to call).
int64_t round_up_pow2(int64_t x);

// Whether the backward's carry product of a bf16 layer without AMX's path -- dgates rounded to bf16
// [rows, k] times a [k, n_block] block of W_hh -- runs on the AVX512_BF16 dot-product kernel
// (BlockedOperandBf16::Kernel::kBf16Dot) rather than in fp32 (BlockedOperand<float>). Only where
// the kernel is available; pinned by FUSED_LSTM_CPU_BF16_RECURRENCE (bf16_dot: yes; bf16_mm, fp32:
// no), else measured per shape class as recurrent_kernel() does.
bool bf16_dot_carry(int64_t rows, int64_t k, int64_t n_block);

struct KernelChoice {
  std::string shape_class;  // e.g. "linear float32 M<=8192 K=512 N=2048 threads=2"
  std::string chosen;
  std::string how;  // "measured: mkl 41.2 ms, onednn 25.3 ms" or "FUSED_LSTM_CPU_GEMM=mkl"
};

// Every choice made so far in this process.
std::vector<KernelChoice> kernel_choices();

// Validates FUSED_LSTM_CPU_GEMM / FUSED_LSTM_CPU_RECURRENT_GEMM (ValueError naming the variable).
void check_gemm_choice_environment();

}  // namespace cpu
}  // namespace fused_lstm
