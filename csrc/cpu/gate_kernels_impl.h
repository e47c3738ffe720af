// The CPU gate passes. Included once per instruction set by gate_kernels_{default,avx2,avx512}.cpp
// after they define CPU_CAPABILITY (Note [CPU instruction sets]); no include guard on purpose.
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <type_traits>

#include "cpu/gate_kernels.h"
#include "kernels/lstm_math.h"

namespace fused_lstm {
namespace cpu {
namespace CPU_CAPABILITY {  // DEFAULT, AVX2 or AVX512: one set of symbols per build

// exp for the gate passes, float. On AVX-512: n = round(x log2 e), r = x - n ln 2 in two parts
// (Cody-Waite), e^r by a degree-5 polynomial (Chebyshev fit on [-ln2/2, ln2/2]: 1.0e-7 relative),
// and 2^n applied by vscalefps, which also gives inf / 0 for out-of-range n: ~12 instructions
// against Sleef expf's call, and a third less gate-pass time than ATen's exp_u20 (measured
// 2.0 -> 1.34 ns per cell of the fp32 forward pass, one thread). Within 2.3e-7 relative of exp
// on [-87, 88]; x is clamped to +-88.8 first (so +-inf give inf / ~0, not inf - inf) with NaN kept
// (min/max return their second operand when one is NaN). Elsewhere ATen's exp_u20 (within 20
// ulp) with NaN put back, which it clamps away.
inline at::vec::Vectorized<float> gate_exp_float(at::vec::Vectorized<float> x) {
#if defined(CPU_CAPABILITY_AVX512)
  const __m512 clamped = _mm512_max_ps(_mm512_set1_ps(-88.8f), _mm512_min_ps(_mm512_set1_ps(88.8f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(clamped, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), clamped);  // ln 2, high part
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);           // ln 2, low part
  __m512 p = _mm512_set1_ps(0.008369148708879948f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.041917506605386734f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.16666504740715027f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.49998870491981506f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0000001192092896f));
  return _mm512_scalef_ps(p, n);
#else
  using Vec = at::vec::Vectorized<float>;
  return Vec::blendv(x.exp_u20(), x, x.isnan());
#endif
}

// double: Sleef's exp (gradcheck runs in double).
template <typename acc_t>
inline at::vec::Vectorized<acc_t> gate_exp(at::vec::Vectorized<acc_t> x) {
  if constexpr (std::is_same_v<acc_t, float>) {
    return gate_exp_float(x);
  } else {
    return x.exp();
  }
}

// 1 / (1 + exp(-x)).
template <typename acc_t>
inline at::vec::Vectorized<acc_t> gate_sigmoid(at::vec::Vectorized<acc_t> x) {
  using Vec = at::vec::Vectorized<acc_t>;
  const Vec one(acc_t(1));
  return one / (one + gate_exp<acc_t>(x.neg()));
}

// tanh for the gate passes. float: 2 / (1 + exp(-2x)) - 1, one exp and one division like the
// sigmoids -- Sleef's tanhf was the gate pass's most expensive call (11% of T=100 B=16 H=128
// inference, against 3% for all three sigmoids' exps); the absolute error stays within a few
// float ulps of 1 (relative error grows only where |tanh x| is itself below ~1e-4). Saturates to
// +-1 and propagates NaN. double keeps Sleef's tanh (gradcheck runs in double).
template <typename acc_t>
inline at::vec::Vectorized<acc_t> gate_tanh(at::vec::Vectorized<acc_t> x) {
  using Vec = at::vec::Vectorized<acc_t>;
  if constexpr (std::is_same_v<acc_t, float>) {
    const Vec one(1.0f), two(2.0f);
    return two / (one + gate_exp<float>(x * Vec(-2.0f))) - one;
  } else {
    return x.tanh();
  }
}

// One vector of acc_t from `count` = Vectorized<acc_t>::size() elements of T (acc_t, or bf16
// widened to float), and back (bf16: rounded to nearest even, as c10::BFloat16 does).
template <typename acc_t, typename T>
inline at::vec::Vectorized<acc_t> load_as_acc(const T* p) {
  if constexpr (std::is_same_v<T, acc_t>) {
    return at::vec::Vectorized<acc_t>::loadu(p);
  } else {
    static_assert(std::is_same_v<T, c10::BFloat16> && std::is_same_v<acc_t, float>);
    at::vec::Vectorized<float> v;
    at::vec::load_to_float<c10::BFloat16>(p, v);
    return v;
  }
}

template <typename acc_t, typename T>
inline void store_from_acc(at::vec::Vectorized<acc_t> v, T* p) {
  if constexpr (std::is_same_v<T, acc_t>) {
    v.store(p);
  } else {
    static_assert(std::is_same_v<T, c10::BFloat16> && std::is_same_v<acc_t, float>);
    at::vec::convert_from_float<c10::BFloat16>(v, v).store(p, at::vec::Vectorized<float>::size());
  }
}

// io_t: the type of pre and h_out -- acc_t, or bf16 for bf16 layers whose products run in bf16
// (ForwardCellsBf16Fn); all arithmetic in acc_t.
template <typename acc_t, typename io_t = acc_t>
void forward_cells(const io_t* pre, const acc_t* rec, int64_t rec_gate_stride, const acc_t* bias, acc_t* c_state,
                   io_t* h_out, acc_t* gates_out, acc_t* cells_out, int64_t H, int64_t j_begin, int64_t j_end) {
  using Vec = at::vec::Vectorized<acc_t>;
  int64_t j = j_begin;
  for (; j + Vec::size() <= j_end; j += Vec::size()) {
    auto gate_input = [&](int64_t gate) {
      const int64_t offset = gate * H + j;
      return load_as_acc<acc_t>(pre + offset) + Vec::loadu(rec + gate * rec_gate_stride + (j - j_begin)) +
             Vec::loadu(bias + offset);
    };
    const Vec i = gate_sigmoid<acc_t>(gate_input(0));
    const Vec f = gate_sigmoid<acc_t>(gate_input(1));
    const Vec g = gate_tanh<acc_t>(gate_input(2));
    const Vec o = gate_sigmoid<acc_t>(gate_input(3));
    const Vec c = f * Vec::loadu(c_state + j) + i * g;
    c.store(c_state + j);
    store_from_acc<acc_t>(o * gate_tanh<acc_t>(c), h_out + j);
    if (gates_out != nullptr) {
      i.store(gates_out + j);
      f.store(gates_out + H + j);
      g.store(gates_out + 2 * H + j);
      o.store(gates_out + 3 * H + j);
      c.store(cells_out + j);
    }
  }
  for (; j < j_end; ++j) {
    acc_t c, h;
    auto gate_input = [&](int64_t gate) {
      return static_cast<acc_t>(pre[gate * H + j]) + rec[gate * rec_gate_stride + (j - j_begin)] + bias[gate * H + j];
    };
    const auto a =
        kernels::cell_forward(gate_input(0), gate_input(1), gate_input(2), gate_input(3), c_state[j], &c, &h);
    c_state[j] = c;
    h_out[j] = static_cast<io_t>(h);
    if (gates_out != nullptr) {
      gates_out[j] = a.i;
      gates_out[H + j] = a.f;
      gates_out[2 * H + j] = a.g;
      gates_out[3 * H + j] = a.o;
      cells_out[j] = c;
    }
  }
}

// Vectorised kernels::cell_backward (same formulas, same order of operations).
template <typename acc_t>
void backward_cells(const acc_t* gates, const acc_t* c_row, const acc_t* c_prev_row, const acc_t* dh_row,
                    acc_t* dc_carry, acc_t* dgates, int64_t H, int64_t j_begin, int64_t j_end) {
  using Vec = at::vec::Vectorized<acc_t>;
  const Vec one(acc_t(1));
  int64_t j = j_begin;
  for (; j + Vec::size() <= j_end; j += Vec::size()) {
    const Vec i = Vec::loadu(gates + j), f = Vec::loadu(gates + H + j);
    const Vec g = Vec::loadu(gates + 2 * H + j), o = Vec::loadu(gates + 3 * H + j);
    const Vec tanh_c = gate_tanh<acc_t>(Vec::loadu(c_row + j));
    const Vec dh = Vec::loadu(dh_row + j);
    const Vec dc = Vec::loadu(dc_carry + j) + dh * o * (one - tanh_c * tanh_c);
    (dc * g * i * (one - i)).store(dgates + j);
    (dc * Vec::loadu(c_prev_row + j) * f * (one - f)).store(dgates + H + j);
    (dc * i * (one - g * g)).store(dgates + 2 * H + j);
    (dh * tanh_c * o * (one - o)).store(dgates + 3 * H + j);
    (dc * f).store(dc_carry + j);
  }
  for (; j < j_end; ++j) {
    const kernels::Gates<acc_t> a{gates[j], gates[H + j], gates[2 * H + j], gates[3 * H + j]};
    acc_t d_pre[kernels::kNumGates];
    dc_carry[j] = kernels::cell_backward(a, c_row[j], c_prev_row[j], dh_row[j], dc_carry[j], d_pre);
    dgates[j] = d_pre[0];
    dgates[H + j] = d_pre[1];
    dgates[2 * H + j] = d_pre[2];
    dgates[3 * H + j] = d_pre[3];
  }
}

inline void backward_cells_bf16_out(const float* gates, const float* c_row, const float* c_prev_row,
                                    const float* dh_row, float* dc_carry, float* dgates, c10::BFloat16* dgates_rounded,
                                    int64_t H, int64_t j_begin, int64_t j_end) {
  backward_cells<float>(gates, c_row, c_prev_row, dh_row, dc_carry, dgates, H, j_begin, j_end);
  for (int64_t gate = 0; gate < 4; ++gate) {  // still in L1
    const int64_t offset = gate * H + j_begin;
    at::vec::convert(dgates + offset, dgates_rounded + offset, j_end - j_begin);
  }
}

#if defined(CPU_CAPABILITY_AVX512)
// 16 accumulators (outputs n .. n + 15) -> one vector of their 16 horizontal sums, in order:
// pairs interleaved and added within 128-bit lanes (32-bit, then 64-bit interleaves), then the
// four 128-bit lanes combined by two rounds of lane shuffles. 45 instructions for 16 sums, where
// one reduction each would take ~8.
inline __m512 sum_each_of_16(const __m512 (&acc)[16]) {
  __m512 pairs[8], quads[4];
  for (int i = 0; i < 8; ++i) {
    pairs[i] =
        _mm512_add_ps(_mm512_unpacklo_ps(acc[2 * i], acc[2 * i + 1]), _mm512_unpackhi_ps(acc[2 * i], acc[2 * i + 1]));
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(pairs[2 * i]), b = _mm512_castps_pd(pairs[2 * i + 1]);
    quads[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  // quads[i], 128-bit lane L: partial sums (over lane L) of outputs 4i .. 4i + 3.
  const __m512 low = _mm512_add_ps(_mm512_shuffle_f32x4(quads[0], quads[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(quads[0], quads[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 high = _mm512_add_ps(_mm512_shuffle_f32x4(quads[2], quads[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                    _mm512_shuffle_f32x4(quads[2], quads[3], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(low, high, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(low, high, _MM_SHUFFLE(3, 1, 3, 1)));
}

// Sixteen outputs at a time, one row of x at a time: the weight's 16 rows (16 x k floats) stay in
// L1 while every row of x passes over them; the k tail (k % 16) in scalar code.
inline void row_dot_avx512(const float* x, int64_t ldx, int64_t rows, const float* w, int64_t ldw, int64_t k, float* y,
                           int64_t ldy, int64_t n_begin, int64_t n_end) {
  const int64_t k_vec = k - k % 16;
  for (int64_t n0 = n_begin; n0 < n_end; n0 += 16) {
    const int64_t count = std::min<int64_t>(16, n_end - n0);
    const float* w_tile = w + n0 * ldw;
    for (int64_t r = 0; r < rows; ++r) {
      const float* x_row = x + r * ldx;
      __m512 acc[16];
      for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_ps();
      for (int64_t kk = 0; kk < k_vec; kk += 16) {
        const __m512 xv = _mm512_loadu_ps(x_row + kk);
        for (int i = 0; i < 16; ++i) {  // rows past `count` repeat the last valid one (unused)
          acc[i] = _mm512_fmadd_ps(_mm512_loadu_ps(w_tile + std::min<int64_t>(i, count - 1) * ldw + kk), xv, acc[i]);
        }
      }
      alignas(64) float sums[16];
      _mm512_store_ps(sums, sum_each_of_16(acc));
      for (int64_t i = 0; i < count; ++i) {
        float sum = sums[i];
        for (int64_t kk = k_vec; kk < k; ++kk) sum += x_row[kk] * w_tile[i * ldw + kk];
        y[r * ldy + n0 + i] = sum;
      }
    }
  }
}
#endif

// RowDotFn (gate_kernels.h). AVX-512 float: row_dot_avx512. Otherwise, per group of kRowDotRows
// rows of x and each weight row n: one vector accumulator per row over k, the weight row's vector
// loaded once for all of them, then a horizontal sum; the k tail (k % Vec::size()) in scalar code.
template <typename acc_t>
void row_dot(const acc_t* x, int64_t ldx, int64_t rows, const acc_t* w, int64_t ldw, int64_t k, acc_t* y, int64_t ldy,
             int64_t n_begin, int64_t n_end) {
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<acc_t, float>) {
    row_dot_avx512(x, ldx, rows, w, ldw, k, y, ldy, n_begin, n_end);
    return;
  }
#endif
  using Vec = at::vec::Vectorized<acc_t>;
  constexpr int64_t kWidth = Vec::size();
  const int64_t k_vec = k - k % kWidth;
  for (int64_t r0 = 0; r0 < rows; r0 += kRowDotRows) {
    const int64_t group = std::min<int64_t>(kRowDotRows, rows - r0);
    for (int64_t n = n_begin; n < n_end; ++n) {
      const acc_t* w_row = w + n * ldw;
      Vec acc[kRowDotRows] = {Vec(acc_t(0)), Vec(acc_t(0)), Vec(acc_t(0)), Vec(acc_t(0))};
      for (int64_t kk = 0; kk < k_vec; kk += kWidth) {
        const Vec wv = Vec::loadu(w_row + kk);
        for (int64_t r = 0; r < group; ++r) {
          acc[r] = at::vec::fmadd(Vec::loadu(x + (r0 + r) * ldx + kk), wv, acc[r]);
        }
      }
      for (int64_t r = 0; r < group; ++r) {
        acc_t sum = at::vec::vec_reduce_all<acc_t>([](Vec& a, Vec& b) { return a + b; }, acc[r]);
        const acc_t* x_row = x + (r0 + r) * ldx;
        for (int64_t kk = k_vec; kk < k; ++kk) sum += x_row[kk] * w_row[kk];
        y[(r0 + r) * ldy + n] = sum;
      }
    }
  }
}

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
// out[c, r] = a[r, c] for an 8 x 8 tile: eight row loads, three rounds of shuffles, eight row
// stores (the usual unpack / shuffle / lane-permute network).
inline void transpose_8x8(const float* a, int64_t lda, float* out, int64_t ldo) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(a + i * lda);
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {  // quads of rows 4i .. 4i + 3
    r[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(out + i * ldo, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(out + (i + 4) * ldo, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}
#endif

// TransposeFn (gate_kernels.h): 8 x 8 register tiles where the ISA has them, scalar edges.
inline void transpose_tile(const float* a, int64_t lda, int64_t rows, int64_t cols, float* out, int64_t ldo) {
  int64_t r = 0;
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
  for (; r + 8 <= rows; r += 8) {
    int64_t c = 0;
    for (; c + 8 <= cols; c += 8) transpose_8x8(a + r * lda + c, lda, out + c * ldo + r, ldo);
    for (; c < cols; ++c) {
      for (int64_t i = r; i < r + 8; ++i) out[c * ldo + i] = a[i * lda + c];
    }
  }
#endif
  for (int64_t c = 0; c < cols; ++c) {
    for (int64_t i = r; i < rows; ++i) out[c * ldo + i] = a[i * lda + c];
  }
}

inline GateKernels make_gate_kernels(const char* instruction_set) {
  return {instruction_set,          &forward_cells<float>,   &forward_cells<double>,
          &backward_cells<float>,   &backward_cells<double>, &forward_cells<float, c10::BFloat16>,
          &backward_cells_bf16_out, &row_dot<float>,         &row_dot<double>,
          &transpose_tile};
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace fused_lstm
