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
//     cell update. The cell state stays fp32 (DESIGN.md, numerics).
// Tiles are zero-filled at the edges, so any B, H, P works; 16-byte loads are used when every
// row of h and W_hh is 16-byte aligned (the glue checks), scalar loads otherwise.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>

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

// ---------------------------------------------------------------------------------------------
// SIMT step kernel (float, double).
constexpr int kSimtBatchTile = 16;
constexpr int kSimtHiddenTile = 16;
constexpr int kSimtKChunk = 32;
constexpr int kSimtThreads = kSimtBatchTile * kSimtHiddenTile;

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kSimtThreads)
    lstm_forward_step_simt(const ForwardStepParams<scalar_t, acc_t> p) {
  using S = DeviceScalar<scalar_t>;
  constexpr int kGateCols = kNumGates * kSimtHiddenTile;
  __shared__ acc_t h_tile[kSimtBatchTile][kSimtKChunk + 1];
  // Transposed (k-major) so that the 16 threads of a row read 16 consecutive words; the +1 pad
  // keeps the transposing stores conflict-free.
  __shared__ acc_t w_tile[kSimtKChunk][kGateCols + 1];

  const int tid = threadIdx.x;
  const int tx = tid % kSimtHiddenTile;  // hidden unit within the tile
  const int ty = tid / kSimtHiddenTile;  // batch row within the tile
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kSimtHiddenTile;
  const int64_t b0 = static_cast<int64_t>(blockIdx.y) * kSimtBatchTile;
  const int64_t H = p.hidden, P = p.proj, rows = p.step.rows;

  acc_t rec[kNumGates] = {acc_t(0), acc_t(0), acc_t(0), acc_t(0)};
  for (int64_t k0 = 0; k0 < P; k0 += kSimtKChunk) {
    for (int e = tid; e < kSimtBatchTile * kSimtKChunk; e += kSimtThreads) {
      const int r = e / kSimtKChunk, kk = e % kSimtKChunk;
      const int64_t b = b0 + r, k = k0 + kk;
      h_tile[r][kk] = (b < rows && k < P) ? S::to_acc(previous_h_row(p, b)[k]) : acc_t(0);
    }
    for (int e = tid; e < kGateCols * kSimtKChunk; e += kSimtThreads) {
      const int n = e / kSimtKChunk, kk = e % kSimtKChunk;
      const int gate = n / kSimtHiddenTile;
      const int64_t j = j0 + n % kSimtHiddenTile, k = k0 + kk;
      w_tile[kk][n] = (j < H && k < P) ? S::to_acc(p.weight_hh[(gate * H + j) * P + k]) : acc_t(0);
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kSimtKChunk; ++kk) {
      const acc_t hv = h_tile[ty][kk];
#pragma unroll
      for (int g = 0; g < kNumGates; ++g) rec[g] += hv * w_tile[kk][g * kSimtHiddenTile + tx];
    }
    __syncthreads();
  }
  const int64_t b = b0 + ty, j = j0 + tx;
  if (b < rows && j < H) forward_step_epilogue(p, b, j, rec);
}

// ---------------------------------------------------------------------------------------------
// Tensor-core step kernel (half, bfloat16).
constexpr int kMmaTile = 16;       // wmma m = n = k = 16
constexpr int kMmaKChunk = 64;     // k columns staged in shared memory per iteration
constexpr int kMmaPad = 8;         // 16 bytes of padding per shared-memory row (bank spread)
constexpr int kMmaThreads = 32 * kNumGates;  // one warp per gate

template <typename scalar_t, bool kVectorLoads>
__device__ __forceinline__ void mma_load_tile_row(scalar_t* dst, const scalar_t* src_row, int64_t k0,
                                                  int64_t P, bool row_valid, int chunk) {
  // Loads 8 consecutive k values (one 16-byte chunk) of one row, zero-filling past P or rows.
  constexpr int kVec = 8;
  const int64_t k = k0 + static_cast<int64_t>(chunk) * kVec;
  if (kVectorLoads) {
    uint4 v = make_uint4(0u, 0u, 0u, 0u);  // all-zero bits are +0.0 in half and bfloat16
    if (row_valid && k < P) v = *reinterpret_cast<const uint4*>(src_row + k);
    *reinterpret_cast<uint4*>(dst + chunk * kVec) = v;
  } else {
    const scalar_t zero = DeviceScalar<scalar_t>::from_acc(0.0f);
#pragma unroll
    for (int u = 0; u < kVec; ++u) dst[chunk * kVec + u] = (row_valid && k + u < P) ? src_row[k + u] : zero;
  }
}

template <typename scalar_t, bool kVectorLoads>
__global__ void __launch_bounds__(kMmaThreads)
    lstm_forward_step_mma(const ForwardStepParams<scalar_t, float> p) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  namespace wmma = nvcuda::wmma;
  constexpr int kLd = kMmaKChunk + kMmaPad;
  constexpr int kGateCols = kNumGates * kMmaTile;
  constexpr int kChunksPerRow = kMmaKChunk / 8;
  __shared__ __align__(128) scalar_t h_tile[kMmaTile][kLd];
  __shared__ __align__(128) scalar_t w_tile[kGateCols][kLd];  // row n = gate * 16 + hidden unit
  __shared__ __align__(128) float rec_tile[kMmaTile][kGateCols + 4];

  const int tid = threadIdx.x;
  const int warp = tid / 32;  // == the gate this warp computes
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kMmaTile;
  const int64_t b0 = static_cast<int64_t>(blockIdx.y) * kMmaTile;
  const int64_t H = p.hidden, P = p.proj, rows = p.step.rows;

  wmma::fragment<wmma::accumulator, kMmaTile, kMmaTile, kMmaTile, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  for (int64_t k0 = 0; k0 < P; k0 += kMmaKChunk) {
    for (int e = tid; e < kMmaTile * kChunksPerRow; e += kMmaThreads) {
      const int r = e / kChunksPerRow;
      const int64_t b = b0 + r;
      const bool valid = b < rows;
      const scalar_t* src = valid ? previous_h_row(p, b) : p.hx;
      mma_load_tile_row<scalar_t, kVectorLoads>(&h_tile[r][0], src, k0, P, valid, e % kChunksPerRow);
    }
    for (int e = tid; e < kGateCols * kChunksPerRow; e += kMmaThreads) {
      const int n = e / kChunksPerRow;
      const int64_t j = j0 + n % kMmaTile;
      const bool valid = j < H;
      const scalar_t* src = p.weight_hh + (valid ? ((n / kMmaTile) * H + j) * P : 0);
      mma_load_tile_row<scalar_t, kVectorLoads>(&w_tile[n][0], src, k0, P, valid, e % kChunksPerRow);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kMmaKChunk; kk += kMmaTile) {
      wmma::fragment<wmma::matrix_a, kMmaTile, kMmaTile, kMmaTile, scalar_t, wmma::row_major> a;
      wmma::fragment<wmma::matrix_b, kMmaTile, kMmaTile, kMmaTile, scalar_t, wmma::col_major> w;
      wmma::load_matrix_sync(a, &h_tile[0][kk], kLd);
      // B[k][n] = W_hh[gate*H + j0 + n][k0 + k]: column-major over the staged rows.
      wmma::load_matrix_sync(w, &w_tile[warp * kMmaTile][kk], kLd);
      wmma::mma_sync(acc, a, w, acc);
    }
    __syncthreads();
  }
  wmma::store_matrix_sync(&rec_tile[0][warp * kMmaTile], acc, kGateCols + 4, wmma::mem_row_major);
  __syncthreads();
  for (int e = tid; e < kMmaTile * kMmaTile; e += kMmaThreads) {
    const int r = e / kMmaTile, jj = e % kMmaTile;
    const int64_t b = b0 + r, j = j0 + jj;
    if (b < rows && j < H) {
      const float rec[kNumGates] = {rec_tile[r][jj], rec_tile[r][kMmaTile + jj],
                                    rec_tile[r][2 * kMmaTile + jj], rec_tile[r][3 * kMmaTile + jj]};
      forward_step_epilogue(p, b, j, rec);
    }
  }
#else
  __trap();  // the host only launches this kernel on sm_80 or newer
#endif
}

// ---------------------------------------------------------------------------------------------
// Backward pointwise kernel: one thread per (b, j) cell of the step.
constexpr int kPointwiseThreads = 256;

template <typename acc_t>
__global__ void __launch_bounds__(kPointwiseThreads)
    lstm_backward_pointwise(const BackwardPointwiseParams<acc_t> p) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kPointwiseThreads + threadIdx.x;
  if (idx < p.step.rows * p.hidden) backward_pointwise_element(p, idx / p.hidden, idx % p.hidden);
}

// ---------------------------------------------------------------------------------------------
// Launchers (host). They return the launch error; the caller checks it.
inline unsigned ceil_div(int64_t a, int64_t b) { return static_cast<unsigned>((a + b - 1) / b); }

template <typename scalar_t, typename acc_t>
cudaError_t launch_forward_step_simt(const ForwardStepParams<scalar_t, acc_t>& p, cudaStream_t stream) {
  const dim3 grid(ceil_div(p.hidden, kSimtHiddenTile), ceil_div(p.step.rows, kSimtBatchTile));
  lstm_forward_step_simt<scalar_t, acc_t><<<grid, kSimtThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t launch_forward_step_mma(const ForwardStepParams<scalar_t, float>& p, bool vector_loads,
                                    cudaStream_t stream) {
  const dim3 grid(ceil_div(p.hidden, kMmaTile), ceil_div(p.step.rows, kMmaTile));
  if (vector_loads) {
    lstm_forward_step_mma<scalar_t, true><<<grid, kMmaThreads, 0, stream>>>(p);
  } else {
    lstm_forward_step_mma<scalar_t, false><<<grid, kMmaThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

template <typename acc_t>
cudaError_t launch_backward_pointwise(const BackwardPointwiseParams<acc_t>& p, cudaStream_t stream) {
  lstm_backward_pointwise<acc_t>
      <<<ceil_div(p.step.rows * p.hidden, kPointwiseThreads), kPointwiseThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace kernels
}  // namespace fused_lstm
