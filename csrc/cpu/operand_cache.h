// W_hh prepared for the forward's per-block recurrent products (Note [Recurrent GEMMs on CPU] in
// packed_gemm.h): its columns reordered (block, gate, unit), transposed or as rows for MKL, and
// the cache of the transposed operand across calls (Note [Prepared weight cache]).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace fused_lstm {
namespace cpu {

// Row of W_hh behind each column of the forward operand, in (block, gate, unit) order.
std::vector<int64_t> forward_source_rows(int64_t hidden, int64_t block);

// W_hh's rows reordered into out_rows [4H, K] (MKL's packed path takes out_rows.t()).
template <typename scalar_t>
void forward_blocked_rows(const at::Tensor& w_hh, int64_t hidden, int64_t block, const at::Tensor& out_rows);

// The operand (W_hhᵀ, columns reordered) for w_hh in dtype acc_type: [K, 4H], or block-major
// ([K * 4H]: block u's [K, 4 * units] row-major at element K * 4 * j0, BlockedOperand's block-major
// form); cached across calls while the weight's bytes are unchanged (Note [Prepared weight
// cache]).
at::Tensor prepared_forward_operand(const at::Tensor& w_hh, int64_t hidden, int64_t block, bool block_major,
                                    at::ScalarType acc_type);

}  // namespace cpu
}  // namespace fused_lstm
