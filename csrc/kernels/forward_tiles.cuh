// The forward recurrence on the device: the cell-update epilogues, the step tiles (SIMT, small-batch
// split-K SIMT, 4-warp and 8-warp tensor-core), their per-step kernels and the persistent forward
// kernels. The host side that picks and launches them is launch.cuh; what the backward shares with
// them (DeviceScalar, tile geometry, Note [Tensor-core precision]) is cuda_common.cuh. Torch-free.
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
#pragma once

#include <cooperative_groups.h>
#include <mma.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kernels/cuda_common.cuh"
#include "kernels/lstm_step.h"

namespace fused_lstm {
namespace kernels {

// Cell update of (b, j) given the four recurrent products rec[g] = (h_prev · W_hhᵀ)[g*H + j].
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void forward_step_epilogue(const ForwardStepParams<scalar_t, acc_t>& p, int64_t b, int64_t j,
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
__device__ __forceinline__ void forward_step_epilogue_prefetched(const ForwardStepParams<scalar_t, acc_t>& p, int64_t b,
                                                                 int64_t j, const acc_t (&rec)[kNumGates],
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
// (Its geometry, kSimtBatchTile .. kSimtGateCols, is in cuda_common.cuh.)

template <typename acc_t>
inline size_t simt_forward_smem_bytes(int k_chunk) {
  return (size_t(kSimtBatchTile) * (k_chunk + 1) + size_t(k_chunk) * (kSimtGateCols + 1)) * sizeof(acc_t);
}

// Block (hidden_tile, batch_tile) of one forward step. Thread (ty, tx) = (batch row, hidden unit)
// holds the four gate accumulators of its cell. load_w = false reuses the W tile already in
// shared memory (persistent kernel, W resident: then k_chunk >= P).
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void forward_step_simt_tile(const ForwardStepParams<scalar_t, acc_t>& p,
                                                       unsigned hidden_tile, unsigned batch_tile, int k_chunk,
                                                       bool load_w) {
  using S = DeviceScalar<scalar_t>;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const int h_pitch = k_chunk + 1;
  constexpr int w_pitch = kSimtGateCols + 1;           // k-major, so a row of 16 threads reads 16 words
  acc_t* h_tile = reinterpret_cast<acc_t*>(smem_raw);  // [kSimtBatchTile][h_pitch]
  acc_t* w_tile = h_tile + kSimtBatchTile * h_pitch;   // [k_chunk][w_pitch]

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
        w_tile[kk * w_pitch + n] = (j < H && k < P) ? S::to_acc(p.weight_hh[(gate * H + j) * P + k]) : acc_t(0);
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
constexpr int kSmallBatchMax = 8;                        // batches up to this size use this tile (when SIMT)
constexpr int kSplitK = kSimtThreads / kSimtHiddenTile;  // 16 k-slices
constexpr int kSplitKWPitch = kSimtGateCols + 16;
constexpr int kSplitKGranule = kSplitK * 2;

template <typename acc_t>
inline size_t splitk_forward_smem_bytes(int k_chunk) {
  return (size_t(kSmallBatchTile) * k_chunk + size_t(k_chunk) * kSplitKWPitch +
          size_t(kSplitK) * kSmallBatchTile * kSimtGateCols) *
         sizeof(acc_t);
}

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void forward_step_splitk_tile(const ForwardStepParams<scalar_t, acc_t>& p,
                                                         unsigned hidden_tile, unsigned batch_tile, int k_chunk,
                                                         bool load_w) {
  using S = DeviceScalar<scalar_t>;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  acc_t* h_tile = reinterpret_cast<acc_t*>(smem_raw);  // [kSmallBatchTile][k_chunk]
  acc_t* w_tile = h_tile + kSmallBatchTile * k_chunk;  // [k_chunk][kSplitKWPitch]
  acc_t* partial = w_tile + k_chunk * kSplitKWPitch;   // [kSplitK][kSmallBatchTile][64]

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
        w_tile[kk * kSplitKWPitch + n] = (j < H && k < P) ? S::to_acc(p.weight_hh[(gate * H + j) * P + k]) : acc_t(0);
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
// Tensor-core forward tile (half, bfloat16; sm_80+).
// (Its geometry, kMmaTile .. kMmaRecPitch, is in cuda_common.cuh.)

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
__device__ __forceinline__ void mma_load_tile_row(scalar_t* dst, const scalar_t* src_row, int64_t k0, int64_t P,
                                                  bool row_valid, int chunk) {
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
__device__ __forceinline__ void forward_step_mma_tile(const ForwardStepParams<scalar_t, float>& p, unsigned hidden_tile,
                                                      unsigned batch_tile, int k_chunk, bool load_w) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  namespace wmma = nvcuda::wmma;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  // Every sub-array starts on a 32-byte boundary, as wmma loads and stores require:
  // 16 * ld * 2 bytes and 64 * ld * 2 bytes are multiples of 32 because ld is a multiple of 8.
  const int ld = k_chunk + kMmaPad;
  scalar_t* h_tile = reinterpret_cast<scalar_t*>(smem_raw);                // [16][ld]
  scalar_t* w_tile = h_tile + kMmaTile * ld;                               // [64][ld], row = gate*16 + j
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
constexpr int kMma8KSplit = 2;                              // warps per gate
constexpr int kMma8Threads = 32 * kNumGates * kMma8KSplit;  // 256: one cell per thread at the end

template <typename scalar_t, bool kVectorLoads>
__device__ __forceinline__ void forward_step_mma8_tile(const ForwardStepParams<scalar_t, float>& p,
                                                       unsigned hidden_tile, unsigned batch_tile, int k_chunk,
                                                       bool load_w, bool split_tf32) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  namespace wmma = nvcuda::wmma;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  // Every sub-array starts on a 32-byte boundary, as wmma loads and stores require:
  // 16 * ld and 64 * ld elements of 2 or 4 bytes are multiples of 32 bytes (ld is a multiple of 8).
  const int ld = k_chunk + kMmaPad;
  scalar_t* h_tile = reinterpret_cast<scalar_t*>(smem_raw);                // [16][ld]
  scalar_t* w_tile = h_tile + kMmaTile * ld;                               // [64][ld], row = gate*16 + j
  float* rec_tile = reinterpret_cast<float*>(w_tile + kMmaGateCols * ld);  // [kMma8KSplit][16][kMmaRecPitch]
  const int chunks_per_row = k_chunk / kMmaVec<scalar_t>;
  using Precision = typename MmaOperand<scalar_t>::precision;
  constexpr int kK = MmaOperand<scalar_t>::kK;

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int gate = warp % kNumGates;    // the gate this warp computes ...
  const int k_part = warp / kNumGates;  // ... over K tiles k_part, k_part + kMma8KSplit, ...
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
    lstm_forward_persistent(const ForwardStepParams<scalar_t, acc_t> params, const StepRows* schedule,
                            int64_t num_steps, int k_chunk, bool w_resident) {
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

}  // namespace kernels
}  // namespace fused_lstm
