// Baseline build of the gate passes, and the run-time choice (Note [CPU instruction sets]).
#define CPU_CAPABILITY DEFAULT
#define CPU_CAPABILITY_DEFAULT
#include <ATen/Version.h>

#include "cpu/gate_kernels_impl.h"

namespace fused_lstm {
namespace cpu {

const GateKernels& gate_kernels_default() {
  static const GateKernels table = DEFAULT::make_gate_kernels("default");
  return table;
}

const GateKernels& gate_kernels() {
  static const GateKernels& chosen = []() -> const GateKernels& {
    const std::string capability = at::get_cpu_capability();  // honours ATEN_CPU_CAPABILITY
    if (capability == "AVX512") return gate_kernels_avx512();
    if (capability == "AVX2") return gate_kernels_avx2();
    return gate_kernels_default();
  }();
  return chosen;
}

}  // namespace cpu
}  // namespace fused_lstm
