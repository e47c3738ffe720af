// CUDA kernels of the per-step LSTM recurrence. Torch-free (CUDA runtime and headers only), so
// plain `nvcc -c -Xptxas -v csrc/kernels/nvcc_check.cu` compile-checks them on any machine.
//
// Note [Fused forward step]
// One launch per time step. A block owns a tile of batch rows and of hidden units *with all four
// of their gates*, so it computes h_prev · W_hhᵀ for gate rows {g*H + j : g in i,f,g,o; j in tile}
// and then runs the cell update for its (b, j) cells without leaving the block. W_hh (4H x P,
// a few MB at most) stays in L2 across steps. Two inner products:
//   * SIMT (float, double): fp32/fp64 FMA from shared-memory tiles; 256 threads, thread (b, j)
//     holds the four gate accumulators of its cell, so the epilogue needs no shared memory.
//   * Tensor cores (half, bfloat16; sm_80+): wmma 16x16x16 with fp32 accumulation; 4 warps, warp
//     g computes gate g's 16x16 (batch x hidden) tile; the tiles meet in shared memory for the
//     cell update. The cell state stays fp32 (docs/DESIGN.md, numerics).
//   * Small batches (B <= 8, SIMT): a split-K tile (see forward_step_splitk_tile).
// Variants that have not yet run on a GPU, off by default (Note [Verified CUDA kernel variants] in
// csrc/cuda_variants.h): an 8-warp tensor-core tile (forward_step_mma8_tile) and float on tensor
// cores as TF32 / 3xTF32 (Note [Tensor-core precision]). Kernels that passed the GPU check are kept
// as they were checked (tests/test_nvcc_compile.py compares their PTX with the check's).
// Tiles are zero-filled at the edges, so any B, H, P works; 16-byte loads are used when every
// row of h and W_hh is 16-byte aligned (the glue checks), scalar loads otherwise.
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

#include <cooperative_groups.h>

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

// Cell update of (b, j) given the four recurrent products rec[g] = (h_prev · W_hhᵀ)[g*H + j].
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void forward_step_epilogue(const ForwardStepParams<scalar_t, acc_t>& p,
                                                      int64_t b, int64_t j,
                                                      const acc_t (&rec)[kNumGates]) {
  using S = DeviceScalar<scalar_t>;
  const int64_t H = p.hidden;
  const int64_t row = p.step.row_offset + b;
  const scalar_t* input_proj = p.input_proj + row * kNumGates * H;
  acc_t pre[kNumGates];
#pragma unroll
  for (int g = 0; g < kNumGates; ++g) {
    const int64_t col = g * H + j;
    acc_t v = rec[g] + S::to_acc(input_proj[col]);
    if (p.bias_ih != nullptr) v += S::to_acc(p.bias_ih[col]) + S::to_acc(p.bias_hh[col]);
    pre[g] = v;
  }
  acc_t c, h;
  const Gates<acc_t> a = cell_forward(pre[0], pre[1], pre[2], pre[3], p.c_state[b * H + j], &c, &h);
  p.c_state[b * H + j] = c;
  if (p.gates_ws != nullptr) {
    acc_t* gates = p.gates_ws + row * kNumGates * H;
    gates[j] = a.i;
    gates[H + j] = a.f;
    gates[2 * H + j] = a.g;
    gates[3 * H + j] = a.o;
    p.cells_ws[row * H + j] = c;
  }
  if (p.h_unprojected != nullptr) {
    p.h_unprojected[b * H + j] = S::from_acc(h);
  } else {
    p.output[row * p.proj + j] = S::from_acc(h);
  }
}

// What a cell's update needs besides h_prev · W_hhᵀ: the input projection and the biases of its
// four gates, and c_prev. The 8-warp tensor-core tile loads these at the start of a step, before
// the h_prev tile and the inner product, so their latency overlaps that work; the other tiles load
// them just before the update. The projection and the bias sum are kept apart so that every tile
// adds in the same order, (rec + input_proj) + (b_ih + b_hh), whichever way it loads them.
template <typename acc_t>
struct CellOperands {
  acc_t input_proj[kNumGates];  // input_proj[row, g*H + j]
  acc_t bias[kNumGates];        // b_ih + b_hh (unused without biases)
  acc_t c_prev;
};

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ CellOperands<acc_t> load_cell_operands(const ForwardStepParams<scalar_t, acc_t>& p,
                                                                  int64_t b, int64_t j) {
  using S = DeviceScalar<scalar_t>;
  const int64_t H = p.hidden;
  const scalar_t* input_proj = p.input_proj + (p.step.row_offset + b) * kNumGates * H;
  CellOperands<acc_t> o;
#pragma unroll
  for (int g = 0; g < kNumGates; ++g) {
    const int64_t col = g * H + j;
    o.input_proj[g] = S::to_acc(input_proj[col]);
    o.bias[g] = p.bias_ih != nullptr ? S::to_acc(p.bias_ih[col]) + S::to_acc(p.bias_hh[col]) : acc_t(0);
  }
  o.c_prev = p.c_state[b * H + j];
  return o;
}

// forward_step_epilogue with the cell's operands already loaded (the 8-warp tensor-core tile).
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void forward_step_epilogue_prefetched(const ForwardStepParams<scalar_t, acc_t>& p,
                                                      int64_t b, int64_t j,
                                                      const acc_t (&rec)[kNumGates],
                                                      const CellOperands<acc_t>& o) {
  using S = DeviceScalar<scalar_t>;
  const int64_t H = p.hidden;
  const int64_t row = p.step.row_offset + b;
  acc_t pre[kNumGates];
#pragma unroll
  for (int g = 0; g < kNumGates; ++g) {
    pre[g] = rec[g] + o.input_proj[g];
    if (p.bias_ih != nullptr) pre[g] += o.bias[g];
  }
  acc_t c, h;
  const Gates<acc_t> a = cell_forward(pre[0], pre[1], pre[2], pre[3], o.c_prev, &c, &h);
  p.c_state[b * H + j] = c;
  if (p.gates_ws != nullptr) {
    acc_t* gates = p.gates_ws + row * kNumGates * H;
    gates[j] = a.i;
    gates[H + j] = a.f;
    gates[2 * H + j] = a.g;
    gates[3 * H + j] = a.o;
    p.cells_ws[row * H + j] = c;
  }
  if (p.h_unprojected != nullptr) {
    p.h_unprojected[b * H + j] = S::from_acc(h);
  } else {
    p.output[row * p.proj + j] = S::from_acc(h);
  }
}

// ---------------------------------------------------------------------------------------------
// SIMT forward tile (float, double; also half types before sm_80).
constexpr int kSimtBatchTile = 16;
constexpr int kSimtHiddenTile = 16;
constexpr int kSimtGranule = 32;  // k_chunk is a multiple of this
constexpr int kSimtThreads = kSimtBatchTile * kSimtHiddenTile;
constexpr int kSimtGateCols = kNumGates * kSimtHiddenTile;

template <typename acc_t>
inline size_t simt_forward_smem_bytes(int k_chunk) {
  return (size_t(kSimtBatchTile) * (k_chunk + 1) + size_t(k_chunk) * (kSimtGateCols + 1)) * sizeof(acc_t);
}

// Block (hidden_tile, batch_tile) of one forward step. Thread (ty, tx) = (batch row, hidden unit)
// holds the four gate accumulators of its cell. load_w = false reuses the W tile already in
// shared memory (persistent kernel, W resident: then k_chunk >= P).
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void forward_step_simt_tile(const ForwardStepParams<scalar_t, acc_t>& p,
                                                       unsigned hidden_tile, unsigned batch_tile,
                                                       int k_chunk, bool load_w) {
  using S = DeviceScalar<scalar_t>;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const int h_pitch = k_chunk + 1;
  constexpr int w_pitch = kSimtGateCols + 1;  // k-major, so a row of 16 threads reads 16 words
  acc_t* h_tile = reinterpret_cast<acc_t*>(smem_raw);       // [kSimtBatchTile][h_pitch]
  acc_t* w_tile = h_tile + kSimtBatchTile * h_pitch;          // [k_chunk][w_pitch]

  const int tid = threadIdx.x;
  const int tx = tid % kSimtHiddenTile;
  const int ty = tid / kSimtHiddenTile;
  const int64_t j0 = static_cast<int64_t>(hidden_tile) * kSimtHiddenTile;
  const int64_t b0 = static_cast<int64_t>(batch_tile) * kSimtBatchTile;
  const int64_t H = p.hidden, P = p.proj, rows = p.step.rows;

  acc_t rec[kNumGates] = {acc_t(0), acc_t(0), acc_t(0), acc_t(0)};
  for (int64_t k0 = 0; k0 < P; k0 += k_chunk) {
    for (int e = tid; e < kSimtBatchTile * k_chunk; e += kSimtThreads) {
      const int r = e / k_chunk, kk = e % k_chunk;
      const int64_t b = b0 + r, k = k0 + kk;
      h_tile[r * h_pitch + kk] = (b < rows && k < P) ? S::to_acc(previous_h_row(p, b)[k]) : acc_t(0);
    }
    if (load_w) {
      for (int e = tid; e < kSimtGateCols * k_chunk; e += kSimtThreads) {
        const int n = e / k_chunk, kk = e % k_chunk;
        const int gate = n / kSimtHiddenTile;
        const int64_t j = j0 + n % kSimtHiddenTile, k = k0 + kk;
        w_tile[kk * w_pitch + n] =
            (j < H && k < P) ? S::to_acc(p.weight_hh[(gate * H + j) * P + k]) : acc_t(0);
      }
    }
    __syncthreads();
    const acc_t* h_row = h_tile + ty * h_pitch;
    const int k_end = static_cast<int>(P - k0 < k_chunk ? P - k0 : k_chunk);  // skip zero padding
#pragma unroll 4
    for (int kk = 0; kk < k_end; ++kk) {
      const acc_t hv = h_row[kk];
      const acc_t* w = w_tile + kk * w_pitch + tx;
#pragma unroll
      for (int g = 0; g < kNumGates; ++g) rec[g] += hv * w[g * kSimtHiddenTile];
    }
    __syncthreads();
  }
  const int64_t b = b0 + ty, j = j0 + tx;
  if (b < rows && j < H) forward_step_epilogue(p, b, j, rec);
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kSimtThreads)
    lstm_forward_step_simt(const ForwardStepParams<scalar_t, acc_t> p, int k_chunk) {
  forward_step_simt_tile(p, blockIdx.x, blockIdx.y, k_chunk, /*load_w=*/true);
}

// ---------------------------------------------------------------------------------------------
// Small-batch SIMT forward tile (float, double when the batch is small). The 16 x 16 SIMT tile
// gives each thread one (batch row, unit) cell, so with B = 1 fifteen of its sixteen rows are
// zero padding that still costs shared-memory loads: at B=1 H=256 fp32 that made a step ~10 us.
// Here a block takes kSmallBatchTile rows and 16 units and splits K instead: thread (ty, tx)
// accumulates, for unit tx and every row of the tile, the four gates over the k-slice
// {ty, ty + 16, ty + 32, ...}; the 16 partial sums per (row, gate, unit) then meet in shared memory.
// W is stored k-major with a pitch of 80: the two k rows a warp reads (ty = 2w, 2w+1) then sit
// 16 banks apart, so the 32 lanes hit 32 different banks.
constexpr int kSmallBatchTile = 4;
constexpr int kSmallBatchMax = 8;   // batches up to this size use this tile (when SIMT)
constexpr int kSplitK = kSimtThreads / kSimtHiddenTile;  // 16 k-slices
constexpr int kSplitKWPitch = kSimtGateCols + 16;
constexpr int kSplitKGranule = kSplitK * 2;

template <typename acc_t>
inline size_t splitk_forward_smem_bytes(int k_chunk) {
  return (size_t(kSmallBatchTile) * k_chunk + size_t(k_chunk) * kSplitKWPitch +
          size_t(kSplitK) * kSmallBatchTile * kSimtGateCols) * sizeof(acc_t);
}

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void forward_step_splitk_tile(const ForwardStepParams<scalar_t, acc_t>& p,
                                                         unsigned hidden_tile, unsigned batch_tile,
                                                         int k_chunk, bool load_w) {
  using S = DeviceScalar<scalar_t>;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  acc_t* h_tile = reinterpret_cast<acc_t*>(smem_raw);        // [kSmallBatchTile][k_chunk]
  acc_t* w_tile = h_tile + kSmallBatchTile * k_chunk;          // [k_chunk][kSplitKWPitch]
  acc_t* partial = w_tile + k_chunk * kSplitKWPitch;           // [kSplitK][kSmallBatchTile][64]

  const int tid = threadIdx.x;
  const int tx = tid % kSimtHiddenTile;
  const int ty = tid / kSimtHiddenTile;
  const int64_t j0 = static_cast<int64_t>(hidden_tile) * kSimtHiddenTile;
  const int64_t b0 = static_cast<int64_t>(batch_tile) * kSmallBatchTile;
  const int64_t H = p.hidden, P = p.proj, rows = p.step.rows;

  acc_t rec[kSmallBatchTile][kNumGates] = {};
  for (int64_t k0 = 0; k0 < P; k0 += k_chunk) {
    for (int e = tid; e < kSmallBatchTile * k_chunk; e += kSimtThreads) {
      const int r = e / k_chunk, kk = e % k_chunk;
      const int64_t b = b0 + r, k = k0 + kk;
      h_tile[e] = (b < rows && k < P) ? S::to_acc(previous_h_row(p, b)[k]) : acc_t(0);
    }
    if (load_w) {
      for (int e = tid; e < kSimtGateCols * k_chunk; e += kSimtThreads) {
        const int n = e / k_chunk, kk = e % k_chunk;
        const int gate = n / kSimtHiddenTile;
        const int64_t j = j0 + n % kSimtHiddenTile, k = k0 + kk;
        w_tile[kk * kSplitKWPitch + n] =
            (j < H && k < P) ? S::to_acc(p.weight_hh[(gate * H + j) * P + k]) : acc_t(0);
      }
    }
    __syncthreads();
    const int64_t k_left = P - k0;
    const int k_end = static_cast<int>(k_left < k_chunk ? k_left : k_chunk);
    for (int kk = ty; kk < k_end; kk += kSplitK) {
      const acc_t* w = w_tile + kk * kSplitKWPitch + tx;
      const acc_t wg[kNumGates] = {w[0], w[kSimtHiddenTile], w[2 * kSimtHiddenTile], w[3 * kSimtHiddenTile]};
#pragma unroll
      for (int r = 0; r < kSmallBatchTile; ++r) {
        const acc_t hv = h_tile[r * k_chunk + kk];
#pragma unroll
        for (int g = 0; g < kNumGates; ++g) rec[r][g] += hv * wg[g];
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < kSmallBatchTile; ++r) {
#pragma unroll
    for (int g = 0; g < kNumGates; ++g) {
      partial[(ty * kSmallBatchTile + r) * kSimtGateCols + g * kSimtHiddenTile + tx] = rec[r][g];
    }
  }
  __syncthreads();
  // Thread t sums the kSplitK partials of one (row, gate, unit) into slice 0 (only it touches them).
  constexpr int kOutputs = kSmallBatchTile * kSimtGateCols;  // 256 == kSimtThreads
  static_assert(kOutputs == kSimtThreads, "one reduced output per thread");
  {
    acc_t sum = acc_t(0);
#pragma unroll
    for (int slice = 0; slice < kSplitK; ++slice) sum += partial[slice * kOutputs + tid];
    partial[tid] = sum;
  }
  __syncthreads();
  if (tid < kSmallBatchTile * kSimtHiddenTile) {
    const int r = tid / kSimtHiddenTile, jj = tid % kSimtHiddenTile;
    const int64_t b = b0 + r, j = j0 + jj;
    if (b < rows && j < H) {
      const acc_t* sums = partial + r * kSimtGateCols + jj;
      const acc_t gate_sums[kNumGates] = {sums[0], sums[kSimtHiddenTile], sums[2 * kSimtHiddenTile],
                                          sums[3 * kSimtHiddenTile]};
      forward_step_epilogue(p, b, j, gate_sums);
    }
  }
  // The next step (persistent kernel) rewrites h_tile and partial only after its grid barrier.
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kSimtThreads)
    lstm_forward_step_splitk(const ForwardStepParams<scalar_t, acc_t> p, int k_chunk) {
  forward_step_splitk_tile(p, blockIdx.x, blockIdx.y, k_chunk, /*load_w=*/true);
}

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
__device__ __forceinline__ void mma_tile_product(FragC& acc, FragC& acc_small, FragA& a, FragB& b,
                                                 bool split_tf32) {
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

// ---------------------------------------------------------------------------------------------
// Tensor-core forward tile (half, bfloat16; sm_80+).
constexpr int kMmaTile = 16;       // wmma m = n = k = 16
constexpr int kMmaGranule = 64;    // k_chunk is a multiple of this
constexpr int kMmaPad = 8;         // 16 bytes of padding per shared-memory row (bank spread)
constexpr int kMmaThreads = 32 * kNumGates;  // one warp per gate
constexpr int kMmaGateCols = kNumGates * kMmaTile;
constexpr int kMmaRecPitch = kMmaGateCols + 4;

// k_split: warps per gate (1 for the 4-warp tile, kMma8KSplit for the 8-warp tile); each K part
// leaves its own [16][kMmaRecPitch] partial sums.
template <typename scalar_t>
inline size_t mma_forward_smem_bytes(int k_chunk, int k_split) {
  return size_t(kMmaTile + kMmaGateCols) * (k_chunk + kMmaPad) * sizeof(scalar_t) +
         size_t(k_split) * kMmaTile * kMmaRecPitch * sizeof(float);
}

// k values per 16-byte chunk of a staged row.
template <typename scalar_t>
constexpr int kMmaVec = 16 / static_cast<int>(sizeof(scalar_t));

template <typename scalar_t, bool kVectorLoads>
__device__ __forceinline__ void mma_load_tile_row(scalar_t* dst, const scalar_t* src_row, int64_t k0,
                                                  int64_t P, bool row_valid, int chunk) {
  // Loads one 16-byte chunk of consecutive k values of one row, zero-filling past P or rows.
  constexpr int kVec = kMmaVec<scalar_t>;
  const int64_t k = k0 + static_cast<int64_t>(chunk) * kVec;
  if (kVectorLoads) {
    uint4 v = make_uint4(0u, 0u, 0u, 0u);  // all-zero bits are +0.0 in every type here
    if (row_valid && k < P) v = *reinterpret_cast<const uint4*>(src_row + k);
    *reinterpret_cast<uint4*>(dst + chunk * kVec) = v;
  } else {
    const scalar_t zero = DeviceScalar<scalar_t>::from_acc(0.0f);
#pragma unroll
    for (int u = 0; u < kVec; ++u) dst[chunk * kVec + u] = (row_valid && k + u < P) ? src_row[k + u] : zero;
  }
}

template <typename scalar_t, bool kVectorLoads>
__device__ __forceinline__ void forward_step_mma_tile(const ForwardStepParams<scalar_t, float>& p,
                                                      unsigned hidden_tile, unsigned batch_tile,
                                                      int k_chunk, bool load_w) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  namespace wmma = nvcuda::wmma;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  // Every sub-array starts on a 32-byte boundary, as wmma loads and stores require:
  // 16 * ld * 2 bytes and 64 * ld * 2 bytes are multiples of 32 because ld is a multiple of 8.
  const int ld = k_chunk + kMmaPad;
  scalar_t* h_tile = reinterpret_cast<scalar_t*>(smem_raw);            // [16][ld]
  scalar_t* w_tile = h_tile + kMmaTile * ld;                             // [64][ld], row = gate*16 + j
  float* rec_tile = reinterpret_cast<float*>(w_tile + kMmaGateCols * ld);  // [16][kMmaRecPitch]
  const int chunks_per_row = k_chunk / 8;

  const int tid = threadIdx.x;
  const int warp = tid / 32;  // == the gate this warp computes
  const int64_t j0 = static_cast<int64_t>(hidden_tile) * kMmaTile;
  const int64_t b0 = static_cast<int64_t>(batch_tile) * kMmaTile;
  const int64_t H = p.hidden, P = p.proj, rows = p.step.rows;

  wmma::fragment<wmma::accumulator, kMmaTile, kMmaTile, kMmaTile, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  for (int64_t k0 = 0; k0 < P; k0 += k_chunk) {
    for (int e = tid; e < kMmaTile * chunks_per_row; e += kMmaThreads) {
      const int r = e / chunks_per_row;
      const int64_t b = b0 + r;
      const bool valid = b < rows;
      const scalar_t* src = valid ? previous_h_row(p, b) : p.hx;
      mma_load_tile_row<scalar_t, kVectorLoads>(h_tile + r * ld, src, k0, P, valid, e % chunks_per_row);
    }
    if (load_w) {
      for (int e = tid; e < kMmaGateCols * chunks_per_row; e += kMmaThreads) {
        const int n = e / chunks_per_row;
        const int64_t j = j0 + n % kMmaTile;
        const bool valid = j < H;
        const scalar_t* src = p.weight_hh + (valid ? ((n / kMmaTile) * H + j) * P : 0);
        mma_load_tile_row<scalar_t, kVectorLoads>(w_tile + n * ld, src, k0, P, valid, e % chunks_per_row);
      }
    }
    __syncthreads();
    const int64_t k_left = P - k0;
    const int k_end = static_cast<int>(k_left < k_chunk ? (k_left + kMmaTile - 1) / kMmaTile * kMmaTile : k_chunk);
#pragma unroll 4
    for (int kk = 0; kk < k_end; kk += kMmaTile) {
      wmma::fragment<wmma::matrix_a, kMmaTile, kMmaTile, kMmaTile, scalar_t, wmma::row_major> a;
      wmma::fragment<wmma::matrix_b, kMmaTile, kMmaTile, kMmaTile, scalar_t, wmma::col_major> w;
      wmma::load_matrix_sync(a, h_tile + kk, ld);
      // B[k][n] = W_hh[gate*H + j0 + n][k0 + k]: column-major over the staged rows.
      wmma::load_matrix_sync(w, w_tile + warp * kMmaTile * ld + kk, ld);
      wmma::mma_sync(acc, a, w, acc);
    }
    __syncthreads();
  }
  wmma::store_matrix_sync(rec_tile + warp * kMmaTile, acc, kMmaRecPitch, wmma::mem_row_major);
  __syncthreads();
  for (int e = tid; e < kMmaTile * kMmaTile; e += kMmaThreads) {
    const int r = e / kMmaTile, jj = e % kMmaTile;
    const int64_t b = b0 + r, j = j0 + jj;
    if (b < rows && j < H) {
      const float* rec_row = rec_tile + r * kMmaRecPitch + jj;
      const float rec[kNumGates] = {rec_row[0], rec_row[kMmaTile], rec_row[2 * kMmaTile], rec_row[3 * kMmaTile]};
      forward_step_epilogue(p, b, j, rec);
    }
  }
  // The next step (persistent kernel) overwrites h_tile and rec_tile only after its grid barrier.
#else
  __trap();  // the host only launches this kernel on sm_80 or newer
#endif
}

template <typename scalar_t, bool kVectorLoads>
__global__ void __launch_bounds__(kMmaThreads)
    lstm_forward_step_mma(const ForwardStepParams<scalar_t, float> p, int k_chunk) {
  forward_step_mma_tile<scalar_t, kVectorLoads>(p, blockIdx.x, blockIdx.y, k_chunk, /*load_w=*/true);
}

// ---------------------------------------------------------------------------------------------
// 8-warp tensor-core forward tile (half, bfloat16, and float as TF32 / 3xTF32; sm_80+). Not yet
// run on a GPU: opt-in (Note [Verified CUDA kernel variants], csrc/cuda_variants.h). Two warps
// per gate, each taking every other K tile, so the dependent mma chain per warp is half as long as
// in the 4-warp tile; 256 threads finish one cell each, and load that cell's operands at the start
// of the step so that their latency overlaps the inner product.
constexpr int kMma8KSplit = 2;                           // warps per gate
constexpr int kMma8Threads = 32 * kNumGates * kMma8KSplit;  // 256: one cell per thread at the end

template <typename scalar_t, bool kVectorLoads>
__device__ __forceinline__ void forward_step_mma8_tile(const ForwardStepParams<scalar_t, float>& p,
                                                       unsigned hidden_tile, unsigned batch_tile,
                                                       int k_chunk, bool load_w, bool split_tf32) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  namespace wmma = nvcuda::wmma;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  // Every sub-array starts on a 32-byte boundary, as wmma loads and stores require:
  // 16 * ld and 64 * ld elements of 2 or 4 bytes are multiples of 32 bytes (ld is a multiple of 8).
  const int ld = k_chunk + kMmaPad;
  scalar_t* h_tile = reinterpret_cast<scalar_t*>(smem_raw);            // [16][ld]
  scalar_t* w_tile = h_tile + kMmaTile * ld;                             // [64][ld], row = gate*16 + j
  float* rec_tile = reinterpret_cast<float*>(w_tile + kMmaGateCols * ld);  // [kMma8KSplit][16][kMmaRecPitch]
  const int chunks_per_row = k_chunk / kMmaVec<scalar_t>;
  using Precision = typename MmaOperand<scalar_t>::precision;
  constexpr int kK = MmaOperand<scalar_t>::kK;

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int gate = warp % kNumGates;   // the gate this warp computes ...
  const int k_part = warp / kNumGates; // ... over K tiles k_part, k_part + kMma8KSplit, ...
  const int64_t j0 = static_cast<int64_t>(hidden_tile) * kMmaTile;
  const int64_t b0 = static_cast<int64_t>(batch_tile) * kMmaTile;
  const int64_t H = p.hidden, P = p.proj, rows = p.step.rows;

  // Thread tid finishes cell (row tid / 16, unit tid % 16); its operands load while the tile works.
  const int64_t cell_b = b0 + tid / kMmaTile, cell_j = j0 + tid % kMmaTile;
  const bool owns_cell = cell_b < rows && cell_j < H;
  CellOperands<float> operands{};
  if (owns_cell) operands = load_cell_operands(p, cell_b, cell_j);

  wmma::fragment<wmma::accumulator, kMmaTile, kMmaTile, kK, float> acc, acc_small;
  wmma::fill_fragment(acc, 0.0f);
  wmma::fill_fragment(acc_small, 0.0f);
  for (int64_t k0 = 0; k0 < P; k0 += k_chunk) {
    for (int e = tid; e < kMmaTile * chunks_per_row; e += kMma8Threads) {
      const int r = e / chunks_per_row;
      const int64_t b = b0 + r;
      const bool valid = b < rows;
      const scalar_t* src = valid ? previous_h_row(p, b) : p.hx;
      mma_load_tile_row<scalar_t, kVectorLoads>(h_tile + r * ld, src, k0, P, valid, e % chunks_per_row);
    }
    if (load_w) {
      for (int e = tid; e < kMmaGateCols * chunks_per_row; e += kMma8Threads) {
        const int n = e / chunks_per_row;
        const int64_t j = j0 + n % kMmaTile;
        const bool valid = j < H;
        const scalar_t* src = p.weight_hh + (valid ? ((n / kMmaTile) * H + j) * P : 0);
        mma_load_tile_row<scalar_t, kVectorLoads>(w_tile + n * ld, src, k0, P, valid, e % chunks_per_row);
      }
    }
    __syncthreads();
    const int64_t k_left = P - k0;
    const int k_end = static_cast<int>(k_left < k_chunk ? (k_left + kMmaTile - 1) / kMmaTile * kMmaTile : k_chunk);
#pragma unroll 4
    for (int kk = k_part * kK; kk < k_end; kk += kMma8KSplit * kK) {
      wmma::fragment<wmma::matrix_a, kMmaTile, kMmaTile, kK, Precision, wmma::row_major> a;
      wmma::fragment<wmma::matrix_b, kMmaTile, kMmaTile, kK, Precision, wmma::col_major> w;
      wmma::load_matrix_sync(a, h_tile + kk, ld);
      // B[k][n] = W_hh[gate*H + j0 + n][k0 + k]: column-major over the staged rows.
      wmma::load_matrix_sync(w, w_tile + gate * kMmaTile * ld + kk, ld);
      mma_tile_product<scalar_t>(acc, acc_small, a, w, split_tf32);
    }
    __syncthreads();
  }
  if constexpr (std::is_same_v<scalar_t, float>) {
#pragma unroll
    for (int i = 0; i < acc.num_elements; ++i) acc.x[i] += acc_small.x[i];
  }
  wmma::store_matrix_sync(rec_tile + k_part * kMmaTile * kMmaRecPitch + gate * kMmaTile, acc, kMmaRecPitch,
                          wmma::mem_row_major);
  __syncthreads();
  if (owns_cell) {
    const float* rec_row = rec_tile + (tid / kMmaTile) * kMmaRecPitch + tid % kMmaTile;
    float rec[kNumGates];
#pragma unroll
    for (int g = 0; g < kNumGates; ++g) {
      rec[g] = 0.f;
#pragma unroll
      for (int part = 0; part < kMma8KSplit; ++part) rec[g] += rec_row[part * kMmaTile * kMmaRecPitch + g * kMmaTile];
    }
    forward_step_epilogue_prefetched(p, cell_b, cell_j, rec, operands);
  }
  // The next step (persistent kernel) overwrites h_tile and rec_tile only after its grid barrier.
#else
  __trap();  // the host only launches this kernel on sm_80 or newer
#endif
}

template <typename scalar_t, bool kVectorLoads>
__global__ void __launch_bounds__(kMma8Threads)
    lstm_forward_step_mma8(const ForwardStepParams<scalar_t, float> p, int k_chunk, bool split_tf32) {
  forward_step_mma8_tile<scalar_t, kVectorLoads>(p, blockIdx.x, blockIdx.y, k_chunk, /*load_w=*/true, split_tf32);
}

// ---------------------------------------------------------------------------------------------
// Persistent forward: every step of the sequence in one cooperative launch.
// kTile: 0 = SIMT, 1 = tensor cores with scalar loads, 2 = tensor cores with 16-byte loads,
// 3 = small-batch split-K SIMT.
// (This kernel, like every kernel that has passed the GPU check, is kept as it was checked, so that
// it compiles to the same code: Note [Verified CUDA kernel variants]. Hence the 8-warp tile's own
// copy of the step loop below rather than a shared helper.)
template <typename scalar_t, typename acc_t, int kTile>
__global__ void __launch_bounds__(kTile == 0 || kTile == 3 ? kSimtThreads : kMmaThreads)
    lstm_forward_persistent(const ForwardStepParams<scalar_t, acc_t> params,
                            const StepRows* schedule, int64_t num_steps, int k_chunk,
                            bool w_resident) {
  namespace cg = cooperative_groups;
  cg::grid_group grid = cg::this_grid();
  constexpr int kBatchTile = kTile == 0 ? kSimtBatchTile : (kTile == 3 ? kSmallBatchTile : kMmaTile);
  ForwardStepParams<scalar_t, acc_t> p = params;
  bool w_loaded = false;  // block-uniform
  for (int64_t s = 0; s < num_steps; ++s) {
    p.step = schedule[s];
    // A block whose batch rows are all inactive at this step only waits at the barrier.
    if (static_cast<int64_t>(blockIdx.y) * kBatchTile < p.step.rows) {
      const bool load_w = !(w_resident && w_loaded);
      if constexpr (kTile == 0) {
        forward_step_simt_tile(p, blockIdx.x, blockIdx.y, k_chunk, load_w);
      } else if constexpr (kTile == 3) {
        forward_step_splitk_tile(p, blockIdx.x, blockIdx.y, k_chunk, load_w);
      } else {
        forward_step_mma_tile<scalar_t, kTile == 2>(p, blockIdx.x, blockIdx.y, k_chunk, load_w);
      }
      w_loaded = true;
    }
    grid.sync();
  }
}

// The 8-warp tensor-core tile's persistent kernel: lstm_forward_persistent's loop, plus split_tf32.
template <typename scalar_t, bool kVectorLoads>
__global__ void __launch_bounds__(kMma8Threads)
    lstm_forward_persistent_mma8(const ForwardStepParams<scalar_t, float> params, const StepRows* schedule,
                                 int64_t num_steps, int k_chunk, bool w_resident, bool split_tf32) {
  namespace cg = cooperative_groups;
  cg::grid_group grid = cg::this_grid();
  ForwardStepParams<scalar_t, float> p = params;
  bool w_loaded = false;  // block-uniform
  for (int64_t s = 0; s < num_steps; ++s) {
    p.step = schedule[s];
    if (static_cast<int64_t>(blockIdx.y) * kMmaTile < p.step.rows) {
      const bool load_w = !(w_resident && w_loaded);
      forward_step_mma8_tile<scalar_t, kVectorLoads>(p, blockIdx.x, blockIdx.y, k_chunk, load_w, split_tf32);
      w_loaded = true;
    }
    grid.sync();
  }
}

// ---------------------------------------------------------------------------------------------
// Backward pointwise kernel (generic per-step loop, used with a projection): one thread per cell.
constexpr int kPointwiseThreads = 256;

template <typename acc_t>
__global__ void __launch_bounds__(kPointwiseThreads)
    lstm_backward_pointwise(const BackwardPointwiseParams<acc_t> p) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kPointwiseThreads + threadIdx.x;
  if (idx < p.step.rows * p.hidden) backward_pointwise_element(p, idx / p.hidden, idx % p.hidden);
}

// ---------------------------------------------------------------------------------------------
// Fused backward step (no projection): carry GEMM dgates[next] · W_hh for the block's (b, j)
// tile, then backward_cell. SIMT in the opmath type: dgates are fp32 (fp64), so the carry keeps
// full precision whatever the storage dtype of W_hh. K = 4H is staged k_chunk columns at a time.
constexpr int kBackwardTile = 16;  // batch rows and hidden units per block; 256 threads

template <typename acc_t>
inline size_t backward_smem_bytes(int k_chunk) {
  return (size_t(kBackwardTile) * (k_chunk + 1) + size_t(k_chunk) * (kBackwardTile + 1)) * sizeof(acc_t);
}

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void backward_step_tile(const BackwardSequenceParams<scalar_t, acc_t>& p,
                                                   const StepRows& step, const StepRows& next,
                                                   unsigned hidden_tile, unsigned batch_tile,
                                                   int k_chunk) {
  using S = DeviceScalar<scalar_t>;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const int d_pitch = k_chunk + 1;
  constexpr int w_pitch = kBackwardTile + 1;
  acc_t* dgates_tile = reinterpret_cast<acc_t*>(smem_raw);   // [16][d_pitch]
  acc_t* w_tile = dgates_tile + kBackwardTile * d_pitch;       // [k_chunk][w_pitch]
  const int tid = threadIdx.x;
  const int tx = tid % kBackwardTile, ty = tid / kBackwardTile;
  const int64_t j0 = static_cast<int64_t>(hidden_tile) * kBackwardTile;
  const int64_t b0 = static_cast<int64_t>(batch_tile) * kBackwardTile;
  const int64_t H = p.cell.hidden, K = kNumGates * H;

  // Four partial sums break the FMA dependency chain.
  acc_t carry[4] = {acc_t(0), acc_t(0), acc_t(0), acc_t(0)};
  if (b0 < next.rows) {  // block-uniform
    for (int64_t k0 = 0; k0 < K; k0 += k_chunk) {
      for (int e = tid; e < kBackwardTile * k_chunk; e += kSimtThreads) {
        const int r = e / k_chunk, kk = e % k_chunk;
        const int64_t b = b0 + r, k = k0 + kk;
        dgates_tile[r * d_pitch + kk] =
            (b < next.rows && k < K) ? p.cell.dgates[(next.row_offset + b) * K + k] : acc_t(0);
      }
      for (int e = tid; e < k_chunk * kBackwardTile; e += kSimtThreads) {
        const int kk = e / kBackwardTile, jj = e % kBackwardTile;
        const int64_t k = k0 + kk, j = j0 + jj;
        w_tile[kk * w_pitch + jj] = (k < K && j < H) ? S::to_acc(p.weight_hh[k * H + j]) : acc_t(0);
      }
      __syncthreads();
      const acc_t* d_row = dgates_tile + ty * d_pitch;
      const acc_t* w_col = w_tile + tx;
      // k_chunk is a multiple of 4 (kSimtGranule); zero padding past K adds nothing.
      for (int kk = 0; kk < k_chunk; kk += 4) {
#pragma unroll
        for (int u = 0; u < 4; ++u) carry[u] += d_row[kk + u] * w_col[(kk + u) * w_pitch];
      }
      __syncthreads();
    }
  }
  const int64_t b = b0 + ty, j = j0 + tx;
  if (b < step.rows && j < H) {
    acc_t dh = b < next.rows ? (carry[0] + carry[1]) + (carry[2] + carry[3])
                             : (p.grad_hy != nullptr ? p.grad_hy[b * H + j] : acc_t(0));
    if (p.grad_output != nullptr) dh += p.grad_output[(step.row_offset + b) * H + j];
    backward_cell(p.cell, step, b, j, dh);
  }
}

__device__ __forceinline__ StepRows step_after(const StepRows* schedule, int64_t k, int64_t num_steps) {
  return k + 1 < num_steps ? schedule[k + 1] : StepRows{0, 0, 0, 0};
}

// One launch per step (fallback when the persistent grid cannot be resident).
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kSimtThreads)
    lstm_backward_step(const BackwardSequenceParams<scalar_t, acc_t> p, int64_t k, int k_chunk) {
  const StepRows step = p.schedule[k];
  if (static_cast<int64_t>(blockIdx.y) * kBackwardTile < step.rows) {
    backward_step_tile(p, step, step_after(p.schedule, k, p.num_steps), blockIdx.x, blockIdx.y, k_chunk);
  }
}

// The whole reverse recurrence in one cooperative launch (Note [Persistent sequence kernels]).
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kSimtThreads)
    lstm_backward_persistent(const BackwardSequenceParams<scalar_t, acc_t> p, int k_chunk) {
  namespace cg = cooperative_groups;
  cg::grid_group grid = cg::this_grid();
  for (int64_t k = p.num_steps - 1; k >= 0; --k) {
    const StepRows step = p.schedule[k];
    if (static_cast<int64_t>(blockIdx.y) * kBackwardTile < step.rows) {
      backward_step_tile(p, step, step_after(p.schedule, k, p.num_steps), blockIdx.x, blockIdx.y, k_chunk);
    }
    grid.sync();
  }
}

// ---------------------------------------------------------------------------------------------
// Note [Tensor-core backward recurrence]
// The reverse recurrence of layers without projection (half, bfloat16, float), as one cooperative launch.
// Per step, block (hidden tile, batch tile) computes the carry for its 16 x 16 (b, j) cells,
//   carry[b, j] = sum_k dgates[next row b, k] * W_hh[k, j],   k over all 4H gate rows,
// with wmma 16x16x16 and fp32 accumulation, then runs backward_cell on them. Like the forward it
// keeps its slice of W_hh ([4H, 16 columns], in shared memory, column-major) for the whole
// sequence, so the only per-step traffic is the 16 rows of dgates it reads and the cells it
// writes; one grid barrier per step.
// Precision: dgates are fp32 (the weight-gradient GEMMs read them). For half types tensor cores
// multiply 16-bit operands, so each dgates value x is staged as hi = round16(x) and
// lo = round16(x - hi) and the carry is hi·W + lo·W: the A operand keeps ~16 significant bits
// instead of 8 (bf16), and W_hh is exact in its own dtype. For float, dgates and W_hh are staged
// in fp32 and multiplied as TF32 or 3xTF32 (Note [Tensor-core precision]). Either way the
// small products go to a second accumulator chain.
// The 8 warps take interleaved 16-wide K tiles (warp w: tiles w, w+8, ...) and the partial sums
// meet in shared memory. When 16 rows of dgates for all of K do not fit beside the W slice, they
// are staged k_chunk columns at a time (Note [K staging]); the W slice must fit (else the host
// falls back to the generic loop).
constexpr int kMmaBackwardWarps = 8;
constexpr int kMmaBackwardThreads = 32 * kMmaBackwardWarps;
constexpr int kMmaBackwardGranule = kMmaTile * kMmaBackwardWarps;  // k_chunk and K padding unit
constexpr int kMmaBackwardRedPitch = kMmaTile + 4;

__host__ __device__ inline int64_t round_up(int64_t x, int64_t unit) { return (x + unit - 1) / unit * unit; }

// Staged copies of each dgates chunk: hi and lo for 16-bit operands, the fp32 values for float.
template <typename scalar_t>
constexpr int kStagedDgates = std::is_same_v<scalar_t, float> ? 1 : 2;

// Shared memory: W slice [16][K_round + 8], dgates [kStagedDgates][16][k_chunk + 8] (scalar_t),
// and the partial sums [warps][2 chains][16][20] (fp32). Every region starts 32-byte aligned (wmma).
template <typename scalar_t>
inline size_t mma_backward_smem_bytes(int64_t k_round, int k_chunk) {
  return size_t(kMmaTile) * (k_round + kMmaPad) * sizeof(scalar_t) +
         kStagedDgates<scalar_t> * size_t(kMmaTile) * (k_chunk + kMmaPad) * sizeof(scalar_t) +
         size_t(kMmaBackwardWarps) * 2 * kMmaTile * kMmaBackwardRedPitch * sizeof(float);
}

template <typename scalar_t>
__device__ __forceinline__ void backward_step_mma_tile(const BackwardSequenceParams<scalar_t, float>& p,
                                                       const StepRows& step, const StepRows& next,
                                                       unsigned hidden_tile, unsigned batch_tile,
                                                       int k_chunk, const scalar_t* w_slice,
                                                       int64_t k_round, scalar_t* d_hi, scalar_t* d_lo,
                                                       float* partial, bool split_tf32) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  namespace wmma = nvcuda::wmma;
  using S = DeviceScalar<scalar_t>;
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int ld_d = k_chunk + kMmaPad;
  const int ld_w = static_cast<int>(k_round) + kMmaPad;
  const int64_t j0 = static_cast<int64_t>(hidden_tile) * kMmaTile;
  const int64_t b0 = static_cast<int64_t>(batch_tile) * kMmaTile;
  const int64_t H = p.cell.hidden, K = kNumGates * H;

  using Precision = typename MmaOperand<scalar_t>::precision;
  constexpr int kK = MmaOperand<scalar_t>::kK;
  constexpr bool kFloat = std::is_same_v<scalar_t, float>;
  wmma::fragment<wmma::accumulator, kMmaTile, kMmaTile, kK, float> acc_hi, acc_lo;
  wmma::fill_fragment(acc_hi, 0.0f);
  wmma::fill_fragment(acc_lo, 0.0f);
  if (b0 < next.rows) {  // block-uniform: otherwise no row of the tile has a carry
    const int quads = k_chunk / 4;
    for (int64_t k0 = 0; k0 < k_round; k0 += k_chunk) {
      // Stage dgates[next rows b0.., k0 .. k0 + k_chunk) (as hi/lo halves for 16-bit operands);
      // zeros past K or rows. K = 4H is a multiple of 4 and dgates rows are 16-byte aligned, so
      // float4 loads are safe.
      for (int e = tid; e < kMmaTile * quads; e += kMmaBackwardThreads) {
        const int r = e / quads, c = (e % quads) * 4;
        const int64_t b = b0 + r, k = k0 + c;
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (b < next.rows && k < K) {
          v = *reinterpret_cast<const float4*>(p.cell.dgates + (next.row_offset + b) * K + k);
        }
        if constexpr (kFloat) {
          *reinterpret_cast<float4*>(d_hi + r * ld_d + c) = v;  // 16-byte aligned: ld_d, c % 4 == 0
        } else {
          const float x[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
          for (int u = 0; u < 4; ++u) {
            const scalar_t hi = S::from_acc(x[u]);
            d_hi[r * ld_d + c + u] = hi;
            d_lo[r * ld_d + c + u] = S::from_acc(x[u] - S::to_acc(hi));
          }
        }
      }
      __syncthreads();
      const int64_t k_left = k_round - k0;
      const int k_end = static_cast<int>(k_left < k_chunk ? k_left : k_chunk);  // a multiple of 16
      for (int kk = warp * kK; kk < k_end; kk += kMmaBackwardWarps * kK) {
        if constexpr (kFloat) {
          wmma::fragment<wmma::matrix_a, kMmaTile, kMmaTile, kK, Precision, wmma::row_major> a;
          wmma::fragment<wmma::matrix_b, kMmaTile, kMmaTile, kK, Precision, wmma::col_major> w;
          wmma::load_matrix_sync(a, d_hi + kk, ld_d);
          wmma::load_matrix_sync(w, w_slice + k0 + kk, ld_w);  // B[k][n] = W_hh[k][j0 + n]
          mma_tile_product<scalar_t>(acc_hi, acc_lo, a, w, split_tf32);
        } else {  // as checked on the GPU (Note [Verified CUDA kernel variants])
          wmma::fragment<wmma::matrix_a, kMmaTile, kMmaTile, kMmaTile, scalar_t, wmma::row_major> a_hi, a_lo;
          wmma::fragment<wmma::matrix_b, kMmaTile, kMmaTile, kMmaTile, scalar_t, wmma::col_major> w;
          wmma::load_matrix_sync(a_hi, d_hi + kk, ld_d);
          wmma::load_matrix_sync(a_lo, d_lo + kk, ld_d);
          wmma::load_matrix_sync(w, w_slice + k0 + kk, ld_w);  // B[k][n] = W_hh[k][j0 + n]
          wmma::mma_sync(acc_hi, a_hi, w, acc_hi);
          wmma::mma_sync(acc_lo, a_lo, w, acc_lo);
        }
      }
      __syncthreads();
    }
  }
  float* mine = partial + warp * 2 * kMmaTile * kMmaBackwardRedPitch;
  wmma::store_matrix_sync(mine, acc_hi, kMmaBackwardRedPitch, wmma::mem_row_major);
  wmma::store_matrix_sync(mine + kMmaTile * kMmaBackwardRedPitch, acc_lo, kMmaBackwardRedPitch,
                          wmma::mem_row_major);
  __syncthreads();
  // One cell per thread (16 x 16 cells, 256 threads).
  const int r = tid / kMmaTile, jj = tid % kMmaTile;
  const int64_t b = b0 + r, j = j0 + jj;
  if (b < step.rows && j < H) {
    float dh;
    if (b < next.rows) {
      float sum[2] = {0.f, 0.f};  // hi and lo chains, summed separately then together
#pragma unroll
      for (int w = 0; w < kMmaBackwardWarps; ++w) {
#pragma unroll
        for (int chain = 0; chain < 2; ++chain) {
          sum[chain] += partial[(w * 2 + chain) * kMmaTile * kMmaBackwardRedPitch + r * kMmaBackwardRedPitch + jj];
        }
      }
      dh = sum[0] + sum[1];
    } else {
      dh = p.grad_hy != nullptr ? p.grad_hy[b * H + j] : 0.f;
    }
    if (p.grad_output != nullptr) dh += p.grad_output[(step.row_offset + b) * H + j];
    backward_cell(p.cell, step, b, j, dh);
  }
  // `partial` and the staging buffers are rewritten only after the caller's grid barrier.
#else
  __trap();  // the host only launches this kernel on sm_80 or newer
#endif
}

// float16 / bfloat16. (Kept as it passed the GPU check: the float kernel below is its copy with
// split_tf32 rather than a shared helper, so that this one compiles to the same code.)
template <typename scalar_t>
__global__ void __launch_bounds__(kMmaBackwardThreads, 1)
    lstm_backward_persistent_mma(const BackwardSequenceParams<scalar_t, float> p, int k_chunk) {
  namespace cg = cooperative_groups;
  cg::grid_group grid = cg::this_grid();
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const int64_t H = p.cell.hidden, K = kNumGates * H;
  const int64_t k_round = round_up(K, kMmaBackwardGranule);
  const int ld_w = static_cast<int>(k_round) + kMmaPad;
  scalar_t* w_slice = reinterpret_cast<scalar_t*>(smem_raw);   // [16][ld_w]: column j0 + n
  scalar_t* d_hi = w_slice + kMmaTile * ld_w;                   // [16][k_chunk + 8]
  scalar_t* d_lo = d_hi + kMmaTile * (k_chunk + kMmaPad);        // [16][k_chunk + 8]
  float* partial = reinterpret_cast<float*>(d_lo + kMmaTile * (k_chunk + kMmaPad));
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kMmaTile;

  // The W_hh slice, once: 16 consecutive threads read one row's 16 columns (32 bytes).
  const scalar_t zero = DeviceScalar<scalar_t>::from_acc(0.0f);
  for (int64_t e = threadIdx.x; e < kMmaTile * k_round; e += kMmaBackwardThreads) {
    const int64_t k = e / kMmaTile, j = j0 + e % kMmaTile;
    w_slice[(e % kMmaTile) * ld_w + k] = (k < K && j < H) ? p.weight_hh[k * H + j] : zero;
  }
  __syncthreads();
  for (int64_t k = p.num_steps - 1; k >= 0; --k) {
    const StepRows step = p.schedule[k];
    if (static_cast<int64_t>(blockIdx.y) * kMmaTile < step.rows) {
      backward_step_mma_tile(p, step, step_after(p.schedule, k, p.num_steps), blockIdx.x, blockIdx.y,
                             k_chunk, w_slice, k_round, d_hi, d_lo, partial, /*split_tf32=*/false);
    }
    grid.sync();
  }
}

// float as TF32 or 3xTF32 (Note [Tensor-core precision]); a template only so that the header can
// define it.
template <typename scalar_t>
__global__ void __launch_bounds__(kMmaBackwardThreads, 1)
    lstm_backward_persistent_mma_tf32(const BackwardSequenceParams<scalar_t, float> p, int k_chunk,
                                      bool split_tf32) {
  static_assert(std::is_same_v<scalar_t, float>, "float only: half types take lstm_backward_persistent_mma");
  namespace cg = cooperative_groups;
  cg::grid_group grid = cg::this_grid();
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const int64_t H = p.cell.hidden, K = kNumGates * H;
  const int64_t k_round = round_up(K, kMmaBackwardGranule);
  const int ld_w = static_cast<int>(k_round) + kMmaPad;
  scalar_t* w_slice = reinterpret_cast<scalar_t*>(smem_raw);   // [16][ld_w]: column j0 + n
  scalar_t* d_hi = w_slice + kMmaTile * ld_w;                   // [16][k_chunk + 8]
  float* partial = d_hi + kMmaTile * (k_chunk + kMmaPad);       // one staged copy: fp32 dgates
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kMmaTile;

  // The W_hh slice, once: 16 consecutive threads read one row's 16 columns (32 bytes).
  const scalar_t zero = DeviceScalar<scalar_t>::from_acc(0.0f);
  for (int64_t e = threadIdx.x; e < kMmaTile * k_round; e += kMmaBackwardThreads) {
    const int64_t k = e / kMmaTile, j = j0 + e % kMmaTile;
    w_slice[(e % kMmaTile) * ld_w + k] = (k < K && j < H) ? p.weight_hh[k * H + j] : zero;
  }
  __syncthreads();
  for (int64_t k = p.num_steps - 1; k >= 0; --k) {
    const StepRows step = p.schedule[k];
    if (static_cast<int64_t>(blockIdx.y) * kMmaTile < step.rows) {
      backward_step_mma_tile(p, step, step_after(p.schedule, k, p.num_steps), blockIdx.x, blockIdx.y,
                             k_chunk, w_slice, k_round, d_hi, /*d_lo=*/static_cast<scalar_t*>(nullptr), partial,
                             split_tf32);
    }
    grid.sync();
  }
}

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
  return static_cast<int64_t>(per_multiprocessor) * multiprocessors >=
         static_cast<int64_t>(grid.x) * grid.y * grid.z;
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
  int k_split;  // the tensor-core tile's warps per gate
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
      return {ForwardTile::kMma, kMma8Threads, kMmaGranule, kMmaTile, kMma8KSplit, true,
              vector_loads ? reinterpret_cast<const void*>(&lstm_forward_step_mma8<scalar_t, true>)
                           : reinterpret_cast<const void*>(&lstm_forward_step_mma8<scalar_t, false>),
              vector_loads ? reinterpret_cast<const void*>(&lstm_forward_persistent_mma8<scalar_t, true>)
                           : reinterpret_cast<const void*>(&lstm_forward_persistent_mma8<scalar_t, false>)};
    }
  }
  if constexpr (is_half_type<scalar_t>()) {
    if (tensor_cores) {
      return {ForwardTile::kMma, kMmaThreads, kMmaGranule, kMmaTile, 1, false,
              vector_loads ? reinterpret_cast<const void*>(&lstm_forward_step_mma<scalar_t, true>)
                           : reinterpret_cast<const void*>(&lstm_forward_step_mma<scalar_t, false>),
              vector_loads ? reinterpret_cast<const void*>(&lstm_forward_persistent<scalar_t, acc_t, 2>)
                           : reinterpret_cast<const void*>(&lstm_forward_persistent<scalar_t, acc_t, 1>)};
    }
  }
  if (batch <= kSmallBatchMax) {
    return {ForwardTile::kSplitK, kSimtThreads, kSplitKGranule, kSmallBatchTile, 1, false,
            reinterpret_cast<const void*>(&lstm_forward_step_splitk<scalar_t, acc_t>),
            reinterpret_cast<const void*>(&lstm_forward_persistent<scalar_t, acc_t, 3>)};
  }
  return {ForwardTile::kSimt, kSimtThreads, kSimtGranule, kSimtBatchTile, 1, false,
          reinterpret_cast<const void*>(&lstm_forward_step_simt<scalar_t, acc_t>),
          reinterpret_cast<const void*>(&lstm_forward_persistent<scalar_t, acc_t, 0>)};
}

// Persistent forward over the whole schedule. Tries the W-resident configuration (all of K in
// one chunk), then narrow chunks; returns cudaErrorCooperativeLaunchTooLarge (and launches
// nothing) when no configuration's grid can be resident, so the caller runs the step kernels.
template <typename scalar_t, typename acc_t>
cudaError_t launch_forward_persistent(const ForwardStepParams<scalar_t, acc_t>& p,
                                      const StepRows* schedule, int64_t num_steps, int64_t batch,
                                      bool tensor_cores, int mma_k_split, bool vector_loads, bool split_tf32,
                                      const DeviceLimits& limits, cudaStream_t stream) {
  const auto kind = forward_tile_kind<scalar_t, acc_t>(tensor_cores, mma_k_split, vector_loads, batch);
  const dim3 grid = kind.grid(p.hidden, batch);
  const auto bytes = [&](int chunk) { return kind.smem_bytes(chunk); };
  const int widest = widest_k_chunk(p.proj, kind.granule, limits.shared_memory_per_block,
                                    limits.forced_k_chunk, bytes);
  const int candidates[2] = {widest, kind.granule};
  for (int i = 0; i < (limits.forced_k_chunk > 0 ? 1 : 2); ++i) {
    int k_chunk = candidates[i];
    bool w_resident = k_chunk >= p.proj;
    const size_t smem = bytes(k_chunk);
    if (smem > limits.shared_memory_per_block) continue;
    cudaError_t err = allow_shared_memory(kind.persistent_kernel, smem);
    if (err != cudaSuccess) return err;
    if (!grid_fits_resident(kind.persistent_kernel, grid, kind.threads, smem, limits.multiprocessors)) continue;
    void* args[] = {const_cast<ForwardStepParams<scalar_t, acc_t>*>(&p), &schedule, &num_steps,
                    &k_chunk, &w_resident, &split_tf32};  // the last only where the kernel takes it
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
cudaError_t prepare_forward_step(int64_t proj, int64_t batch, bool tensor_cores, int mma_k_split,
                                 bool vector_loads, const DeviceLimits& limits, ForwardStepLaunch* launch) {
  const auto kind = forward_tile_kind<scalar_t, acc_t>(tensor_cores, mma_k_split, vector_loads, batch);
  const auto bytes = [&](int chunk) { return kind.smem_bytes(chunk); };
  launch->kernel = kind.step_kernel;
  launch->takes_split_tf32 = kind.takes_split_tf32;
  launch->block = dim3(kind.threads);
  launch->batch_tile = kind.batch_tile;
  launch->k_chunk = widest_k_chunk(proj, kind.granule, limits.shared_memory_per_block / 2,
                                   limits.forced_k_chunk, bytes);
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
cudaError_t launch_backward_recurrence(const BackwardSequenceParams<scalar_t, acc_t>& p, int64_t batch,
                                       bool persistent, const DeviceLimits& limits, cudaStream_t stream) {
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
    const int widest = widest_k_chunk(K, kMmaBackwardGranule, limits.shared_memory_per_block,
                                      limits.forced_k_chunk, bytes);
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
