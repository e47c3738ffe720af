// First include of the per-ISA builds (gate_kernels_{avx2,avx512}.cpp), before their
// `#pragma GCC target` (Note [CPU instruction sets]). No include guard on purpose.
//
// Headers with code outside at::vec's per-ISA namespace are included here, compiled for the
// baseline ISA: their inline functions may be emitted in the per-ISA object and merged with
// other objects' copies, and whichever copy the linker keeps must run on every CPU. (setup.py
// also links the per-ISA objects last.)
#include "cpu/gate_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FUSED_LSTM_CAN_TARGET_X86_ISAS 1
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
