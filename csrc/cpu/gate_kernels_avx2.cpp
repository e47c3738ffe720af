// AVX2 build of the gate passes (Note [CPU instruction sets]). The pragma compiles everything
// below it for AVX2; the code runs only where at::get_cpu_capability() reports AVX2.
#include "cpu/gate_kernels_isa_prelude.h"

#ifdef FUSED_LSTM_CAN_TARGET_X86_ISAS
#pragma GCC target("avx2,fma")
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
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#include "cpu/gate_kernels_impl.h"
#endif

namespace fused_lstm {
namespace cpu {
const GateKernels& gate_kernels_avx2() {
#ifdef FUSED_LSTM_CAN_TARGET_X86_ISAS
  static const GateKernels table = AVX2::make_gate_kernels("avx2");
  return table;
#else
  return gate_kernels_default();  // this compiler cannot target AVX2: the baseline build serves
#endif
}
}  // namespace cpu
}  // namespace fused_lstm
