// AVX512 build of the gate passes (Note [CPU instruction sets]). The pragma compiles everything
// below for AVX512; the code runs only where at::get_cpu_capability() reports AVX512.
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

namespace fused_lstm {
namespace cpu {
const GateKernels& gate_kernels_avx512() {
  static const GateKernels table = AVX512::make_gate_kernels("avx512");
  return table;
}
}  // namespace cpu
}  // namespace fused_lstm

#else  // no way to target AVX512 from this compiler: the baseline build serves

namespace fused_lstm {
namespace cpu {
const GateKernels& gate_kernels_avx512() { return gate_kernels_default(); }
}  // namespace cpu
}  // namespace fused_lstm

#endif
