// A register-blocked bf16 GEMM micro-kernel for the per-step recurrent products on CPUs with
// AVX512_BF16 but without AMX.
//
// Note [bf16 dot-product GEMM on CPU]
// oneDNN's bf16 brgemm with a VNNI-packed B (BlockedOperandBf16's AMX path, Note [bfloat16 GEMMs
// on CPU] in lstm_cpu.h) is offered by ATen only where the CPU has AMX; on AVX512_BF16 CPUs
// without it (AMD Zen 4, Intel Cooper Lake) ATen runs bf16 brgemm on an unpacked B, slower than
// fp32. This kernel fills that gap with vdpbf16ps (_mm512_dpbf16_ps: 16 fp32 lanes, each adding
// the products of one pair of bf16 values):
//  - B [k, n] is packed once per call (bf16_dot_pack) into panels of kBf16DotPanel (16) columns,
//    one panel after the other; within a panel, pair p of rows (2p, 2p + 1) is 32 bf16 values,
//    (b[2p][c], b[2p + 1][c]) for c = 0..15 -- one zmm, the B operand of one vdpbf16ps. An odd k
//    gets a zero row; columns past n in the last panel are zero. Each tile streams its panels
//    contiguously.
//  - c = a · B in tiles of up to kBf16DotRows rows by up to 4 panels (64 columns), the tile's
//    accumulators in fp32 registers for the whole depth (no partial sums through memory); per
//    pair of rows of B each row of a is one 32-bit broadcast (a[r][2p], a[r][2p + 1]) and each
//    panel one zmm load. Any m, n and k: row and panel remainders take smaller tiles, the last
//    panel stores under a mask, an odd k's last a value is paired with a zero.
//  - c is fp32, overwritten (not accumulated into); a is read in place (row stride lda).
// No threading: it runs on the calling thread (the recurrence calls it from inside its parallel
// region, one unit block per call). Compiled with function-level target attributes
// (bf16_dot_gemm_avx512.cpp), so nothing else in the build is compiled for AVX-512; callers check
// bf16_dot_gemm_available() first. Sums run in a fixed order, so results are deterministic.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>

namespace fused_lstm {
namespace cpu {

// Columns per packed panel: one zmm of fp32 results.
constexpr int64_t kBf16DotPanel = 16;
// Most rows of a register tile.
constexpr int64_t kBf16DotRows = 6;

// Whether this build can target AVX512_BF16 and this CPU runs it, and ATen's CPU capability
// (ATEN_CPU_CAPABILITY) is AVX512: a process held to AVX2 does not use the kernel either.
bool bf16_dot_gemm_available();

// bf16 elements of a packed [k, n] operand: ceil(k / 2) pairs x 32 per panel, ceil(n / 16) panels.
inline int64_t bf16_dot_packed_size(int64_t k, int64_t n) {
  return (k + 1) / 2 * 2 * ((n + kBf16DotPanel - 1) / kBf16DotPanel * kBf16DotPanel);
}

// Packs b[k, n] (row stride ldb, unit column stride) into `packed` (bf16_dot_packed_size(k, n)
// elements; any alignment). Only where bf16_dot_gemm_available().
void bf16_dot_pack(int64_t k, int64_t n, const c10::BFloat16* b, int64_t ldb, c10::BFloat16* packed);

// c[m, n] (fp32, row stride ldc) = a[m, k] (row stride lda) · B, B packed by bf16_dot_pack(k, n).
// On the calling thread only. Only where bf16_dot_gemm_available().
void bf16_dot_gemm(int64_t m, int64_t n, int64_t k, const c10::BFloat16* a, int64_t lda, const c10::BFloat16* packed,
                   float* c, int64_t ldc);

}  // namespace cpu
}  // namespace fused_lstm
