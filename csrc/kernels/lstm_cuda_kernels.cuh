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
//
// Note [Persistent sequence kernels]
// Launching one kernel per step costs the host ~10-15 us a launch on the GPU machines measured,
// more than a step's work at common sizes. The persistent kernels run the same tile functions
// for every step inside ONE cooperative launch, with a grid-wide barrier (cooperative_groups
// grid.sync(), which also orders the h / dgates writes of one step before the next step's reads)
// between steps. They need every block of the grid resident at once: the host checks occupancy
// and falls back to the per-step kernels otherwise. W_hh is re-read from L2 each step (keeping
// it in shared memory/registers is the persistent-kernel issue's next step).
#pragma once

#include <cooperative_groups.h>

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
__device__ __forceinline__ void forward_step_simt_tile(const ForwardStepParams<scalar_t, acc_t>& p,
                                                       unsigned hidden_tile, unsigned batch_tile) {
  using S = DeviceScalar<scalar_t>;
  constexpr int kGateCols = kNumGates * kSimtHiddenTile;
  __shared__ acc_t h_tile[kSimtBatchTile][kSimtKChunk + 1];
  // Transposed (k-major) so that the 16 threads of a row read 16 consecutive words; the +1 pad
  // keeps the transposing stores conflict-free.
  __shared__ acc_t w_tile[kSimtKChunk][kGateCols + 1];

  const int tid = threadIdx.x;
  const int tx = tid % kSimtHiddenTile;  // hidden unit within the tile
  const int ty = tid / kSimtHiddenTile;  // batch row within the tile
  const int64_t j0 = static_cast<int64_t>(hidden_tile) * kSimtHiddenTile;
  const int64_t b0 = static_cast<int64_t>(batch_tile) * kSimtBatchTile;
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

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kSimtThreads)
    lstm_forward_step_simt(const ForwardStepParams<scalar_t, acc_t> p) {
  forward_step_simt_tile(p, blockIdx.x, blockIdx.y);
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
__device__ __forceinline__ void forward_step_mma_tile(const ForwardStepParams<scalar_t, float>& p,
                                                      unsigned hidden_tile, unsigned batch_tile) {
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
  const int64_t j0 = static_cast<int64_t>(hidden_tile) * kMmaTile;
  const int64_t b0 = static_cast<int64_t>(batch_tile) * kMmaTile;
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

template <typename scalar_t, bool kVectorLoads>
__global__ void __launch_bounds__(kMmaThreads)
    lstm_forward_step_mma(const ForwardStepParams<scalar_t, float> p) {
  forward_step_mma_tile<scalar_t, kVectorLoads>(p, blockIdx.x, blockIdx.y);
}

// ---------------------------------------------------------------------------------------------
// Persistent forward: every step of the sequence in one cooperative launch.
// kTile: 0 = SIMT, 1 = tensor cores with scalar loads, 2 = tensor cores with 16-byte loads.
template <typename scalar_t, typename acc_t, int kTile>
__device__ __forceinline__ void forward_step_tile(const ForwardStepParams<scalar_t, acc_t>& p) {
  if constexpr (kTile == 0) {
    forward_step_simt_tile(p, blockIdx.x, blockIdx.y);
  } else {
    forward_step_mma_tile<scalar_t, kTile == 2>(p, blockIdx.x, blockIdx.y);
  }
}

template <typename scalar_t, typename acc_t, int kTile>
__global__ void __launch_bounds__(kTile == 0 ? kSimtThreads : kMmaThreads)
    lstm_forward_persistent(const ForwardStepParams<scalar_t, acc_t> params,
                            const StepRows* schedule, int64_t num_steps) {
  namespace cg = cooperative_groups;
  cg::grid_group grid = cg::this_grid();
  constexpr int kBatchTile = kTile == 0 ? kSimtBatchTile : kMmaTile;
  ForwardStepParams<scalar_t, acc_t> p = params;
  for (int64_t s = 0; s < num_steps; ++s) {
    p.step = schedule[s];
    // Block-uniform: a block whose batch rows are all inactive at this step only waits.
    if (static_cast<int64_t>(blockIdx.y) * kBatchTile < p.step.rows) {
      forward_step_tile<scalar_t, acc_t, kTile>(p);
    }
    grid.sync();
  }
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
// Fused backward step (no projection): carry GEMM dgates[next] · W_hh for the block's (b, j)
// tile, then backward_cell. SIMT in the opmath type: dgates are fp32 (fp64), so the carry keeps
// full precision whatever the storage dtype of W_hh. Same tile shape as the SIMT forward.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void backward_step_tile(const BackwardSequenceParams<scalar_t, acc_t>& p,
                                                   const StepRows& step, const StepRows& next,
                                                   unsigned hidden_tile, unsigned batch_tile) {
  using S = DeviceScalar<scalar_t>;
  constexpr int kTile = kSimtHiddenTile;  // == kSimtBatchTile
  __shared__ acc_t dgates_tile[kSimtBatchTile][kSimtKChunk + 1];
  __shared__ acc_t w_tile[kSimtKChunk][kTile + 1];
  const int tid = threadIdx.x;
  const int tx = tid % kTile, ty = tid / kTile;
  const int64_t j0 = static_cast<int64_t>(hidden_tile) * kTile;
  const int64_t b0 = static_cast<int64_t>(batch_tile) * kSimtBatchTile;
  const int64_t H = p.cell.hidden, K = kNumGates * H;

  // Four partial sums break the FMA dependency chain.
  acc_t carry[4] = {acc_t(0), acc_t(0), acc_t(0), acc_t(0)};
  if (b0 < next.rows) {  // block-uniform
    for (int64_t k0 = 0; k0 < K; k0 += kSimtKChunk) {
      for (int e = tid; e < kSimtBatchTile * kSimtKChunk; e += kSimtThreads) {
        const int r = e / kSimtKChunk, kk = e % kSimtKChunk;
        const int64_t b = b0 + r, k = k0 + kk;
        dgates_tile[r][kk] = (b < next.rows && k < K) ? p.cell.dgates[(next.row_offset + b) * K + k] : acc_t(0);
      }
      for (int e = tid; e < kSimtKChunk * kTile; e += kSimtThreads) {
        const int kk = e / kTile, jj = e % kTile;
        const int64_t k = k0 + kk, j = j0 + jj;
        w_tile[kk][jj] = (k < K && j < H) ? S::to_acc(p.weight_hh[k * H + j]) : acc_t(0);
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kSimtKChunk; ++kk) carry[kk % 4] += dgates_tile[ty][kk] * w_tile[kk][tx];
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
    lstm_backward_step(const BackwardSequenceParams<scalar_t, acc_t> p, int64_t k) {
  const StepRows step = p.schedule[k];
  if (static_cast<int64_t>(blockIdx.y) * kSimtBatchTile < step.rows) {
    backward_step_tile(p, step, step_after(p.schedule, k, p.num_steps), blockIdx.x, blockIdx.y);
  }
}

// The whole reverse recurrence in one cooperative launch (Note [Persistent sequence kernels]).
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kSimtThreads)
    lstm_backward_persistent(const BackwardSequenceParams<scalar_t, acc_t> p) {
  namespace cg = cooperative_groups;
  cg::grid_group grid = cg::this_grid();
  for (int64_t k = p.num_steps - 1; k >= 0; --k) {
    const StepRows step = p.schedule[k];
    if (static_cast<int64_t>(blockIdx.y) * kSimtBatchTile < step.rows) {
      backward_step_tile(p, step, step_after(p.schedule, k, p.num_steps), blockIdx.x, blockIdx.y);
    }
    grid.sync();
  }
}

// ---------------------------------------------------------------------------------------------
// Launchers (host). They return the launch error; the caller checks it.
inline unsigned ceil_div(int64_t a, int64_t b) { return static_cast<unsigned>((a + b - 1) / b); }

// Grid of the per-step and persistent kernels for a batch of `rows` (the largest step).
inline dim3 simt_grid(int64_t hidden, int64_t rows) {
  return dim3(ceil_div(hidden, kSimtHiddenTile), ceil_div(rows, kSimtBatchTile));
}
inline dim3 mma_grid(int64_t hidden, int64_t rows) {
  return dim3(ceil_div(hidden, kMmaTile), ceil_div(rows, kMmaTile));
}


template <typename scalar_t, typename acc_t>
cudaError_t launch_forward_step_simt(const ForwardStepParams<scalar_t, acc_t>& p, cudaStream_t stream) {
  const dim3 grid = simt_grid(p.hidden, p.step.rows);
  lstm_forward_step_simt<scalar_t, acc_t><<<grid, kSimtThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t launch_forward_step_mma(const ForwardStepParams<scalar_t, float>& p, bool vector_loads,
                                    cudaStream_t stream) {
  const dim3 grid = mma_grid(p.hidden, p.step.rows);
  if (vector_loads) {
    lstm_forward_step_mma<scalar_t, true><<<grid, kMmaThreads, 0, stream>>>(p);
  } else {
    lstm_forward_step_mma<scalar_t, false><<<grid, kMmaThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

// Whether all blocks of `grid` fit on the device at once (a cooperative launch requires it).
template <typename Kernel>
bool grid_fits_resident(Kernel kernel, dim3 grid, int threads, int multiprocessors) {
  int per_multiprocessor = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_multiprocessor, kernel, threads, 0) != cudaSuccess) {
    (void)cudaGetLastError();  // clear it: not fitting is an answer, not an error
    return false;
  }
  return static_cast<int64_t>(per_multiprocessor) * multiprocessors >=
         static_cast<int64_t>(grid.x) * grid.y * grid.z;
}

// Persistent forward over the whole schedule. Returns cudaErrorCooperativeLaunchTooLarge (and
// launches nothing) when the grid cannot be resident; the caller then runs the step kernels.
template <typename scalar_t, typename acc_t>
cudaError_t launch_forward_persistent(const ForwardStepParams<scalar_t, acc_t>& p,
                                      const StepRows* schedule, int64_t num_steps, int64_t batch,
                                      bool tensor_cores, bool vector_loads, int multiprocessors,
                                      cudaStream_t stream) {
  void* kernel = nullptr;
  dim3 grid;
  int threads = 0;
  if constexpr (std::is_same_v<scalar_t, __half> || std::is_same_v<scalar_t, __nv_bfloat16>) {
    if (tensor_cores) {
      kernel = vector_loads ? reinterpret_cast<void*>(&lstm_forward_persistent<scalar_t, acc_t, 2>)
                            : reinterpret_cast<void*>(&lstm_forward_persistent<scalar_t, acc_t, 1>);
      grid = mma_grid(p.hidden, batch);
      threads = kMmaThreads;
    }
  }
  if (kernel == nullptr) {
    kernel = reinterpret_cast<void*>(&lstm_forward_persistent<scalar_t, acc_t, 0>);
    grid = simt_grid(p.hidden, batch);
    threads = kSimtThreads;
  }
  if (!grid_fits_resident(kernel, grid, threads, multiprocessors)) return cudaErrorCooperativeLaunchTooLarge;
  void* args[] = {const_cast<ForwardStepParams<scalar_t, acc_t>*>(&p), &schedule, &num_steps};
  return cudaLaunchCooperativeKernel(kernel, grid, dim3(threads), args, 0, stream);
}

// Fused backward recurrence: persistent when `persistent` and the grid fits, else one launch per
// step. Returns the first launch error.
template <typename scalar_t, typename acc_t>
cudaError_t launch_backward_recurrence(const BackwardSequenceParams<scalar_t, acc_t>& p, int64_t batch,
                                       bool persistent, int multiprocessors, cudaStream_t stream) {
  const dim3 grid = simt_grid(p.cell.hidden, batch);
  void* kernel = reinterpret_cast<void*>(&lstm_backward_persistent<scalar_t, acc_t>);
  if (persistent && grid_fits_resident(kernel, grid, kSimtThreads, multiprocessors)) {
    void* args[] = {const_cast<BackwardSequenceParams<scalar_t, acc_t>*>(&p)};
    return cudaLaunchCooperativeKernel(kernel, grid, dim3(kSimtThreads), args, 0, stream);
  }
  for (int64_t k = p.num_steps - 1; k >= 0; --k) {
    lstm_backward_step<scalar_t, acc_t><<<grid, kSimtThreads, 0, stream>>>(p, k);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

template <typename acc_t>
cudaError_t launch_backward_pointwise(const BackwardPointwiseParams<acc_t>& p, cudaStream_t stream) {
  lstm_backward_pointwise<acc_t>
      <<<ceil_div(p.step.rows * p.hidden, kPointwiseThreads), kPointwiseThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace kernels
}  // namespace fused_lstm
