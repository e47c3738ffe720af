// AVX2 build of the gate passes (Note [CPU instruction sets]). The pragma compiles everything
// below for AVX2; the code runs only where at::get_cpu_capability() reports AVX2.
#include "cpu/gate_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// Headers with code outside at::vec's per-ISA namespace come first, compiled for the baseline
// ISA: their inline functions may be emitted here and merged with other objects' copies, and
// those copies must run everywhere. (setup.py also links the per-ISA objects last.)
#include <ATen/AccumulateType.h>
#include <ATen/NumericUtils.h>
#include <ATen/native/Math.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/complex.h>
#include <c10/util/irange.h>
#include <cmath>
#include "kernels/lstm_math.h"
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
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

namespace fused_lstm {
namespace cpu {
const GateKernels& gate_kernels_avx2() {
  static const GateKernels table = AVX2::make_gate_kernels("avx2");
  return table;
}
}  // namespace cpu
}  // namespace fused_lstm

#else  // no way to target AVX2 from this compiler: the baseline build serves

namespace fused_lstm {
namespace cpu {
const GateKernels& gate_kernels_avx2() { return gate_kernels_default(); }
}  // namespace cpu
}  // namespace fused_lstm

#endif
