// Note [Prepared weight cache] and the operands of the forward's per-block products
// (operand_cache.h).
#include "cpu/operand_cache.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <list>
#include <mutex>

namespace fused_lstm {
namespace cpu {

using at::Tensor;

// Row of W_hh behind each column of the forward operand: the columns in (block, gate, unit)
// order, so that a block's product [rows, 4 * units] holds all four gates of its units (what the
// gate pass reads, with gate stride `units`).
std::vector<int64_t> forward_source_rows(int64_t hidden, int64_t block) {
  std::vector<int64_t> source_row;
  source_row.reserve(4 * hidden);
  for (int64_t j0 = 0; j0 < hidden; j0 += block) {
    const int64_t units = std::min(block, hidden - j0);
    for (int64_t gate = 0; gate < 4; ++gate) {
      for (int64_t j = j0; j < j0 + units; ++j) source_row.push_back(gate * hidden + j);
    }
  }
  return source_row;
}

namespace {

// The forward operand as `out` (K * 4H elements): W_hhᵀ with its columns reordered
// (forward_source_rows), as one [K, 4H] row-major matrix or block-major (block u's [K, 4 * units]
// columns a row-major matrix of their own at element K * 4 * j0: Note [Recurrent GEMMs on CPU]).
// One tiled pass: a transposing copy through ATen costs 0.8 ms at H=512, a large part of a short
// layer's time.
template <typename scalar_t>
void forward_blocked_weight(const Tensor& w_hh, int64_t hidden, int64_t block, bool block_major, const Tensor& out) {
  const Tensor w = w_hh.contiguous();
  const int64_t K = w.size(1), n = 4 * hidden;
  const std::vector<int64_t> source_row = forward_source_rows(hidden, block);
  TORCH_INTERNAL_ASSERT(out.is_contiguous() && out.numel() == K * n);
  // Column c of the operand at dst[column_offset[c] + k * row_stride[c]].
  std::vector<int64_t> column_offset(n), row_stride(n);
  for (int64_t j0 = 0; j0 < hidden; j0 += block) {
    const int64_t begin = 4 * j0, width = 4 * std::min(block, hidden - j0);
    for (int64_t c = begin; c < begin + width; ++c) {
      column_offset[c] = block_major ? K * begin + (c - begin) : c;
      row_stride[c] = block_major ? width : n;
    }
  }
  const scalar_t* src = w.const_data_ptr<scalar_t>();
  scalar_t* dst = out.data_ptr<scalar_t>();
  constexpr int64_t kTile = 32;  // 32 x 32 tiles: both sides of a tile stay in L1
  const int64_t column_tiles = (n + kTile - 1) / kTile;
  at::parallel_for(0, column_tiles, std::max<int64_t>(1, 16384 / (kTile * std::max<int64_t>(K, 1))),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t tile = begin; tile < end; ++tile) {
                       const int64_t c0 = tile * kTile, c1 = std::min(n, c0 + kTile);
                       for (int64_t k0 = 0; k0 < K; k0 += kTile) {
                         const int64_t k1 = std::min(K, k0 + kTile);
                         for (int64_t k = k0; k < k1; ++k) {
                           for (int64_t c = c0; c < c1; ++c) {
                             dst[column_offset[c] + k * row_stride[c]] = src[source_row[c] * K + k];
                           }
                         }
                       }
                     }
                   });
}

}  // namespace

// The same operand for MKL's packed path, which packs a transposed B itself: only W_hh's rows
// reordered into `out_rows` [4H, K] (whole rows copied, no transpose); the operand is
// out_rows.t(). Measured T=64 B=16 H=768: the tiled transpose took ~2 ms a call.
template <typename scalar_t>
void forward_blocked_rows(const Tensor& w_hh, int64_t hidden, int64_t block, const Tensor& out_rows) {
  const Tensor w = w_hh.contiguous();
  const int64_t K = w.size(1), n = 4 * hidden;
  const std::vector<int64_t> source_row = forward_source_rows(hidden, block);
  TORCH_INTERNAL_ASSERT(out_rows.is_contiguous() && out_rows.size(0) == n && out_rows.size(1) == K);
  const scalar_t* src = w.const_data_ptr<scalar_t>();
  scalar_t* dst = out_rows.data_ptr<scalar_t>();
  at::parallel_for(0, n, std::max<int64_t>(1, 16384 / std::max<int64_t>(K, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) std::memcpy(dst + r * K, src + source_row[r] * K, K * sizeof(scalar_t));
  });
}

template void forward_blocked_rows<float>(const Tensor&, int64_t, int64_t, const Tensor&);
template void forward_blocked_rows<double>(const Tensor&, int64_t, int64_t, const Tensor&);

namespace {

// Note [Prepared weight cache]
// Layers run with the same weights call after call (inference above all), and preparing the
// transposed operand is a fixed cost per call that matters for short sequences and small
// batches (with it cached, T=4 B=1 H=256 inference 0.41 -> 0.37 ms). So the transposed operand
// (the brgemm and at::mm paths; the MKL path's row copies and packing are cheaper and not
// cached) is kept per weight, and reused when the weight's bytes are unchanged -- compared in
// full against a copy taken when it was prepared (a read of twice the weight, against a
// transposing gather), so an update through `.data`, an optimizer step or a load_state_dict that
// the version counter may not show is always seen. At most kCachedOperands entries and
// kCachedBytes bytes (operands plus copies) in all, least recently used evicted first.
class ForwardOperandCache {
 public:
  static constexpr size_t kCachedOperands = 8;
  static constexpr int64_t kCachedBytes = int64_t{64} << 20;

  // The operand of forward_blocked_weight for w_hh, in dtype `acc_type`.
  Tensor get(const Tensor& w_hh, int64_t hidden, int64_t block, bool block_major, at::ScalarType acc_type) {
    const Tensor w = w_hh.contiguous();
    const int64_t bytes = w.numel() * static_cast<int64_t>(w.element_size());
    const Key key{w.data_ptr(), w.scalar_type(), acc_type, hidden, block, w.size(1), block_major};
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      for (auto it = entries_.begin(); it != entries_.end(); ++it) {
        if (!(it->key == key)) continue;
        if (std::memcmp(it->source.const_data_ptr(), w.const_data_ptr(), bytes) == 0) {
          Tensor operand = it->operand;
          entries_.splice(entries_.begin(), entries_, it);  // most recently used first
          return operand;
        }
        cached_bytes_ -= it->bytes;
        entries_.erase(it);  // the weight changed: prepare again below
        break;
      }
    }
    Tensor operand = block_major ? at::empty({w.size(1) * 4 * hidden}, w.options().dtype(acc_type))
                                 : at::empty({w.size(1), 4 * hidden}, w.options().dtype(acc_type));
    AT_DISPATCH_FLOATING_TYPES(acc_type, "forward_operand_cache", [&] {
      forward_blocked_weight<scalar_t>(w.to(acc_type), hidden, block, block_major, operand);
    });
    const int64_t entry_bytes = bytes + operand.numel() * static_cast<int64_t>(operand.element_size());
    if (entry_bytes <= kCachedBytes) {
      const std::lock_guard<std::mutex> lock(mutex_);
      entries_.push_front({key, w.clone(), operand, entry_bytes});
      cached_bytes_ += entry_bytes;
      while (entries_.size() > kCachedOperands || cached_bytes_ > kCachedBytes) {
        cached_bytes_ -= entries_.back().bytes;
        entries_.pop_back();
      }
    }
    return operand;
  }

 private:
  struct Key {
    const void* data;
    at::ScalarType dtype, acc_type;
    int64_t hidden, block, depth;
    bool block_major;
    bool operator==(const Key& o) const {
      return data == o.data && dtype == o.dtype && acc_type == o.acc_type && hidden == o.hidden && block == o.block &&
             depth == o.depth && block_major == o.block_major;
    }
  };
  struct Entry {
    Key key;
    Tensor source;   // the weight's bytes when the operand was prepared
    Tensor operand;  // never written after it is cached
    int64_t bytes;   // of both
  };
  std::mutex mutex_;
  std::list<Entry> entries_;
  int64_t cached_bytes_ = 0;
};

ForwardOperandCache& forward_operand_cache() {
  static auto* cache = new ForwardOperandCache();  // never destroyed: outlives static destructors
  return *cache;
}

}  // namespace

Tensor prepared_forward_operand(const Tensor& w_hh, int64_t hidden, int64_t block, bool block_major,
                                at::ScalarType acc_type) {
  return forward_operand_cache().get(w_hh, hidden, block, block_major, acc_type);
}

// Block u's columns: [begin[u], begin[u + 1]) with width_per_unit columns for each unit.

}  // namespace cpu
}  // namespace fused_lstm
