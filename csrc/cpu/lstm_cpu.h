// The CPU kernels of the layer ops: the forward in lstm_cpu.cpp, the backward in
// lstm_cpu_backward.cpp (each registers itself for the CPU dispatch key), over the recurrence
// driver (recurrence.h), the prepared operands (operand_cache.h), the GEMM kernels
// (packed_gemm.h, gemm_choice.h) and the gate passes (gate_kernels.h).
#pragma once

namespace fused_lstm {
namespace cpu {

// Note [bfloat16 GEMMs on CPU]
// For bfloat16 layers on a CPU with bf16 dot-product instructions (AVX512_BF16; oneDNN also uses
// AMX where present) the input projection and the backward's weight/input-gradient GEMMs run as
// bf16 GEMMs (at::mm -> oneDNN; dgates rounded to bf16): several times faster than fp32 ones.
// The per-step recurrent product: on CPUs with AMX (and H a multiple of 16, P even) each unit
// block multiplies h_prev rounded to bf16 by its W_hh columns packed once per call in oneDNN's
// VNNI layout, accumulating in fp32 (BlockedOperandBf16, Note [Recurrent GEMMs on CPU]);
// elsewhere one bf16 at::mm per step, the fp32 unit-block products or (AVX512_BF16 CPUs) bf16
// unit-block products on a hand-written dot-product kernel (Note [bf16 dot-product GEMM on CPU]),
// whichever is measured faster for the shape (Bf16Recurrence in lstm_cpu.cpp). The gate pass
// computes in fp32; with bf16 unit-block products and no projection it reads the bf16 input
// projection as it is and writes h rounded to bf16 (the next product and the output take nothing
// else: no widening pass over [N, 4H], no per-step rounding of h, no final rounding of the
// output). The backward's carry: on AMX with H a multiple of 64, dgates rounded to bf16 (written
// by the gate backward alongside the fp32 ones, then also the large GEMMs' operand) times W_hh
// packed in bf16, as oneDNN's bf16 LSTM does; without AMX the same bf16 carry on the dot-product
// kernel where it is measured faster than fp32 for the shape (bf16_dot_carry, gemm_choice.h);
// otherwise fp32 (the fused recurrence) or, with a projection, bf16 at::mm per step. at::mm's
// products come out rounded to bf16 (nn.LSTM's oneDNN bf16 path keeps them in fp32), an extra
// relative error of 2^-9 on each pre-activation term; the tests hold the result within 2x
// nn.LSTM's own bf16 error.
// FUSED_LSTM_CPU_BF16_GEMM=0 forces the fp32 GEMMs (=1 forces bf16 ones). Measurements:
// benchmarks/RESULTS.md, "Measurements behind the design notes".
//
// Whether a bf16 layer's GEMMs run in bf16 here.
bool use_bf16_gemms();

}  // namespace cpu
}  // namespace fused_lstm
