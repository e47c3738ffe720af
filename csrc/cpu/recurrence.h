// The CPU recurrence driver: how the hidden units are split into blocks (Note [Recurrent GEMMs on
// CPU] in packed_gemm.h), and the thread team that runs every step of a sequence over them (Note
// [One thread team per sequence]). Used by the forward (lstm_cpu.cpp) and the backward
// (lstm_cpu_backward.cpp).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <vector>

#include "step_schedule.h"

namespace fused_lstm {
namespace cpu {

// Pointwise work is split into (row, chunk of hidden units) tasks; below this many cells per task
// the threads' start-up costs more than it saves.
constexpr int64_t kHiddenChunk = 256;
constexpr int64_t kCellsPerTask = 16384;

inline int64_t grain_in_tasks(int64_t chunk) { return std::max<int64_t>(1, kCellsPerTask / chunk); }

// Note [Recurrent GEMMs on CPU]: hidden units per block, about two blocks per thread, from 16 to
// 128 units. Measured per step on 2 cores (fp32): B=4 H=512 95 us with blocks of 128 vs 138 with
// 64; B=64 and B=16 at H=512 alike with 64 or 128. FUSED_LSTM_CPU_UNIT_BLOCK=n overrides (a
// multiple of 16, for tuning on other machines).
inline int64_t unit_block_size(int64_t hidden) {
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

inline int64_t block_grain(int64_t rows, int64_t depth, int64_t block) {
  const int64_t work = rows * block * (4 * depth + 16);
  return std::max<int64_t>(1, kMinWorkPerTask / std::max<int64_t>(1, work));
}

// The unit block of a recurrence over `rows` rows with products of depth `depth` and
// `width_per_unit` columns a unit: unit_block_size rounded up to a multiple of `align`, except
// where the recurrence runs on one thread anyway (too little work a step to split, or one
// thread), a step's whole product is small (<= 64 KiB) and has at most kMaxMergedColumns columns
// (the forward's largest default block, 128 units of 4 gates): then one block of all the units,
// one product call a step instead of several (T=100 B=1 H=128 inference 0.50 -> 0.45 ms). Wider
// single blocks are slower, not faster: brgemm's few-row product over all 4H columns of a larger
// forward streams the weight worse than over blocks of at most that many columns.
// FUSED_LSTM_CPU_UNIT_BLOCK, when set, is used as is (rounded up to `align`).
constexpr int64_t kMaxMergedColumns = 512;

inline int64_t recurrence_block_size(int64_t hidden, int64_t rows, int64_t depth, int64_t width_per_unit, int64_t align,
                                     int64_t element_size) {
  const int64_t block = (unit_block_size(hidden) + align - 1) / align * align;
  if (std::getenv("FUSED_LSTM_CPU_UNIT_BLOCK") != nullptr || block >= hidden) return block;
  const int64_t num_blocks = (hidden + block - 1) / block;
  const bool one_task = num_blocks <= block_grain(rows, depth, block) || at::get_num_threads() == 1;
  const bool small_product = rows * width_per_unit * hidden * element_size <= (int64_t{64} << 10);
  const bool narrow = hidden * width_per_unit <= kMaxMergedColumns;
  return one_task && small_product && narrow ? hidden : block;
}

inline std::vector<int64_t> block_column_begin(int64_t hidden, int64_t block, int64_t width_per_unit) {
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
inline void run_recurrence(int64_t num_steps, int64_t num_blocks, int64_t grain, bool one_team_allowed,
                           const NeedsSerial& needs_serial, const Serial& serial, const Blocks& blocks,
                           const Finish& finish, const ThreadDone& thread_done) {
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
inline void prefetch_gate_rows(const T* base, int64_t rows, int64_t row_stride, int64_t gate_stride, int64_t units) {
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
inline const T* previous_h(const StepRows& step, int64_t P, const Tensor& out, const Tensor& h0, Tensor& joined) {
  if (step.prev_rows >= step.rows) return out.const_data_ptr<T>() + step.prev_row_offset * P;
  if (step.prev_rows == 0) return h0.const_data_ptr<T>();
  if (!joined.defined()) joined = at::empty_like(h0);
  joined.narrow(0, 0, step.prev_rows).copy_(out.narrow(0, step.prev_row_offset, step.prev_rows));
  joined.narrow(0, step.prev_rows, step.rows - step.prev_rows)
      .copy_(h0.narrow(0, step.prev_rows, step.rows - step.prev_rows));
  return joined.const_data_ptr<T>();
}

}  // namespace cpu
}  // namespace fused_lstm
