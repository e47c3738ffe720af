// What the forward and the backward kernels of lstm_cuda_kernels.cuh share: the conversions between
// storage and arithmetic types on the device (DeviceScalar), the tile geometry both directions use
// (16 x 16 tiles: the SIMT tiles' 256 threads, the wmma tile and its shared-memory padding), and
// the tensor-core precision helpers (Note [Tensor-core precision]). Also the Notes on K staging and
// the persistent sequence kernels, which hold for both directions and for the host-side launch
// configuration (launch.cuh). Torch-free.
//
// Note [K staging]
// The reduction dimension K (P for the forward, 4H for the backward carry) is staged through
// dynamic shared memory k_chunk columns at a time. Each chunk costs one dependent round trip to
// L2 (load, barrier, multiply, barrier), and at these sizes those round trips, not arithmetic,
// bound a step: the first version staged 32/64 columns and spent ~20 us per step at H=512
// (benchmarks/results/cuda-h100-*-v1-*). So the host picks the widest chunk whose tile fits the
// shared memory it allows (usually all of K: one round trip per step), and the persistent
// forward, when the whole of K fits, loads its W_hh tile once and keeps it for every step
// ("W resident"). FUSED_LSTM_CUDA_K_CHUNK forces a chunk (tests use it to cover multi-chunk).
//
// Note [Persistent sequence kernels]
// The persistent kernels run the same tile functions for every step inside ONE cooperative
// launch, with a grid-wide barrier (cooperative_groups grid.sync(), which also orders the h /
// dgates writes of one step before the next step's reads) between steps. That saves a launch per
// step and lets the forward keep its W_hh tile in shared memory for the whole sequence (Note
// [K staging]); measured at T=100 B=64 H=512 bf16 on an H200 this halves the forward against the
// per-step kernels (1.0 vs 1.85 ms, benchmarks/results/cuda-h200-*-v2-*). They need every block
// of the grid resident at once: the host checks occupancy and falls back to the per-step kernels.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>
#include <type_traits>

#include "kernels/lstm_step.h"

namespace fused_lstm {
namespace kernels {

// Conversions between storage and arithmetic types on the device.
template <typename T>
struct DeviceScalar;
template <>
struct DeviceScalar<float> {
  using acc_t = float;
  __device__ static float to_acc(float x) { return x; }
  __device__ static float from_acc(float x) { return x; }
};
template <>
struct DeviceScalar<double> {
  using acc_t = double;
  __device__ static double to_acc(double x) { return x; }
  __device__ static double from_acc(double x) { return x; }
};
template <>
struct DeviceScalar<__half> {
  using acc_t = float;
  __device__ static float to_acc(__half x) { return __half2float(x); }
  __device__ static __half from_acc(float x) { return __float2half_rn(x); }
};
template <>
struct DeviceScalar<__nv_bfloat16> {
  using acc_t = float;
  __device__ static float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }
  __device__ static __nv_bfloat16 from_acc(float x) { return __float2bfloat16_rn(x); }
};

// ---------------------------------------------------------------------------------------------
// Tile geometry shared by both directions and the host side. The SIMT forward tile's (the SIMT
// backward tile's blocks have the same 256 threads, and k_chunk the same granule):
constexpr int kSimtBatchTile = 16;
constexpr int kSimtHiddenTile = 16;
constexpr int kSimtGranule = 32;  // k_chunk is a multiple of this
constexpr int kSimtThreads = kSimtBatchTile * kSimtHiddenTile;
constexpr int kSimtGateCols = kNumGates * kSimtHiddenTile;

// The tensor-core forward tile's (the tensor-core backward tile uses kMmaTile and kMmaPad too):
constexpr int kMmaTile = 16;                 // wmma m = n = k = 16
constexpr int kMmaGranule = 64;              // k_chunk is a multiple of this
constexpr int kMmaPad = 8;                   // 16 bytes of padding per shared-memory row (bank spread)
constexpr int kMmaThreads = 32 * kNumGates;  // one warp per gate
constexpr int kMmaGateCols = kNumGates * kMmaTile;
constexpr int kMmaRecPitch = kMmaGateCols + 4;

// ---------------------------------------------------------------------------------------------
// Note [Tensor-core precision]
// half/bfloat16: operands in their own 16-bit type, wmma 16x16x16, fp32 accumulation.
// float: wmma's TF32 shape 16x16x8 on fp32 operands staged in shared memory. With TF32 allowed
// (the glue follows torch.backends.cudnn.allow_tf32, which is what nn.LSTM's cuDNN call obeys),
// one product per tile with the operands rounded to TF32 (10-bit mantissa), as cuDNN does.
// Otherwise three (3xTF32): x = hi + lo with hi = tf32(x), lo = tf32(x - hi), and
// a·b ~ a_hi·b_hi + (a_hi·b_lo + a_lo·b_hi) with the small terms in their own accumulator:
// ~21 significant bits per operand, fp32-level error, at three times the tensor-core work (the
// steps are latency-bound, so that costs little next to FMA from shared memory).
template <typename scalar_t>
struct MmaOperand {
  using precision = scalar_t;  // the wmma element type
  static constexpr int kK = 16;
};
template <>
struct MmaOperand<float> {
  using precision = nvcuda::wmma::precision::tf32;
  static constexpr int kK = 8;
};

// acc (+ acc_small for 3xTF32) += a · b for one K tile; a and b may be modified.
template <typename scalar_t, typename FragA, typename FragB, typename FragC>
__device__ __forceinline__ void mma_tile_product(FragC& acc, FragC& acc_small, FragA& a, FragB& b, bool split_tf32) {
  namespace wmma = nvcuda::wmma;
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (split_tf32) {
      FragA a_lo;
      FragB b_lo;
#pragma unroll
      for (int i = 0; i < a.num_elements; ++i) {
        const float hi = wmma::__float_to_tf32(a.x[i]);
        a_lo.x[i] = wmma::__float_to_tf32(a.x[i] - hi);
        a.x[i] = hi;
      }
#pragma unroll
      for (int i = 0; i < b.num_elements; ++i) {
        const float hi = wmma::__float_to_tf32(b.x[i]);
        b_lo.x[i] = wmma::__float_to_tf32(b.x[i] - hi);
        b.x[i] = hi;
      }
      wmma::mma_sync(acc_small, a_lo, b, acc_small);
      wmma::mma_sync(acc_small, a, b_lo, acc_small);
    } else {
#pragma unroll
      for (int i = 0; i < a.num_elements; ++i) a.x[i] = wmma::__float_to_tf32(a.x[i]);
#pragma unroll
      for (int i = 0; i < b.num_elements; ++i) b.x[i] = wmma::__float_to_tf32(b.x[i]);
    }
  }
  (void)acc_small, (void)split_tf32;
  wmma::mma_sync(acc, a, b, acc);
}

}  // namespace kernels
}  // namespace fused_lstm
