// Note [bf16 dot-product GEMM on CPU] (bf16_dot_gemm.h). Only the functions marked
// FUSED_LSTM_BF16_DOT_TARGET are compiled for AVX-512 (function attributes, not a file-wide
// pragma or -m flag): no inline function from a header is emitted here for AVX-512, so the
// linker can never keep such a copy for code that runs on other CPUs.
#include <ATen/Version.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <string>
#include <utility>

#include "cpu/bf16_dot_gemm.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FUSED_LSTM_HAS_BF16_DOT 1
#include <immintrin.h>
#define FUSED_LSTM_BF16_DOT_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#endif

namespace fused_lstm {
namespace cpu {

#ifdef FUSED_LSTM_HAS_BF16_DOT
namespace {

constexpr int kMaxPanels = 4;  // panels of a tile: kBf16DotRows x 4 accumulators + 4 B operands
constexpr int kMaxRows = static_cast<int>(kBf16DotRows);
constexpr int64_t kPairWidth = 2 * kBf16DotPanel;  // bf16 values of one pair of rows of a panel

// The 32-bit word (a[0], a[1]): the broadcast A operand of one pair of rows of B.
inline uint32_t load_pair(const uint16_t* a) {
  uint32_t word;
  std::memcpy(&word, a, sizeof(word));
  return word;
}

// acc += a[MR, 2 rows p] · the pair p of NR panels (panel_stride elements apart, from b). kLast:
// the last row of an odd k, a[k - 1] paired with zero (B's padding row is zero, but a's next
// value may be anything, a NaN included).
template <int MR, int NR, bool kLast>
FUSED_LSTM_BF16_DOT_TARGET __attribute__((always_inline)) inline void accumulate_pair(__m512 (&acc)[MR][NR],
                                                                                      const uint16_t* a, int64_t lda,
                                                                                      const uint16_t* b,
                                                                                      int64_t panel_stride, int64_t p) {
  __m512i bv[NR];
#pragma GCC unroll 4
  for (int j = 0; j < NR; ++j) bv[j] = _mm512_loadu_si512(b + j * panel_stride + p * kPairWidth);
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    const uint32_t word = kLast ? static_cast<uint32_t>(a[i * lda + 2 * p]) : load_pair(a + i * lda + 2 * p);
    const __m512i av = _mm512_set1_epi32(static_cast<int>(word));
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], (__m512bh)av, (__m512bh)bv[j]);
  }
}

// c[MR, 16 * NR] = a[MR, k] · NR panels starting at b (panel_stride elements apart); the last
// panel's columns stored under last_mask. pairs = k / 2 full pairs; odd: k is odd.
template <int MR, int NR>
FUSED_LSTM_BF16_DOT_TARGET void tile(int64_t pairs, bool odd, const uint16_t* a, int64_t lda, const uint16_t* b,
                                     int64_t panel_stride, float* c, int64_t ldc, __mmask16 last_mask) {
  __m512 acc[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < pairs; ++p) accumulate_pair<MR, NR, false>(acc, a, lda, b, panel_stride, p);
  if (odd) accumulate_pair<MR, NR, true>(acc, a, lda, b, panel_stride, pairs);
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < NR - 1; ++j) _mm512_storeu_ps(c + i * ldc + j * kBf16DotPanel, acc[i][j]);
    _mm512_mask_storeu_ps(c + i * ldc + (NR - 1) * kBf16DotPanel, last_mask, acc[i][NR - 1]);
  }
}

using TileFn = void (*)(int64_t, bool, const uint16_t*, int64_t, const uint16_t*, int64_t, float*, int64_t, __mmask16);

template <int... I>
constexpr std::array<TileFn, sizeof...(I)> make_tiles(std::integer_sequence<int, I...>) {
  return {&tile<I / kMaxPanels + 1, I % kMaxPanels + 1>...};
}

// tiles[(rows - 1) * kMaxPanels + panels - 1]
constexpr std::array<TileFn, kMaxRows * kMaxPanels> kTiles =
    make_tiles(std::make_integer_sequence<int, kMaxRows * kMaxPanels>{});

FUSED_LSTM_BF16_DOT_TARGET void pack(int64_t k, int64_t n, const uint16_t* b, int64_t ldb, uint16_t* packed) {
  const int64_t pairs = (k + 1) / 2;
  for (int64_t column = 0; column < n; column += kBf16DotPanel) {
    const int64_t width = std::min<int64_t>(kBf16DotPanel, n - column);
    const __mmask16 mask = static_cast<__mmask16>((1u << width) - 1);
    uint16_t* dst = packed + column / kBf16DotPanel * pairs * kPairWidth;
    for (int64_t p = 0; p < pairs; ++p) {
      const uint16_t* even = b + 2 * p * ldb + column;
      const __m256i lo = _mm256_maskz_loadu_epi16(mask, even);
      const __m256i hi = 2 * p + 1 < k ? _mm256_maskz_loadu_epi16(mask, even + ldb) : _mm256_setzero_si256();
      const __m512i pair = _mm512_or_si512(_mm512_cvtepu16_epi32(lo), _mm512_slli_epi32(_mm512_cvtepu16_epi32(hi), 16));
      _mm512_storeu_si512(dst + p * kPairWidth, pair);
    }
  }
}

}  // namespace
#endif  // FUSED_LSTM_HAS_BF16_DOT

bool bf16_dot_gemm_available() {
#ifdef FUSED_LSTM_HAS_BF16_DOT
  static const bool available = [] {
    __builtin_cpu_init();
    const bool cpu = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                     __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
    return cpu && at::get_cpu_capability() == "AVX512";  // honours ATEN_CPU_CAPABILITY
  }();
  return available;
#else
  return false;
#endif
}

void bf16_dot_pack(int64_t k, int64_t n, const c10::BFloat16* b, int64_t ldb, c10::BFloat16* packed) {
  TORCH_INTERNAL_ASSERT(bf16_dot_gemm_available());
#ifdef FUSED_LSTM_HAS_BF16_DOT
  pack(k, n, reinterpret_cast<const uint16_t*>(b), ldb, reinterpret_cast<uint16_t*>(packed));
#endif
}

void bf16_dot_gemm(int64_t m, int64_t n, int64_t k, const c10::BFloat16* a, int64_t lda, const c10::BFloat16* packed,
                   float* c, int64_t ldc) {
#ifdef FUSED_LSTM_HAS_BF16_DOT
  if (m <= 0 || n <= 0) return;
  const int64_t panels = (n + kBf16DotPanel - 1) / kBf16DotPanel;
  const int64_t panel_stride = (k + 1) / 2 * kPairWidth;
  const auto* a16 = reinterpret_cast<const uint16_t*>(a);
  const auto* b16 = reinterpret_cast<const uint16_t*>(packed);
  // Rows split evenly over the fewest tiles of at most kMaxRows (m = 8: two tiles of 4, not 6 + 2).
  const int64_t row_tiles = (m + kMaxRows - 1) / kMaxRows;
  for (int64_t p0 = 0; p0 < panels; p0 += kMaxPanels) {
    const int64_t nr = std::min<int64_t>(kMaxPanels, panels - p0);
    const int64_t tail = n - (p0 + nr - 1) * kBf16DotPanel;  // columns of the tile's last panel
    const auto last_mask = static_cast<__mmask16>(tail >= kBf16DotPanel ? 0xFFFF : (1u << tail) - 1);
    for (int64_t t = 0, r0 = 0; t < row_tiles; ++t) {
      const int64_t r1 = m * (t + 1) / row_tiles;
      kTiles[(r1 - r0 - 1) * kMaxPanels + nr - 1](k / 2, k % 2 != 0, a16 + r0 * lda, lda, b16 + p0 * panel_stride,
                                                  panel_stride, c + r0 * ldc + p0 * kBf16DotPanel, ldc, last_mask);
      r0 = r1;
    }
  }
#else
  TORCH_INTERNAL_ASSERT(false, "bf16_dot_gemm: not built for this CPU");
#endif
}

}  // namespace cpu
}  // namespace fused_lstm
