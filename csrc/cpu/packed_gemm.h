// The right-hand operand of the per-step recurrent products, prepared once per call.
//
// Note [Recurrent GEMMs on CPU]
// Every step multiplies a few rows (the batch) by the same weight: h_prev · W_hhᵀ forward,
// dgates · W_hh backward. Through at::mm each call re-packs the whole weight into the BLAS's
// blocked layout (4 MiB at H=512 in fp32) and opens its own thread team, and the gate pass
// after it opens another. So the CPU layers instead:
//  - split the hidden units into blocks of a few dozen units; a block's columns of the weight are
//    those of all four gates of its units (forward: W_hhᵀ with its columns reordered (block,
//    gate, unit)) or its units' columns of W_hh (backward);
//  - per step, one parallel region over the blocks: each task multiplies the step's rows by its
//    block's columns (on its own thread) and runs the gate pass on the product while it is in
//    cache.
// The product itself, per block (measured on a 2-core Xeon, AVX-512, fp32; benchmarks/results):
//  - batches of kMklPackedMinRows rows or more: MKL's packed SGEMM (cblas_sgemm_pack/compute),
//    each block packed once per call (into pooled memory, Note [CPU scratch memory]): per step
//    290 vs 400 us for brgemm at B=16 H=512. Used when the running libtorch exports it (x86
//    wheels do; looked up at run time, so nothing links against MKL).
//  - otherwise oneDNN's batch-reduce GEMM micro-kernel through at::native::cpublas::brgemm (fp32),
//    no packing and ~1 us of overhead a call. The forward reads its weight block-major (each
//    block's columns a contiguous row-major matrix, cached with the transposed weight, Note
//    [Prepared weight cache]): at a few rows the product streams its block of the weight once a
//    step, and rows 4H columns apart (4-16 KiB strides) stream well below the cache's speed;
//  - fp64 (and builds without brgemm): at::mm_out on views of the buffers.
// Calls of fewer than 4 steps (T=1 decoding) skip all this: preparing the operands costs about
// as much as a few steps, so they multiply the whole product per step through at::mm
// (kMinStepsToPrepareWeights in recurrence.h).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "cpu/gemm_choice.h"

namespace fused_lstm {
namespace cpu {

template <typename scalar_t>
class BlockedOperand {
 public:
  // b: [k, n_total], unit row stride (b.stride(1) == 1), or -- only where packs_with_mkl(max_rows,
  // k, first block's width) -- unit column stride (a transposed view: MKL packs it transposed);
  // block u is columns [column_begin[u], column_begin[u + 1]). Products A[m, k] · B_u follow,
  // with m <= max_rows. b must outlive this object (the unpacked paths read it in place).
  // `kernel` forces one (measurement, Note [Measured GEMM choice on CPU]); else packs_with_mkl.
  BlockedOperand(const at::Tensor& b, std::vector<int64_t> column_begin, int64_t max_rows,
                 std::optional<RecurrentKernel> kernel = std::nullopt);

  // Block-major form, for the brgemm and at::mm paths (never MKL's packed one): block u's [k, n_u]
  // columns are a row-major matrix of their own (row stride n_u) at element k * column_begin[u]
  // of `blocks` (prepared_forward_operand's block_major layout). A block's rows then follow one
  // another in memory instead of lying n_total columns apart (Note [Recurrent GEMMs on CPU]).
  struct BlockMajor {};
  BlockedOperand(BlockMajor, const at::Tensor& blocks, int64_t k, std::vector<int64_t> column_begin);

  // Whether MKL's packed SGEMM can serve products of up to max_rows rows by a depth-k operand.
  static bool mkl_packed_possible(int64_t max_rows, int64_t k);
  // Whether it does: where possible, and measured faster on this host for blocks of n_block
  // columns (Note [Measured GEMM choice on CPU]).
  static bool packs_with_mkl(int64_t max_rows, int64_t k, int64_t n_block);
  BlockedOperand(const BlockedOperand&) = delete;
  BlockedOperand& operator=(const BlockedOperand&) = delete;

  // c[m, n_u] (row stride ldc) = a[m, k] (row stride lda) · B_u. Uses the calling thread only
  // when called inside a parallel region.
  void multiply(int64_t block, int64_t m, const scalar_t* a, int64_t lda, scalar_t* c, int64_t ldc) const;

  int64_t num_blocks() const { return static_cast<int64_t>(column_begin_.size()) - 1; }

 private:
  at::Tensor b_;
  int64_t k_, ld_;
  bool block_major_ = false;
  std::vector<int64_t> column_begin_;
  at::Tensor packed_storage_;        // mkl-packed: all blocks' buffers, bytes (scratch memory)
  std::vector<const void*> packed_;  // mkl-packed: block u's buffer (64-byte aligned)
};

// bfloat16 products (Note [bfloat16 GEMMs on CPU] in lstm_cpu.h): B_u packed once per call, A in
// bf16, C accumulated in fp32, by one of two kernels:
//  - kOneDnnAmx: oneDNN's brgemm micro-kernel on B packed in its VNNI layout
//    (at::native::cpublas::pack), only where available() (ATen offers it with AMX only);
//  - kBf16Dot: the AVX512_BF16 dot-product kernel (Note [bf16 dot-product GEMM on CPU] in
//    bf16_dot_gemm.h), for CPUs with AVX512_BF16 but no AMX; only where bf16_dot_available().
class BlockedOperandBf16 {
 public:
  enum class Kernel { kOneDnnAmx, kBf16Dot };

  // Whether this build and CPU can run kOneDnnAmx: ATen's brgemm/pack for bf16 and a CPU with AMX.
  static bool available();
  // Whether they can run kBf16Dot: AVX512_BF16 (and ATen's CPU capability AVX512).
  static bool bf16_dot_available();

  // oneDNN's bf16 packing takes B in panels of this many columns.
  static constexpr int64_t kPanel = 64;
  // What every column_begin must be a multiple of for `kernel`: kPanel for oneDNN's, nothing
  // (1) for the dot-product kernel, which packs each block on its own and masks partial panels.
  static constexpr int64_t column_alignment(Kernel kernel) { return kernel == Kernel::kOneDnnAmx ? kPanel : 1; }

  // As BlockedOperand: b [k, n_total] (any floating dtype; rounded to bf16), every column_begin a
  // multiple of column_alignment(kernel); kOneDnnAmx: k even.
  BlockedOperandBf16(const at::Tensor& b, std::vector<int64_t> column_begin, Kernel kernel = Kernel::kOneDnnAmx);

  // c[m, n_u] (fp32, row stride ldc) = a[m, k] (bf16, row stride lda) · B_u. Uses the calling
  // thread only.
  void multiply(int64_t block, int64_t m, const c10::BFloat16* a, int64_t lda, float* c, int64_t ldc) const;

  // To call at the end of each task that multiplied: releases the thread's AMX state (nothing
  // where kOneDnnAmx is not available).
  static void release_thread_state();

 private:
  Kernel kernel_;
  int64_t k_;
  std::vector<int64_t> column_begin_;
  // kOneDnnAmx: block u's packed [k, n_u] at k * column_begin[u]; kBf16Dot: at packed_begin_[u]
  // (scratch memory)
  at::Tensor packed_;
  std::vector<int64_t> packed_begin_;
};

// MKL's packed path serves batches of at least this many rows (Note [Recurrent GEMMs on CPU]).
constexpr int64_t kMklPackedMinRows = 8;

// Which kernels serve the per-block recurrent products in this process (for build_info()):
// e.g. "fp32: MKL packed SGEMM from 8 rows, else oneDNN brgemm; bf16: oneDNN AMX brgemm".
std::string recurrent_gemm_kernels();

}  // namespace cpu
}  // namespace fused_lstm
