// CPU implementation of the layer ops.
//
// Forward: the input projection for all steps as one GEMM; then the recurrence over blocks of
// hidden units, each block's task per step multiplying h_prev by its block's packed slice of
// W_hhᵀ (all four gates of its units) and running the fused, vectorised gate pass on that
// product while it is in cache: add the hoisted input projection and bias, sigmoid/tanh, update
// c and h, write the saved gates when training (Note [Recurrent GEMMs on CPU] in packed_gemm.h;
// the gate passes are built per instruction set, Note [CPU instruction sets]); one thread team
// runs the whole sequence (Note [One thread team per sequence]). Backward: the reverse recurrence
// the same way (carry GEMM per unit block, then that block's gate backward), then
// lstm_layer_backward_impl's large weight-gradient GEMMs. Buffers that never leave a call come
// from pooled memory (Note [CPU scratch memory] in scratch_pool.h).
// All arithmetic is in the opmath type (float for bf16/fp16), with c carried in it across steps
// and h too, except where bf16 products take h rounded anyway (below); outputs are rounded to
// the input dtype once.
//
// Note [bfloat16 GEMMs on CPU]
// For bfloat16 layers on a CPU with bf16 dot-product instructions (AVX512_BF16; oneDNN also uses
// AMX where present) the input projection and the backward's weight/input-gradient GEMMs run as
// bf16 GEMMs (at::mm -> oneDNN; dgates rounded to bf16). The per-step recurrent product: on CPUs
// with AMX (and H a multiple of 16, P even) each unit block multiplies h_prev rounded to bf16 by
// its W_hh columns packed once per call in oneDNN's VNNI layout, accumulating in fp32
// (BlockedOperandBf16, Note [Recurrent GEMMs on CPU]); elsewhere one bf16 at::mm per step. The
// gate pass computes in fp32; without a projection it reads the bf16 input projection as it is
// and writes h rounded to bf16 (the next product and the output take nothing else: no widening
// pass over [N, 4H], no per-step rounding of h, no final rounding of the output). The backward's
// carry: on AMX with H a multiple of 64, dgates rounded to bf16 (written by the gate backward
// alongside the fp32 ones, then also the large GEMMs' operand) times W_hh packed in bf16, as
// oneDNN's bf16 LSTM does; otherwise fp32 (the fused recurrence) or, with a projection, bf16
// at::mm per step. Measured on a 2-core Xeon with AMX: [6400,512]x[512,2048] 16 ms vs 112 ms in
// fp32; T=100 B=64 H=512 bf16 inference 50 -> 22 ms with the bf16 gate-pass I/O and pooled
// memory (nn.LSTM 21), fwd+bwd 136 -> 102 ms with the bf16 carry (nn.LSTM 130). at::mm's
// products come out rounded to bf16 (nn.LSTM's oneDNN bf16 path keeps them in fp32), an extra
// relative error of 2^-9 on each pre-activation term; the tests hold the result to the same bf16
// error rule as before (within 2x nn.LSTM's own bf16 error).
// FUSED_LSTM_CPU_BF16_GEMM=0 forces the fp32 GEMMs (=1 forces bf16 ones).
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <list>
#include <mutex>
#include <optional>
#include <vector>

#include "cpu/gate_kernels.h"
#include "cpu/gemm_choice.h"
#include "cpu/packed_gemm.h"
#include "cpu/scratch_pool.h"
#include "kernels/lstm_step.h"
#include "lstm_common.h"

namespace fused_lstm {
namespace {

// Pointwise work is split into (row, chunk of hidden units) tasks; below this many cells per task
// the threads' start-up costs more than it saves.
constexpr int64_t kHiddenChunk = 256;
constexpr int64_t kCellsPerTask = 16384;

int64_t grain_in_tasks(int64_t chunk) { return std::max<int64_t>(1, kCellsPerTask / chunk); }

// Note [Recurrent GEMMs on CPU]: hidden units per block, about two blocks per thread, from 16 to
// 128 units. Measured per step on 2 cores (fp32): B=4 H=512 95 us with blocks of 128 vs 138 with
// 64; B=64 and B=16 at H=512 alike with 64 or 128. FUSED_LSTM_CPU_UNIT_BLOCK=n overrides (a
// multiple of 16, for tuning on other machines).
int64_t unit_block_size(int64_t hidden) {
  if (const char* forced = std::getenv("FUSED_LSTM_CPU_UNIT_BLOCK")) {
    const int64_t block = std::atoll(forced);
    TORCH_CHECK_VALUE(block > 0 && block % 16 == 0,
                      "fused_lstm: FUSED_LSTM_CPU_UNIT_BLOCK must be "
                      "a positive multiple of 16, got '",
                      forced, "'");
    return block;
  }
  const int64_t per_two_blocks_a_thread = hidden / (2 * std::max(1, at::get_num_threads()));
  return std::clamp<int64_t>(per_two_blocks_a_thread / 16 * 16, 16, 128);
}

// Preparing the per-block operands (a reordering transpose of W_hh, MKL packing) costs about as
// much as a few steps: a call with fewer steps multiplies through at::mm instead, forward and
// backward. Measured T=1 B=16 H=512 inference: 1.9 ms prepared vs nn.LSTM's 1.1 ms.
constexpr int64_t kMinStepsToPrepareWeights = 4;

// A parallel region costs a few microseconds; give each task at least this many multiply-adds
// (GEMM plus roughly 16 per cell for the gate pass), else fewer tasks (down to running inline).
constexpr int64_t kMinWorkPerTask = 1 << 17;

int64_t block_grain(int64_t rows, int64_t depth, int64_t block) {
  const int64_t work = rows * block * (4 * depth + 16);
  return std::max<int64_t>(1, kMinWorkPerTask / std::max<int64_t>(1, work));
}

// The unit block of a recurrence over `rows` rows with products of depth `depth` and
// `width_per_unit` columns a unit: unit_block_size rounded up to a multiple of `align`, except
// where the recurrence runs on one thread anyway (too little work a step to split, or one
// thread) and a step's whole product is small (<= 64 KiB): then one block of all the units, one
// product call a step instead of several (T=100 B=1 H=128 inference 0.50 -> 0.45 ms).
// FUSED_LSTM_CPU_UNIT_BLOCK, when set, is used as is (rounded up to `align`).
int64_t recurrence_block_size(int64_t hidden, int64_t rows, int64_t depth, int64_t width_per_unit, int64_t align,
                              int64_t element_size) {
  const int64_t block = (unit_block_size(hidden) + align - 1) / align * align;
  if (std::getenv("FUSED_LSTM_CPU_UNIT_BLOCK") != nullptr || block >= hidden) return block;
  const int64_t num_blocks = (hidden + block - 1) / block;
  const bool one_task = num_blocks <= block_grain(rows, depth, block) || at::get_num_threads() == 1;
  const bool small_product = rows * width_per_unit * hidden * element_size <= (int64_t{64} << 10);
  return one_task && small_product ? hidden : block;
}

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

// The forward operand as `out` [K, 4H]: W_hhᵀ with its columns reordered
// (forward_source_rows). One tiled pass: a transposing copy through ATen costs 0.8 ms at H=512,
// a large part of a short layer's time.
template <typename scalar_t>
void forward_blocked_weight(const Tensor& w_hh, int64_t hidden, int64_t block, const Tensor& out) {
  const Tensor w = w_hh.contiguous();
  const int64_t K = w.size(1), n = 4 * hidden;
  const std::vector<int64_t> source_row = forward_source_rows(hidden, block);
  TORCH_INTERNAL_ASSERT(out.is_contiguous() && out.size(0) == K && out.size(1) == n);
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
                           for (int64_t c = c0; c < c1; ++c) dst[k * n + c] = src[source_row[c] * K + k];
                         }
                       }
                     }
                   });
}

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

  // The [K, 4H] operand of forward_blocked_weight for w_hh, in dtype `acc_type`.
  Tensor get(const Tensor& w_hh, int64_t hidden, int64_t block, at::ScalarType acc_type) {
    const Tensor w = w_hh.contiguous();
    const int64_t bytes = w.numel() * static_cast<int64_t>(w.element_size());
    const Key key{w.data_ptr(), w.scalar_type(), acc_type, hidden, block, w.size(1)};
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
    Tensor operand = at::empty({w.size(1), 4 * hidden}, w.options().dtype(acc_type));
    AT_DISPATCH_FLOATING_TYPES(acc_type, "forward_operand_cache",
                               [&] { forward_blocked_weight<scalar_t>(w.to(acc_type), hidden, block, operand); });
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
    bool operator==(const Key& o) const {
      return data == o.data && dtype == o.dtype && acc_type == o.acc_type && hidden == o.hidden && block == o.block &&
             depth == o.depth;
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

// Block u's columns: [begin[u], begin[u + 1]) with width_per_unit columns for each unit.
std::vector<int64_t> block_column_begin(int64_t hidden, int64_t block, int64_t width_per_unit) {
  std::vector<int64_t> begin;
  for (int64_t j0 = 0; j0 < hidden; j0 += block) begin.push_back(j0 * width_per_unit);
  begin.push_back(hidden * width_per_unit);
  return begin;
}

// Note [One thread team per sequence]
// The per-step work of a unit-block recurrence (Note [Recurrent GEMMs on CPU]) is small -- tens
// of microseconds at B=16 H=128 -- and opening a parallel region per step (the fork and the join
// of an OpenMP team) was ~15% of it (libgomp's share of a profile). So, where a step needs no
// ATen work between the blocks' tasks, one OpenMP team runs the whole sequence: each thread owns
// a fixed range of unit blocks (the blocks' work is alike, so a static split balances) and the
// team meets at a barrier after each step. Serial work some steps need (joining h rows of a
// reverse packed step) runs on the calling thread, whose thread-local state (below autograd) ATen
// calls need, between barriers. Otherwise -- and in builds without OpenMP -- one at::parallel_for
// per step, with the serial work before it and `finish` after it.
//
// run_recurrence(num_steps, num_blocks, grain, one_team_allowed, needs_serial, serial, blocks,
// finish, thread_done): step k is serial(k) (every step in the per-step mode, only where
// needs_serial(k) in a team), blocks(k, u_begin, u_end), finish(k) (per-step mode only: pass
// one_team_allowed=false where it does anything). thread_done() runs on each thread after its
// last blocks() call of the sequence (team) or of the step (per-step mode): releasing AMX state.
// An exception in any part stops all threads after that step and is rethrown on the calling
// thread.
template <typename NeedsSerial, typename Serial, typename Blocks, typename Finish, typename ThreadDone>
void run_recurrence(int64_t num_steps, int64_t num_blocks, int64_t grain, bool one_team_allowed,
                    const NeedsSerial& needs_serial, const Serial& serial, const Blocks& blocks, const Finish& finish,
                    const ThreadDone& thread_done) {
  const int64_t tasks = (num_blocks + grain - 1) / grain;
  const int64_t team = std::min<int64_t>(at::get_num_threads(), tasks);
#ifdef _OPENMP
  if (one_team_allowed && team > 1 && !at::in_parallel_region()) {
    std::atomic<int64_t> failed_step{num_steps};  // the first step where something threw
    std::exception_ptr error;
    std::mutex error_mutex;
    auto record = [&](int64_t k) {
      const std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      int64_t seen = failed_step.load();
      while (k < seen && !failed_step.compare_exchange_weak(seen, k)) {
      }
    };
#pragma omp parallel num_threads(static_cast<int>(team))
    {
      const int64_t thread = omp_get_thread_num(), threads = omp_get_num_threads();
      const int64_t u_begin = num_blocks * thread / threads;
      const int64_t u_end = num_blocks * (thread + 1) / threads;
      for (int64_t k = 0; k < num_steps; ++k) {
        if (needs_serial(k)) {
          if (thread == 0) {
            try {
              serial(k);
            } catch (...) {
              record(k);
            }
          }
#pragma omp barrier
        }
        if (failed_step.load() > k) {
          try {
            blocks(k, u_begin, u_end);
          } catch (...) {
            record(k);
          }
        }
#pragma omp barrier
        // Every thread reads this after the same barrier; a failure in a later step cannot have
        // been recorded yet (it needs this barrier passed), so all threads stop at the same step.
        if (failed_step.load() <= k) break;
      }
      thread_done();
    }
    if (error) std::rethrow_exception(error);
    return;
  }
#endif
  for (int64_t k = 0; k < num_steps; ++k) {
    serial(k);
    at::parallel_for(0, num_blocks, grain, [&](int64_t begin, int64_t end) {
      blocks(k, begin, end);
      thread_done();
    });
    finish(k);
  }
}

// Asks for the lines of `rows` rows x 4 gates x `units` elements (at base + b * row_stride +
// gate * gate_stride) to be brought into L2. A unit block's gate pass reads its units' slice of
// the step's input projection, written by the input GEMM long before and no longer in cache:
// short strided runs the hardware prefetchers barely follow, so the pass waited on them (the
// loads of pre were a quarter of its profile at B=16 H=128). Issued before the block's product,
// whose time hides the fetch: 3-4% off T=100 inference at B=16 H=128 and at B=64 H=512.
template <typename T>
void prefetch_gate_rows(const T* base, int64_t rows, int64_t row_stride, int64_t gate_stride, int64_t units) {
  constexpr int64_t kLine = 64 / sizeof(T);
  for (int64_t b = 0; b < rows; ++b) {
    for (int64_t gate = 0; gate < 4; ++gate) {
      const T* run = base + b * row_stride + gate * gate_stride;
      for (int64_t e = 0; e < units; e += kLine) __builtin_prefetch(run + e, /*rw=*/0, /*locality=*/2);
    }
  }
}

// h_prev of a step, [rows, P] with row stride P, read where it already is (Note [Row layout and
// step schedule]): the previous processed step's rows of `out` (h of every token), h0 (hx) at the
// first step, and both only where a reverse packed step starts new sequences (rows > prev_rows):
// then joined into `joined` (allocated on first use).
template <typename T>
const T* previous_h(const StepRows& step, int64_t P, const Tensor& out, const Tensor& h0, Tensor& joined) {
  if (step.prev_rows >= step.rows) return out.const_data_ptr<T>() + step.prev_row_offset * P;
  if (step.prev_rows == 0) return h0.const_data_ptr<T>();
  if (!joined.defined()) joined = at::empty_like(h0);
  joined.narrow(0, 0, step.prev_rows).copy_(out.narrow(0, step.prev_row_offset, step.prev_rows));
  joined.narrow(0, step.prev_rows, step.rows - step.prev_rows)
      .copy_(h0.narrow(0, step.prev_rows, step.rows - step.prev_rows));
  return joined.const_data_ptr<T>();
}

// Note [bfloat16 GEMMs on CPU]: whether a bf16 layer's GEMMs run in bf16 here.
bool use_bf16_gemms() {
  if (const char* forced = std::getenv("FUSED_LSTM_CPU_BF16_GEMM")) {
    TORCH_CHECK_VALUE(std::strcmp(forced, "0") == 0 || std::strcmp(forced, "1") == 0,
                      "fused_lstm: FUSED_LSTM_CPU_BF16_GEMM must be 0 or 1, got '", forced, "'");
    return forced[0] == '1';
  }
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool has_bf16_dot = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") != 0;
  }();
  return has_bf16_dot && at::hasMKLDNN() && at::globalContext().userEnabledMkldnn();
#else
  return false;
#endif
}

// Note [Single steps on CPU]
// One step of a few rows (T = 1 calls, LSTMCell steps, decoding loops) is two small products and
// a gate pass: microseconds of arithmetic, so fixed costs decide. The general path adds a step
// schedule, pooled buffers, a bias tensor and a final-state gather. Here: x · W_ihᵀ and h · W_hhᵀ
// into two small buffers (each by at::mm or by dot products along the weights' stored rows, no
// packing or transposed copy: whichever is measured faster on this host, Note [Measured GEMM
// choice on CPU]), the gate pass on them, and h's final state copied from the output row.
constexpr int64_t kSingleStepMaxRows = 8;  // more rows: the row dot products re-read the weights

bool single_step_applies(const LayerShape& s, at::ScalarType dtype) {
  return s.steps == 1 && !s.has_proj && s.batch <= kSingleStepMaxRows && s.input > 0 &&
         (dtype == at::kFloat || dtype == at::kDouble);
}

ForwardResult forward_single_step(const LayerShape& s, const Tensor& input, const Tensor& hx, const Tensor& cx,
                                  const Tensor& weight_ih, const Tensor& weight_hh,
                                  const c10::optional<Tensor>& bias_ih, const c10::optional<Tensor>& bias_hh,
                                  bool save_workspace) {
  const int64_t B = s.batch, H = s.hidden, I = s.input;
  const auto options = input.options();
  Tensor out = at::empty({B, H}, options);
  Tensor c_state = cx.contiguous().clone();
  Tensor gates = save_workspace ? at::empty(per_token_shape(s, 4 * H), options) : at::empty({0}, options);
  Tensor cells = save_workspace ? at::empty(per_token_shape(s, H), options) : at::empty({0}, options);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "lstm_layer_forward_cpu_single_step", [&] {
    Tensor products = at::empty({2, B, 4 * H}, options);  // one allocation for both
    Tensor pre = products[0], rec = products[1];
    cpu::small_linear(input.reshape({B, I}).contiguous(), weight_ih.contiguous(), pre);
    cpu::small_linear(hx.contiguous(), weight_hh.contiguous(), rec);
    std::vector<scalar_t> bias(4 * H, scalar_t(0));
    if (s.has_bias) {
      const scalar_t* b_ih = bias_ih->contiguous().const_data_ptr<scalar_t>();
      const scalar_t* b_hh = bias_hh->contiguous().const_data_ptr<scalar_t>();
      for (int64_t n = 0; n < 4 * H; ++n) bias[n] = b_ih[n] + b_hh[n];
    }
    const scalar_t* pre_p = pre.const_data_ptr<scalar_t>();
    const scalar_t* rec_p = rec.const_data_ptr<scalar_t>();
    const auto forward_cells = cpu::gate_kernels().forward<scalar_t>();
    scalar_t* gates_p = save_workspace ? gates.data_ptr<scalar_t>() : nullptr;
    scalar_t* cells_p = save_workspace ? cells.data_ptr<scalar_t>() : nullptr;
    for (int64_t b = 0; b < B; ++b) {
      forward_cells(pre_p + b * 4 * H, rec_p + b * 4 * H, H, bias.data(), c_state.data_ptr<scalar_t>() + b * H,
                    out.data_ptr<scalar_t>() + b * H, gates_p ? gates_p + b * 4 * H : nullptr,
                    cells_p ? cells_p + b * H : nullptr, H, 0, H);
    }
  });
  // hy is h of the only step; a copy, not a view: the op's outputs never alias one another.
  return {out.view(per_token_shape(s, H)), out.clone(), c_state, gates, cells};
}

ForwardResult lstm_layer_forward_cpu(const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& weight_ih,
                                     const Tensor& weight_hh, const c10::optional<Tensor>& bias_ih,
                                     const c10::optional<Tensor>& bias_hh, const c10::optional<Tensor>& weight_hr,
                                     const c10::optional<Tensor>& batch_sizes, bool reverse, bool save_workspace) {
  // Below autograd: the op is differentiated by its backward op, never through its internals.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const LayerShape s = check_layer_arguments("fused_lstm.lstm_layer_forward", input, hx, cx, weight_ih, weight_hh,
                                             bias_ih, bias_hh, weight_hr, batch_sizes);
  if (s.tokens == 0) return forward_without_tokens(s, input, hx, cx, save_workspace);
  cpu::check_gemm_choice_environment();  // a bad value fails every call, not only where it is read
  if (single_step_applies(s, input.scalar_type())) {
    return forward_single_step(s, input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, save_workspace);
  }
  const int64_t N = s.tokens, B = s.batch, H = s.hidden, P = s.proj;
  const auto dtype = input.scalar_type();
  const auto acc_type = opmath_type(dtype);
  const auto acc = input.options().dtype(acc_type);

  // How the GEMMs run. The recurrent product: each unit block multiplies its slice inside the
  // step's region, in the opmath type or (bf16 GEMMs on AMX, Note [bfloat16 GEMMs on CPU]) in
  // bf16; other bf16 GEMMs take the whole product through at::mm before each step's region.
  // (Blocks of a multiple of 16 units: oneDNN packs bf16 weights in panels of 64 columns.)
  // Sequences of fewer than kMinStepsToPrepareWeights steps (T=1 decoding, say) skip the
  // preparation too: the whole product per step through at::mm, which packs internally.
  const bool bf16_gemms = dtype == at::kBFloat16 && use_bf16_gemms();
  const bool prepare_weights = s.steps >= kMinStepsToPrepareWeights;
  const bool amx_recurrence =
      prepare_weights && bf16_gemms && P % 2 == 0 && H % 16 == 0 && cpu::BlockedOperandBf16::available();
  const bool whole_product = !prepare_weights || (bf16_gemms && !amx_recurrence);
  // AMX layers without projection keep the input projection and h in bf16 (ForwardCellsBf16Fn):
  // h rounded to bf16 is all its consumers (the next step's product, the output) ever take.
  const bool bf16_io = amx_recurrence && !s.has_proj;

  // Hoisted input projection for all steps: one GEMM, into pooled memory (Note [CPU scratch
  // memory]: fresh pages for it cost a quarter of the GEMM). The biases are added in the gate
  // pass (folding them in with addmm costs a [N, 4H] broadcast copy: 12 ms of 150 at T=100 B=64
  // H=512).
  // The GEMM is the measured choice for this host and shape (Note [Measured GEMM choice on CPU]).
  Tensor pre = cpu::scratch_empty({N, 4 * H}, bf16_gemms ? at::kBFloat16 : acc_type);
  if (bf16_gemms) {
    pre = cpu::linear(input.reshape({N, s.input}), weight_ih.contiguous(), pre);
    if (!bf16_io) {  // widened for the float gate pass
      Tensor widened = cpu::scratch_empty({N, 4 * H}, acc_type);
      widened.copy_(pre);
      pre = widened;
    }
  } else {
    pre = cpu::linear(input.reshape({N, s.input}).to(acc_type), weight_ih.to(acc_type).contiguous(), pre);
  }
  const Tensor bias =
      s.has_bias ? (bias_ih->to(acc_type) + bias_hh->to(acc_type)).contiguous() : at::zeros({4 * H}, acc);
  const Tensor w_hh_t = !whole_product ? Tensor() : bf16_gemms ? weight_hh.t() : weight_hh.to(acc_type).t();
  const Tensor w_hr_t = s.has_proj ? weight_hr->to(acc_type).t() : Tensor();

  // Buffers for the whole sequence, allocated once (no per-step allocation). `out`, h of every
  // token: the output itself (opmath layers, bf16_io layers), else opmath scratch rounded into
  // the output at the end.
  Tensor out = dtype == acc_type ? at::empty({N, P}, acc)
               : bf16_io         ? at::empty({N, P}, input.options())
                                 : cpu::scratch_empty({N, P}, acc_type);
  const Tensor h0 = bf16_io ? hx.contiguous() : hx.to(acc_type).contiguous();  // out's dtype
  Tensor h_joined;  // only for steps whose rows start from both out and hx (previous_h)
  Tensor c_state = cx.to(acc_type).contiguous().clone();
  Tensor h_unprojected = s.has_proj ? at::empty({B, H}, acc) : Tensor();
  // Saved for backward, one row per token: [T, B, 4H] / [T, B, H] (or [N, .] packed); scratch
  // memory too, back in the pool once autograd has run the backward and let them go.
  Tensor gates = save_workspace ? cpu::scratch_empty(per_token_shape(s, 4 * H), acc_type) : at::empty({0}, acc);
  Tensor cells = save_workspace ? cpu::scratch_empty(per_token_shape(s, H), acc_type) : at::empty({0}, acc);

  const auto schedule = make_step_schedule(s, batch_sizes, reverse);
  AT_DISPATCH_FLOATING_TYPES(acc_type, "lstm_layer_forward_cpu", [&] {
    const auto forward_cells = cpu::gate_kernels().forward<scalar_t>();
    const auto forward_cells_bf16_io = cpu::gate_kernels().forward_bf16_io;
    const int64_t block = recurrence_block_size(H, B, P, 4, /*align=*/16, sizeof(scalar_t));
    const int64_t num_blocks = (H + block - 1) / block;
    // [K, 4H]: W_hhᵀ with its columns in (block, gate, unit) order: a transposed copy
    // (forward_blocked_weight), or for MKL's packed path, which transposes while packing, a
    // transposed view of W_hh's rows reordered (forward_blocked_rows).
    Tensor w_hh_blocked;
    if (!whole_product && !amx_recurrence &&
        cpu::BlockedOperand<scalar_t>::packs_with_mkl(B, P, 4 * std::min(block, H))) {
      const Tensor rows = cpu::scratch_empty({4 * H, P}, acc_type);
      forward_blocked_rows<scalar_t>(weight_hh.to(acc_type), H, block, rows);
      w_hh_blocked = rows.t();
    } else if (!whole_product) {  // Note [Prepared weight cache]
      w_hh_blocked = forward_operand_cache().get(weight_hh, H, block, acc_type);
    }
    std::optional<cpu::BlockedOperand<scalar_t>> w_blocks;
    std::optional<cpu::BlockedOperandBf16> w_blocks_bf16;
    if (amx_recurrence) {
      w_blocks_bf16.emplace(w_hh_blocked, block_column_begin(H, block, 4));
    } else if (!whole_product) {
      w_blocks.emplace(w_hh_blocked, block_column_begin(H, block, 4), B);
    }
    // AMX products of float h (a projection): h_prev rounded to bf16 once per step.
    Tensor h_prev_bf16 = amx_recurrence && !bf16_io ? at::empty({B, P}, acc.dtype(at::kBFloat16)) : Tensor();
    // Recurrent products, [B, 4H]: columns in the whole bf16 product's gate-major order, else in
    // w_hh_blocked's (block u's [rows, 4 * units] product at columns 4 * j0, row stride 4H).
    Tensor rec = at::empty({B * 4 * H}, acc);
    scalar_t* rec_p = rec.data_ptr<scalar_t>();
    const scalar_t* bias_p = bias.data_ptr<scalar_t>();
    scalar_t* c_p = c_state.data_ptr<scalar_t>();
    // The per-token buffers' base pointers, looked up once (the per-step work indexes them):
    // pre and out in bf16 for bf16_io layers, in scalar_t otherwise.
    const scalar_t* pre_p = bf16_io ? nullptr : pre.const_data_ptr<scalar_t>();
    const c10::BFloat16* pre_bf16_p = bf16_io ? pre.const_data_ptr<c10::BFloat16>() : nullptr;
    scalar_t* out_p = bf16_io ? nullptr : out.data_ptr<scalar_t>();
    c10::BFloat16* out_bf16_p = bf16_io ? out.data_ptr<c10::BFloat16>() : nullptr;
    scalar_t* h_unprojected_p = s.has_proj ? h_unprojected.data_ptr<scalar_t>() : nullptr;
    scalar_t* gates_base = save_workspace ? gates.data_ptr<scalar_t>() : nullptr;
    scalar_t* cells_base = save_workspace ? cells.data_ptr<scalar_t>() : nullptr;
    // Per step (Note [One thread team per sequence]): `serial` finds h_prev (joining rows where a
    // reverse packed step starts new sequences), runs the whole product or rounds h_prev to bf16
    // where those are used; `blocks` runs unit blocks' products and gate passes; `finish`
    // projects h. Without whole products or projection, the serial part is pointer arithmetic
    // except for joins, and one thread team runs the sequence.
    const scalar_t* h_prev = nullptr;               // [rows, P], row stride P
    const c10::BFloat16* h_prev_rounded = nullptr;  // the same in bf16 (AMX products)
    auto needs_join = [&](int64_t k) { return schedule[k].prev_rows > 0 && schedule[k].prev_rows < schedule[k].rows; };
    auto serial = [&](int64_t k) {
      const StepRows& step = schedule[k];
      const int64_t rows = step.rows;
      if (bf16_io) {
        h_prev_rounded = previous_h<c10::BFloat16>(step, P, out, h0, h_joined);
      } else {
        h_prev = previous_h<scalar_t>(step, P, out, h0, h_joined);
      }
      if (whole_product) {
        const Tensor h_prev_rows = at::from_blob(const_cast<scalar_t*>(h_prev), {rows, P}, acc);
        Tensor rec_rows = rec.view({B, 4 * H}).narrow(0, 0, rows);
        if (bf16_gemms) {
          rec_rows.copy_(at::mm(h_prev_rows.to(at::kBFloat16), w_hh_t));
        } else {
          at::mm_out(rec_rows, h_prev_rows, w_hh_t);
        }
      } else if (amx_recurrence && !bf16_io) {  // through ATen's copy: vectorised for this CPU
        h_prev_bf16.narrow(0, 0, rows).copy_(at::from_blob(const_cast<scalar_t*>(h_prev), {rows, P}, acc));
        h_prev_rounded = h_prev_bf16.const_data_ptr<c10::BFloat16>();
      }
    };
    const bool one_team = !whole_product && !s.has_proj && (bf16_io || !amx_recurrence);
    auto blocks = [&](int64_t k, int64_t u_begin, int64_t u_end) {
      const StepRows& step = schedule[k];
      const int64_t rows = step.rows;
      // In a team only joins run `serial`: other steps read h_prev where it is, here.
      const scalar_t* step_h_prev = h_prev;
      const c10::BFloat16* step_h_prev_rounded = h_prev_rounded;
      if (one_team && !needs_join(k)) {
        if (bf16_io) {
          step_h_prev_rounded = previous_h<c10::BFloat16>(step, P, out, h0, h_joined);
        } else {
          step_h_prev = previous_h<scalar_t>(step, P, out, h0, h_joined);
        }
      }
      const int64_t pre_offset = step.row_offset * 4 * H;
      scalar_t* gates_p = save_workspace ? gates_base + pre_offset : nullptr;
      scalar_t* cells_p = save_workspace ? cells_base + step.row_offset * H : nullptr;
      for (int64_t u = u_begin; u < u_end; ++u) {
        const int64_t j0 = u * block, units = std::min(block, H - j0);
        if (bf16_io) {
          prefetch_gate_rows(pre_bf16_p + pre_offset + j0, rows, 4 * H, H, units);
        } else {
          prefetch_gate_rows(pre_p + pre_offset + j0, rows, 4 * H, H, units);
        }
        // Gate g of unit j0 + jj of row b at rec_u[b * row_stride + g * gate_stride + jj].
        const scalar_t* rec_u;
        int64_t row_stride, gate_stride;
        if (whole_product) {
          rec_u = rec_p + j0, row_stride = 4 * H, gate_stride = H;
        } else {
          scalar_t* product = rec_p + 4 * j0;
          if (amx_recurrence) {  // bf16 layers only, so scalar_t is float here
            w_blocks_bf16->multiply(u, rows, step_h_prev_rounded, P, reinterpret_cast<float*>(product), 4 * H);
          } else {
            w_blocks->multiply(u, rows, step_h_prev, P, product, 4 * H);
          }
          rec_u = product, row_stride = 4 * H, gate_stride = units;
        }
        for (int64_t b = 0; b < rows; ++b) {
          scalar_t* gates_row = gates_p ? gates_p + b * 4 * H : nullptr;
          scalar_t* cells_row = cells_p ? cells_p + b * H : nullptr;
          if (bf16_io) {  // bf16 layers only, so scalar_t is float here
            forward_cells_bf16_io(pre_bf16_p + pre_offset + b * 4 * H,
                                  reinterpret_cast<const float*>(rec_u + b * row_stride), gate_stride,
                                  reinterpret_cast<const float*>(bias_p), reinterpret_cast<float*>(c_p + b * H),
                                  out_bf16_p + (step.row_offset + b) * P, reinterpret_cast<float*>(gates_row),
                                  reinterpret_cast<float*>(cells_row), H, j0, j0 + units);
            continue;
          }
          scalar_t* h_row = s.has_proj ? h_unprojected_p + b * H : out_p + (step.row_offset + b) * P;
          forward_cells(pre_p + pre_offset + b * 4 * H, rec_u + b * row_stride, gate_stride, bias_p, c_p + b * H, h_row,
                        gates_row, cells_row, H, j0, j0 + units);
        }
      }
    };
    auto finish = [&](int64_t k) {
      if (!s.has_proj) return;
      const StepRows& step = schedule[k];
      Tensor out_rows = out.narrow(0, step.row_offset, step.rows);
      at::mm_out(out_rows, h_unprojected.narrow(0, 0, step.rows), w_hr_t);
    };
    run_recurrence(static_cast<int64_t>(schedule.size()), num_blocks, block_grain(B, P, block), one_team, needs_join,
                   serial, blocks, finish, [&] {
                     if (amx_recurrence) cpu::BlockedOperandBf16::release_thread_state();
                   });
  });

  const Tensor output = out.to(dtype).view(per_token_shape(s, P));  // (no copy where out is it)
  const Tensor hy = out.index_select(0, final_row_index(schedule, B, input.device())).to(dtype);
  return {output, hy, c_state.to(dtype), gates, cells};
}

void backward_pointwise_cpu(const kernels::StepRows& step, int64_t hidden, const Tensor& gates, const Tensor& cells,
                            const Tensor& cx, const Tensor& dh, const Tensor& dc_carry, const Tensor& dgates) {
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "lstm_backward_pointwise_cpu", [&] {
    const auto backward_cells = cpu::gate_kernels().backward<scalar_t>();
    const int64_t H = hidden;
    const scalar_t* gates_p = gates.data_ptr<scalar_t>();
    const scalar_t* cells_p = cells.data_ptr<scalar_t>();
    const scalar_t* cx_p = cx.data_ptr<scalar_t>();
    const scalar_t* dh_p = dh.data_ptr<scalar_t>();
    scalar_t* dc_p = dc_carry.data_ptr<scalar_t>();
    scalar_t* dgates_p = dgates.data_ptr<scalar_t>();
    const int64_t chunks = (H + kHiddenChunk - 1) / kHiddenChunk;
    at::parallel_for(0, step.rows * chunks, grain_in_tasks(std::min(H, kHiddenChunk)), [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / chunks;
        const int64_t j0 = (task % chunks) * kHiddenChunk;
        const int64_t row = step.row_offset + b;
        // c_{t-1}: the previous processed step's row, or cx (Note [Row layout and step schedule]).
        const scalar_t* c_prev = b < step.prev_rows ? cells_p + (step.prev_row_offset + b) * H : cx_p + b * H;
        backward_cells(gates_p + row * 4 * H, cells_p + row * H, c_prev, dh_p + b * dh.stride(0), dc_p + b * H,
                       dgates_p + row * 4 * H, H, j0, std::min(H, j0 + kHiddenChunk));
      }
    });
  });
}

// The reverse recurrence without projection (BackwardRecurrenceFn), one parallel region per step
// (Note [Recurrent GEMMs on CPU]): block u's task first turns the previously processed step's
// dgates into the carry reaching its units of h (dgates rows · W_hh[:, units]), adds that
// step's grad_output, then runs the gate backward of its units. The same arithmetic as the
// generic loop of lstm_layer_backward_impl, in the same order per element.
bool backward_recurrence_cpu(const BackwardRecurrenceArgs& a) {
  // Short sequences: the generic per-step loop (at::mm), no preparation to amortise.
  if (static_cast<int64_t>(a.schedule.size()) < kMinStepsToPrepareWeights) return false;
  const int64_t B = a.batch, H = a.hidden;
  const auto acc_type = a.gates.scalar_type();
  // dh_carry: the gradient reaching h of the step being processed (grad_hy to start with).
  Tensor dh_carry = a.grad_hy.defined() ? a.grad_hy.clone() : at::zeros({B, H}, a.gates.options());
  // bf16 layers with bf16 GEMMs (Note [bfloat16 GEMMs on CPU]) want dgates rounded to bf16 too;
  // on AMX (H a multiple of the 64-column panel) the carry then multiplies those in bf16 by W_hh
  // packed once per call, as oneDNN's bf16 LSTM does, instead of fp32 dgates by fp32 W_hh.
  const bool rounded_out = a.dgates_rounded.defined();  // so acc_type is float
  const bool amx_carry =
      rounded_out && H % cpu::BlockedOperandBf16::kPanel == 0 && cpu::BlockedOperandBf16::available();
  AT_DISPATCH_FLOATING_TYPES(acc_type, "lstm_backward_recurrence_cpu", [&] {
    const auto backward_cells = cpu::gate_kernels().backward<scalar_t>();
    const auto backward_cells_bf16_out = cpu::gate_kernels().backward_bf16_out;
    constexpr int64_t kPanel = cpu::BlockedOperandBf16::kPanel;
    const int64_t block = recurrence_block_size(H, B, 4 * H, 1, amx_carry ? kPanel : 16, sizeof(scalar_t));
    const int64_t num_blocks = (H + block - 1) / block;
    // B = W_hh, [4H, H]: block u's carry columns are its units' columns, read in place (fp32,
    // fp64) or packed in bf16 (amx_carry).
    std::optional<cpu::BlockedOperand<scalar_t>> w_blocks;
    std::optional<cpu::BlockedOperandBf16> w_blocks_bf16;
    const Tensor w_hh = amx_carry ? a.weight_hh : a.weight_hh.to(acc_type).contiguous();
    if (amx_carry) {
      w_blocks_bf16.emplace(w_hh, block_column_begin(H, block, 1));
    } else {
      w_blocks.emplace(w_hh, block_column_begin(H, block, 1), B);
    }
    c10::BFloat16* rounded_p = rounded_out ? a.dgates_rounded.data_ptr<c10::BFloat16>() : nullptr;
    const scalar_t* grad_output_p = a.grad_output.defined() ? a.grad_output.data_ptr<scalar_t>() : nullptr;
    const scalar_t* gates_p = a.gates.data_ptr<scalar_t>();
    const scalar_t* cells_p = a.cells.data_ptr<scalar_t>();
    const scalar_t* cx_p = a.cx.data_ptr<scalar_t>();
    scalar_t* dc_p = a.dc_carry.data_ptr<scalar_t>();
    scalar_t* dh_p = dh_carry.data_ptr<scalar_t>();
    scalar_t* dgates_p = a.dgates.data_ptr<scalar_t>();
    // Steps in processing order: the reverse of the forward schedule (Note [One thread team per
    // sequence]: one team for the whole reverse recurrence, nothing serial between steps).
    const int64_t num_steps = static_cast<int64_t>(a.schedule.size());
    auto step_at = [&](int64_t k) -> const StepRows& { return a.schedule[num_steps - 1 - k]; };
    auto blocks = [&](int64_t k, int64_t u_begin, int64_t u_end) {
      const StepRows& step = step_at(k);
      const StepRows* later = k > 0 ? &step_at(k - 1) : nullptr;  // processed just before
      const int64_t carry_rows = later != nullptr ? later->rows : 0;
      for (int64_t u = u_begin; u < u_end; ++u) {
        const int64_t j0 = u * block, units = std::min(block, H - j0);
        prefetch_gate_rows(gates_p + step.row_offset * 4 * H + j0, step.rows, 4 * H, H, units);
        if (later != nullptr && amx_carry) {  // float layers only: scalar_t is float here
          w_blocks_bf16->multiply(u, carry_rows, rounded_p + later->row_offset * 4 * H, 4 * H,
                                  reinterpret_cast<float*>(dh_p + j0), H);
        } else if (later != nullptr) {
          w_blocks->multiply(u, carry_rows, dgates_p + later->row_offset * 4 * H, 4 * H, dh_p + j0, H);
        }
        for (int64_t b = 0; b < step.rows; ++b) {
          const int64_t row = step.row_offset + b;
          scalar_t* dh_row = dh_p + b * H;
          if (grad_output_p != nullptr) {
            for (int64_t j = j0; j < j0 + units; ++j) dh_row[j] += grad_output_p[row * H + j];
          }
          // c_{t-1}: the previous processed step's row, or cx (Note [Row layout and step schedule]).
          const scalar_t* c_prev = b < step.prev_rows ? cells_p + (step.prev_row_offset + b) * H : cx_p + b * H;
          if (rounded_out) {  // float layers only: scalar_t is float here
            backward_cells_bf16_out(
                reinterpret_cast<const float*>(gates_p + row * 4 * H),
                reinterpret_cast<const float*>(cells_p + row * H), reinterpret_cast<const float*>(c_prev),
                reinterpret_cast<const float*>(dh_row), reinterpret_cast<float*>(dc_p + b * H),
                reinterpret_cast<float*>(dgates_p + row * 4 * H), rounded_p + row * 4 * H, H, j0, j0 + units);
          } else {
            backward_cells(gates_p + row * 4 * H, cells_p + row * H, c_prev, dh_row, dc_p + b * H,
                           dgates_p + row * 4 * H, H, j0, j0 + units);
          }
        }
      }
    };
    run_recurrence(
        num_steps, num_blocks, block_grain(B, 4 * H, block), /*one_team_allowed=*/true, [](int64_t) { return false; },
        [](int64_t) {}, blocks, [](int64_t) {},
        [&] {
          if (amx_carry) cpu::BlockedOperandBf16::release_thread_state();
        });
  });
  return true;
}

BackwardResult lstm_layer_backward_cpu(const c10::optional<Tensor>& grad_output, const c10::optional<Tensor>& grad_hy,
                                       const c10::optional<Tensor>& grad_cy, const Tensor& input, const Tensor& hx,
                                       const Tensor& cx, const Tensor& weight_ih, const Tensor& weight_hh,
                                       const c10::optional<Tensor>& weight_hr, const c10::optional<Tensor>& batch_sizes,
                                       bool reverse, bool has_bias, const Tensor& output, const Tensor& gates,
                                       const Tensor& cells, std::array<bool, 2> output_mask) {
  return lstm_layer_backward_impl(
      grad_output, grad_hy, grad_cy, input, hx, cx, weight_ih, weight_hh, weight_hr, batch_sizes, reverse, has_bias,
      output, gates, cells, output_mask,
      {&backward_pointwise_cpu, &backward_recurrence_cpu, input.scalar_type() == at::kBFloat16 && use_bf16_gemms(),
       &cpu::scratch_empty, &cpu::linear});
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_lstm, CPU, m) {
  m.impl("lstm_layer_forward", &lstm_layer_forward_cpu);
  m.impl("lstm_layer_backward", &lstm_layer_backward_cpu);
}

}  // namespace fused_lstm
