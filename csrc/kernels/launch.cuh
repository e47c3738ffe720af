// Host side of the CUDA kernels: launch configuration and launchers. The device limits, the K
// chunk choice (Note [K staging]), the occupancy check of the cooperative launches (Note
// [Persistent sequence kernels]), which forward tile a launch takes (ForwardTileKind,
// forward_tile_kind), and the launch_* / prepare_* functions the glue calls. Torch-free.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kernels/backward_kernels.cuh"
#include "kernels/cuda_common.cuh"
#include "kernels/forward_tiles.cuh"
#include "kernels/lstm_step.h"

namespace fused_lstm {
namespace kernels {

// ---------------------------------------------------------------------------------------------
// Host side: launch configuration. Launchers return the CUDA error; the caller checks it.
inline unsigned ceil_div(int64_t a, int64_t b) { return static_cast<unsigned>((a + b - 1) / b); }

struct DeviceLimits {
  int multiprocessors;
  size_t shared_memory_per_block;  // the opt-in maximum (cudaDevAttrMaxSharedMemoryPerBlockOptin)
  int forced_k_chunk;              // > 0: FUSED_LSTM_CUDA_K_CHUNK, else 0
};

// The widest k_chunk (a multiple of granule, covering at most all of K) whose shared memory fits
// `limit`; a forced chunk is rounded up to the granule and still capped by `limit`.
template <typename Bytes>
int widest_k_chunk(int64_t K, int granule, size_t limit, int forced, Bytes bytes) {
  const int64_t all = (K + granule - 1) / granule * granule;
  int64_t chunk = forced > 0 ? (forced + granule - 1) / granule * granule : all;
  if (chunk > all) chunk = all;
  while (chunk > granule && bytes(static_cast<int>(chunk)) > limit) chunk -= granule;
  return static_cast<int>(chunk);
}

// Kernels need an explicit opt-in for more than 48 KB of dynamic shared memory.
inline cudaError_t allow_shared_memory(const void* kernel, size_t bytes) {
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
}

// Whether all blocks of `grid` fit on the device at once (a cooperative launch requires it).
inline bool grid_fits_resident(const void* kernel, dim3 grid, int threads, size_t smem, int multiprocessors) {
  int per_multiprocessor = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_multiprocessor, kernel, threads, smem) != cudaSuccess) {
    (void)cudaGetLastError();  // clear it: not fitting is an answer, not an error
    return false;
  }
  return static_cast<int64_t>(per_multiprocessor) * multiprocessors >= static_cast<int64_t>(grid.x) * grid.y * grid.z;
}

template <typename T>
constexpr bool is_half_type() {
  return std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;
}

// Types with a tensor-core tile: 16-bit operands, and float as (3x)TF32.
template <typename T>
constexpr bool has_mma_tile() {
  return is_half_type<T>() || std::is_same_v<T, float>;
}

// One forward tile kind resolved for a launch: tensor cores (half types, sm_80+), else SIMT, the
// small-batch split-K SIMT tile when the batch is at most kSmallBatchMax. Every kind covers 16
// hidden units per block (kSimtHiddenTile == kMmaTile) and batch_tile rows.
enum class ForwardTile { kSimt, kMma, kSplitK };

template <typename scalar_t, typename acc_t>
struct ForwardTileKind {
  ForwardTile tile;
  int threads, granule, batch_tile;
  int k_split;            // the tensor-core tile's warps per gate
  bool takes_split_tf32;  // its kernels take split_tf32 after their other arguments (the 8-warp tile)
  const void* step_kernel;
  const void* persistent_kernel;
  size_t smem_bytes(int k_chunk) const {
    if constexpr (has_mma_tile<scalar_t>()) {
      if (tile == ForwardTile::kMma) return mma_forward_smem_bytes<scalar_t>(k_chunk, k_split);
    }
    if (tile == ForwardTile::kSplitK) return splitk_forward_smem_bytes<acc_t>(k_chunk);
    return simt_forward_smem_bytes<acc_t>(k_chunk);
  }
  dim3 grid(int64_t hidden, int64_t rows) const {
    static_assert(kSimtHiddenTile == kMmaTile, "every tile covers the same hidden units");
    return dim3(ceil_div(hidden, kSimtHiddenTile), ceil_div(rows, batch_tile));
  }
};

// The glue's decisions (csrc/cuda_variants.h): tensor_cores for this dtype (sm_80+; for float
// only where float on tensor cores is selected) and mma_k_split, the tensor-core tile's warps per
// gate (1 or 2). Float keeps the split-K SIMT tile for small batches, where a 16-row mma tile
// would be mostly padding.
template <typename scalar_t, typename acc_t>
ForwardTileKind<scalar_t, acc_t> forward_tile_kind(bool tensor_cores, int mma_k_split, bool vector_loads,
                                                   int64_t batch) {
  if constexpr (has_mma_tile<scalar_t>()) {
    // Float on tensor cores always takes the 8-warp tile (the 4-warp tile has no TF32 path).
    const bool eight_warps = !is_half_type<scalar_t>() || mma_k_split == kMma8KSplit;
    if (tensor_cores && eight_warps && (is_half_type<scalar_t>() || batch > kSmallBatchMax)) {
      return {ForwardTile::kMma,
              kMma8Threads,
              kMmaGranule,
              kMmaTile,
              kMma8KSplit,
              true,
              vector_loads ? reinterpret_cast<const void*>(&lstm_forward_step_mma8<scalar_t, true>)
                           : reinterpret_cast<const void*>(&lstm_forward_step_mma8<scalar_t, false>),
              vector_loads ? reinterpret_cast<const void*>(&lstm_forward_persistent_mma8<scalar_t, true>)
                           : reinterpret_cast<const void*>(&lstm_forward_persistent_mma8<scalar_t, false>)};
    }
  }
  if constexpr (is_half_type<scalar_t>()) {
    if (tensor_cores) {
      return {ForwardTile::kMma,
              kMmaThreads,
              kMmaGranule,
              kMmaTile,
              1,
              false,
              vector_loads ? reinterpret_cast<const void*>(&lstm_forward_step_mma<scalar_t, true>)
                           : reinterpret_cast<const void*>(&lstm_forward_step_mma<scalar_t, false>),
              vector_loads ? reinterpret_cast<const void*>(&lstm_forward_persistent<scalar_t, acc_t, 2>)
                           : reinterpret_cast<const void*>(&lstm_forward_persistent<scalar_t, acc_t, 1>)};
    }
  }
  if (batch <= kSmallBatchMax) {
    return {ForwardTile::kSplitK,
            kSimtThreads,
            kSplitKGranule,
            kSmallBatchTile,
            1,
            false,
            reinterpret_cast<const void*>(&lstm_forward_step_splitk<scalar_t, acc_t>),
            reinterpret_cast<const void*>(&lstm_forward_persistent<scalar_t, acc_t, 3>)};
  }
  return {ForwardTile::kSimt,
          kSimtThreads,
          kSimtGranule,
          kSimtBatchTile,
          1,
          false,
          reinterpret_cast<const void*>(&lstm_forward_step_simt<scalar_t, acc_t>),
          reinterpret_cast<const void*>(&lstm_forward_persistent<scalar_t, acc_t, 0>)};
}

// Persistent forward over the whole schedule. Tries the W-resident configuration (all of K in
// one chunk), then narrow chunks; returns cudaErrorCooperativeLaunchTooLarge (and launches
// nothing) when no configuration's grid can be resident, so the caller runs the step kernels.
template <typename scalar_t, typename acc_t>
cudaError_t launch_forward_persistent(const ForwardStepParams<scalar_t, acc_t>& p, const StepRows* schedule,
                                      int64_t num_steps, int64_t batch, bool tensor_cores, int mma_k_split,
                                      bool vector_loads, bool split_tf32, const DeviceLimits& limits,
                                      cudaStream_t stream) {
  const auto kind = forward_tile_kind<scalar_t, acc_t>(tensor_cores, mma_k_split, vector_loads, batch);
  const dim3 grid = kind.grid(p.hidden, batch);
  const auto bytes = [&](int chunk) { return kind.smem_bytes(chunk); };
  const int widest = widest_k_chunk(p.proj, kind.granule, limits.shared_memory_per_block, limits.forced_k_chunk, bytes);
  const int candidates[2] = {widest, kind.granule};
  for (int i = 0; i < (limits.forced_k_chunk > 0 ? 1 : 2); ++i) {
    int k_chunk = candidates[i];
    bool w_resident = k_chunk >= p.proj;
    const size_t smem = bytes(k_chunk);
    if (smem > limits.shared_memory_per_block) continue;
    cudaError_t err = allow_shared_memory(kind.persistent_kernel, smem);
    if (err != cudaSuccess) return err;
    if (!grid_fits_resident(kind.persistent_kernel, grid, kind.threads, smem, limits.multiprocessors)) continue;
    void* args[] = {const_cast<ForwardStepParams<scalar_t, acc_t>*>(&p),
                    &schedule,
                    &num_steps,
                    &k_chunk,
                    &w_resident,
                    &split_tf32};  // the last only where the kernel takes it
    return cudaLaunchCooperativeKernel(kind.persistent_kernel, grid, dim3(kind.threads), args, smem, stream);
  }
  return cudaErrorCooperativeLaunchTooLarge;
}

// Per-step forward: the configuration is chosen once per sequence (prepare), then each step
// launches with it. Half the opt-in shared memory keeps two blocks per multiprocessor.
struct ForwardStepLaunch {
  const void* kernel;
  bool takes_split_tf32;
  dim3 block;
  int batch_tile;
  int k_chunk;
  size_t smem;
};

template <typename scalar_t, typename acc_t>
cudaError_t prepare_forward_step(int64_t proj, int64_t batch, bool tensor_cores, int mma_k_split, bool vector_loads,
                                 const DeviceLimits& limits, ForwardStepLaunch* launch) {
  const auto kind = forward_tile_kind<scalar_t, acc_t>(tensor_cores, mma_k_split, vector_loads, batch);
  const auto bytes = [&](int chunk) { return kind.smem_bytes(chunk); };
  launch->kernel = kind.step_kernel;
  launch->takes_split_tf32 = kind.takes_split_tf32;
  launch->block = dim3(kind.threads);
  launch->batch_tile = kind.batch_tile;
  launch->k_chunk =
      widest_k_chunk(proj, kind.granule, limits.shared_memory_per_block / 2, limits.forced_k_chunk, bytes);
  launch->smem = bytes(launch->k_chunk);
  return allow_shared_memory(launch->kernel, launch->smem);
}

template <typename scalar_t, typename acc_t>
cudaError_t launch_forward_step(const ForwardStepParams<scalar_t, acc_t>& p, const ForwardStepLaunch& launch,
                                bool split_tf32, cudaStream_t stream) {
  const dim3 grid(ceil_div(p.hidden, kSimtHiddenTile), ceil_div(p.step.rows, launch.batch_tile));
  int k_chunk = launch.k_chunk;
  void* args[] = {const_cast<ForwardStepParams<scalar_t, acc_t>*>(&p), &k_chunk, &split_tf32};  // as above
  return cudaLaunchKernel(launch.kernel, grid, launch.block, args, launch.smem, stream);
}

// Fused backward recurrence: persistent when `persistent` and the grid fits, else one launch per
// step. Returns the first launch error.
template <typename scalar_t, typename acc_t>
cudaError_t launch_backward_recurrence(const BackwardSequenceParams<scalar_t, acc_t>& p, int64_t batch, bool persistent,
                                       const DeviceLimits& limits, cudaStream_t stream) {
  const dim3 grid(ceil_div(p.cell.hidden, kBackwardTile), ceil_div(batch, kBackwardTile));
  const int64_t K = kNumGates * p.cell.hidden;
  const auto bytes = [](int chunk) { return backward_smem_bytes<acc_t>(chunk); };
  if (persistent) {
    const void* kernel = reinterpret_cast<const void*>(&lstm_backward_persistent<scalar_t, acc_t>);
    const int candidates[2] = {
        widest_k_chunk(K, kSimtGranule, limits.shared_memory_per_block, limits.forced_k_chunk, bytes),
        widest_k_chunk(K, kSimtGranule, limits.shared_memory_per_block / 4, limits.forced_k_chunk, bytes)};
    for (int k_chunk : candidates) {
      const size_t smem = bytes(k_chunk);
      cudaError_t err = allow_shared_memory(kernel, smem);
      if (err != cudaSuccess) return err;
      if (!grid_fits_resident(kernel, grid, kSimtThreads, smem, limits.multiprocessors)) continue;
      void* args[] = {const_cast<BackwardSequenceParams<scalar_t, acc_t>*>(&p), &k_chunk};
      return cudaLaunchCooperativeKernel(kernel, grid, dim3(kSimtThreads), args, smem, stream);
    }
  }
  const void* kernel = reinterpret_cast<const void*>(&lstm_backward_step<scalar_t, acc_t>);
  int k_chunk = widest_k_chunk(K, kSimtGranule, limits.shared_memory_per_block / 2, limits.forced_k_chunk, bytes);
  const size_t smem = bytes(k_chunk);
  cudaError_t err = allow_shared_memory(kernel, smem);
  if (err != cudaSuccess) return err;
  for (int64_t k = p.num_steps - 1; k >= 0; --k) {
    void* args[] = {const_cast<BackwardSequenceParams<scalar_t, acc_t>*>(&p), &k, &k_chunk};
    err = cudaLaunchKernel(kernel, grid, dim3(kSimtThreads), args, smem, stream);
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

// Tensor-core persistent backward (Note [Tensor-core backward recurrence]) for half, bfloat16 and
// float. Returns cudaErrorCooperativeLaunchTooLarge, launching nothing, where it does not apply:
// double, the W_hh slice does not fit in shared memory, or the grid cannot be resident.
template <typename scalar_t, typename acc_t>
cudaError_t launch_backward_persistent_mma(const BackwardSequenceParams<scalar_t, acc_t>& p, int64_t batch,
                                           bool split_tf32, const DeviceLimits& limits, cudaStream_t stream) {
  if constexpr (has_mma_tile<scalar_t>()) {
    const dim3 grid(ceil_div(p.cell.hidden, kMmaTile), ceil_div(batch, kMmaTile));
    const int64_t K = kNumGates * p.cell.hidden;
    const int64_t k_round = round_up(K, kMmaBackwardGranule);
    const auto bytes = [&](int chunk) { return mma_backward_smem_bytes<scalar_t>(k_round, chunk); };
    const void* kernel = nullptr;
    if constexpr (std::is_same_v<scalar_t, float>) {
      kernel = reinterpret_cast<const void*>(&lstm_backward_persistent_mma_tf32<float>);
    } else {
      kernel = reinterpret_cast<const void*>(&lstm_backward_persistent_mma<scalar_t>);
    }
    const int widest =
        widest_k_chunk(K, kMmaBackwardGranule, limits.shared_memory_per_block, limits.forced_k_chunk, bytes);
    // All of K staged at once when it fits; else, or when that grid cannot be resident, the
    // narrowest chunk (less shared memory: more blocks per multiprocessor).
    const int candidates[2] = {widest, kMmaBackwardGranule};
    for (int k_chunk : candidates) {
      const size_t smem = bytes(k_chunk);
      if (smem > limits.shared_memory_per_block) continue;
      cudaError_t err = allow_shared_memory(kernel, smem);
      if (err != cudaSuccess) return err;
      if (!grid_fits_resident(kernel, grid, kMmaBackwardThreads, smem, limits.multiprocessors)) continue;
      // split_tf32: read by the float kernel only.
      void* args[] = {const_cast<BackwardSequenceParams<scalar_t, acc_t>*>(&p), &k_chunk, &split_tf32};
      return cudaLaunchCooperativeKernel(kernel, grid, dim3(kMmaBackwardThreads), args, smem, stream);
    }
  }
  (void)p, (void)batch, (void)split_tf32, (void)limits, (void)stream;
  return cudaErrorCooperativeLaunchTooLarge;
}

template <typename acc_t>
cudaError_t launch_backward_pointwise(const BackwardPointwiseParams<acc_t>& p, cudaStream_t stream) {
  lstm_backward_pointwise<acc_t>
      <<<ceil_div(p.step.rows * p.hidden, kPointwiseThreads), kPointwiseThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace kernels
}  // namespace fused_lstm
