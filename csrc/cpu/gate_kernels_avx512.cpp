// AVX512 build of the gate passes (Note [CPU instruction sets]). The pragma compiles everything
// below it for AVX512; the code runs only where at::get_cpu_capability() reports AVX512.
#include "cpu/gate_kernels_isa_prelude.h"

#ifdef FUSED_LSTM_CAN_TARGET_X86_ISAS
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")
// `#pragma GCC target` does not define the ISA macros that -m flags would; Sleef's header
// declares its vector functions only under them (the functions themselves are in libtorch_cpu).
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __AVX2__
#define __AVX2__ 1
#endif
#ifndef __FMA__
#define __FMA__ 1
#endif
#ifndef __AVX512F__
#define __AVX512F__ 1
#endif
#ifndef __AVX512BW__
#define __AVX512BW__ 1
#endif
#ifndef __AVX512VL__
#define __AVX512VL__ 1
#endif
#ifndef __AVX512DQ__
#define __AVX512DQ__ 1
#endif
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#include "cpu/gate_kernels_impl.h"
#endif

namespace fused_lstm {
namespace cpu {
const GateKernels& gate_kernels_avx512() {
#ifdef FUSED_LSTM_CAN_TARGET_X86_ISAS
  static const GateKernels table = AVX512::make_gate_kernels("avx512");
  return table;
#else
  return gate_kernels_default();  // this compiler cannot target AVX512: the baseline build serves
#endif
}
}  // namespace cpu
}  // namespace fused_lstm
