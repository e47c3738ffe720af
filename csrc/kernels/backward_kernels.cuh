// The backward recurrence on the device: the pointwise kernel of the generic per-step loop, the
// fused SIMT backward step (per-step and persistent kernels) and the tensor-core persistent backward
// (Note [Tensor-core backward recurrence]). The host side that launches them is launch.cuh; what
// they share with the forward (DeviceScalar, tile geometry, Note [Tensor-core precision]) is
// cuda_common.cuh. Torch-free.
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

// ---------------------------------------------------------------------------------------------
// Backward pointwise kernel (generic per-step loop, used with a projection): one thread per cell.
constexpr int kPointwiseThreads = 256;

template <typename acc_t>
__global__ void __launch_bounds__(kPointwiseThreads) lstm_backward_pointwise(const BackwardPointwiseParams<acc_t> p) {
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
                                                   const StepRows& step, const StepRows& next, unsigned hidden_tile,
                                                   unsigned batch_tile, int k_chunk) {
  using S = DeviceScalar<scalar_t>;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const int d_pitch = k_chunk + 1;
  constexpr int w_pitch = kBackwardTile + 1;
  acc_t* dgates_tile = reinterpret_cast<acc_t*>(smem_raw);  // [16][d_pitch]
  acc_t* w_tile = dgates_tile + kBackwardTile * d_pitch;    // [k_chunk][w_pitch]
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
                                                       const StepRows& step, const StepRows& next, unsigned hidden_tile,
                                                       unsigned batch_tile, int k_chunk, const scalar_t* w_slice,
                                                       int64_t k_round, scalar_t* d_hi, scalar_t* d_lo, float* partial,
                                                       bool split_tf32) {
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
  wmma::store_matrix_sync(mine + kMmaTile * kMmaBackwardRedPitch, acc_lo, kMmaBackwardRedPitch, wmma::mem_row_major);
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
  scalar_t* w_slice = reinterpret_cast<scalar_t*>(smem_raw);  // [16][ld_w]: column j0 + n
  scalar_t* d_hi = w_slice + kMmaTile * ld_w;                 // [16][k_chunk + 8]
  scalar_t* d_lo = d_hi + kMmaTile * (k_chunk + kMmaPad);     // [16][k_chunk + 8]
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
      backward_step_mma_tile(p, step, step_after(p.schedule, k, p.num_steps), blockIdx.x, blockIdx.y, k_chunk, w_slice,
                             k_round, d_hi, d_lo, partial, /*split_tf32=*/false);
    }
    grid.sync();
  }
}

// float as TF32 or 3xTF32 (Note [Tensor-core precision]); a template only so that the header can
// define it.
template <typename scalar_t>
__global__ void __launch_bounds__(kMmaBackwardThreads, 1)
    lstm_backward_persistent_mma_tf32(const BackwardSequenceParams<scalar_t, float> p, int k_chunk, bool split_tf32) {
  static_assert(std::is_same_v<scalar_t, float>, "float only: half types take lstm_backward_persistent_mma");
  namespace cg = cooperative_groups;
  cg::grid_group grid = cg::this_grid();
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const int64_t H = p.cell.hidden, K = kNumGates * H;
  const int64_t k_round = round_up(K, kMmaBackwardGranule);
  const int ld_w = static_cast<int>(k_round) + kMmaPad;
  scalar_t* w_slice = reinterpret_cast<scalar_t*>(smem_raw);  // [16][ld_w]: column j0 + n
  scalar_t* d_hi = w_slice + kMmaTile * ld_w;                 // [16][k_chunk + 8]
  float* partial = d_hi + kMmaTile * (k_chunk + kMmaPad);     // one staged copy: fp32 dgates
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
      backward_step_mma_tile(p, step, step_after(p.schedule, k, p.num_steps), blockIdx.x, blockIdx.y, k_chunk, w_slice,
                             k_round, d_hi, /*d_lo=*/static_cast<scalar_t*>(nullptr), partial, split_tf32);
    }
    grid.sync();
  }
}

}  // namespace kernels
}  // namespace fused_lstm
