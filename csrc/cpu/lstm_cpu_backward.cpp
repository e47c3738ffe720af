// CPU kernel of the backward op: the device-independent driver (layer_backward.h) with the CPU's
// kernels: the reverse recurrence over unit blocks (carry product per block, then that block's
// gate backward, Note [Recurrent GEMMs on CPU]), the per-step pointwise kernel for projections and
// short sequences, pooled scratch memory and the measured GEMM choice.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>

#include "cpu/gate_kernels.h"
#include "cpu/gemm_choice.h"
#include "cpu/lstm_cpu.h"
#include "cpu/packed_gemm.h"
#include "cpu/recurrence.h"
#include "cpu/scratch_pool.h"
#include "kernels/lstm_step.h"
#include "layer_args.h"
#include "layer_backward.h"

namespace fused_lstm {
namespace cpu {
namespace {

void backward_pointwise_cpu(const kernels::StepRows& step, int64_t hidden, const Tensor& gates, const Tensor& cells,
                            const Tensor& cx, const Tensor& dh, const Tensor& dc_carry, const Tensor& dgates) {
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "lstm_backward_pointwise_cpu", [&] {
    const auto backward_cells = cpu::gate_kernels().backward<scalar_t>();
    const int64_t H = hidden;
    const scalar_t* gates_p = gates.data_ptr<scalar_t>();
    const scalar_t* cells_p = cells.data_ptr<scalar_t>();
    const scalar_t* cx_p = cx.data_ptr<scalar_t>();
    const scalar_t* dh_p = dh.data_ptr<scalar_t>();
    scalar_t* dc_p = dc_carry.data_ptr<scalar_t>();
    scalar_t* dgates_p = dgates.data_ptr<scalar_t>();
    const int64_t chunks = (H + kHiddenChunk - 1) / kHiddenChunk;
    at::parallel_for(0, step.rows * chunks, grain_in_tasks(std::min(H, kHiddenChunk)), [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / chunks;
        const int64_t j0 = (task % chunks) * kHiddenChunk;
        const int64_t row = step.row_offset + b;
        // c_{t-1}: the previous processed step's row, or cx (Note [Row layout and step schedule]).
        const scalar_t* c_prev = b < step.prev_rows ? cells_p + (step.prev_row_offset + b) * H : cx_p + b * H;
        backward_cells(gates_p + row * 4 * H, cells_p + row * H, c_prev, dh_p + b * dh.stride(0), dc_p + b * H,
                       dgates_p + row * 4 * H, H, j0, std::min(H, j0 + kHiddenChunk));
      }
    });
  });
}

// The reverse recurrence without projection (BackwardRecurrenceFn), one parallel region per step
// (Note [Recurrent GEMMs on CPU]): block u's task first turns the previously processed step's
// dgates into the carry reaching its units of h (dgates rows · W_hh[:, units]), adds that
// step's grad_output, then runs the gate backward of its units. The same arithmetic as the
// per-step loop of layer_backward, in the same order per element.
bool backward_recurrence_cpu(const BackwardRecurrenceArgs& a) {
  // Short sequences: the generic per-step loop (at::mm), no preparation to amortise.
  if (static_cast<int64_t>(a.schedule.size()) < kMinStepsToPrepareWeights) return false;
  const int64_t B = a.batch, H = a.hidden;
  const auto acc_type = a.gates.scalar_type();
  // dh_carry: the gradient reaching h of the step being processed (grad_hy to start with).
  Tensor dh_carry = a.grad_hy.defined() ? a.grad_hy.clone() : at::zeros({B, H}, a.gates.options());
  // bf16 layers with bf16 GEMMs (Note [bfloat16 GEMMs on CPU]) want dgates rounded to bf16 too;
  // on AMX (H a multiple of the 64-column panel) the carry then multiplies those in bf16 by W_hh
  // packed once per call, as oneDNN's bf16 LSTM does, instead of fp32 dgates by fp32 W_hh.
  const bool rounded_out = a.dgates_rounded.defined();  // so acc_type is float
  const bool onednn_carry =
      rounded_out && H % cpu::BlockedOperandBf16::kPanel == 0 && cpu::BlockedOperandBf16::available();
  // Elsewhere the AVX512_BF16 dot-product kernel may serve the same bf16 carry
  // (any H): where bf16_dot_carry() measures it faster than the fp32 carry for one block's
  // product, or FUSED_LSTM_CPU_BF16_RECURRENCE=bf16_dot pins it. "amx_carry": either kernel.
  const bool dot_carry =
      rounded_out && !onednn_carry &&
      cpu::bf16_dot_carry(B, 4 * H, recurrence_block_size(H, B, 4 * H, 1, /*align=*/16, sizeof(float)));
  const bool amx_carry = onednn_carry || dot_carry;
  AT_DISPATCH_FLOATING_TYPES(acc_type, "lstm_backward_recurrence_cpu", [&] {
    const auto backward_cells = cpu::gate_kernels().backward<scalar_t>();
    const auto backward_cells_bf16_out = cpu::gate_kernels().backward_bf16_out;
    constexpr int64_t kPanel = cpu::BlockedOperandBf16::kPanel;
    const int64_t block = recurrence_block_size(H, B, 4 * H, 1, onednn_carry ? kPanel : 16, sizeof(scalar_t));
    const int64_t num_blocks = (H + block - 1) / block;
    // B = W_hh, [4H, H]: block u's carry columns are its units' columns, read in place (fp32,
    // fp64) or packed in bf16 (amx_carry).
    std::optional<cpu::BlockedOperand<scalar_t>> w_blocks;
    std::optional<cpu::BlockedOperandBf16> w_blocks_bf16;
    const Tensor w_hh = amx_carry ? a.weight_hh : a.weight_hh.to(acc_type).contiguous();
    if (amx_carry) {
      w_blocks_bf16.emplace(
          w_hh, block_column_begin(H, block, 1),
          dot_carry ? cpu::BlockedOperandBf16::Kernel::kBf16Dot : cpu::BlockedOperandBf16::Kernel::kOneDnnAmx);
    } else {
      w_blocks.emplace(w_hh, block_column_begin(H, block, 1), B);
    }
    c10::BFloat16* rounded_p = rounded_out ? a.dgates_rounded.data_ptr<c10::BFloat16>() : nullptr;
    const scalar_t* grad_output_p = a.grad_output.defined() ? a.grad_output.data_ptr<scalar_t>() : nullptr;
    const scalar_t* gates_p = a.gates.data_ptr<scalar_t>();
    const scalar_t* cells_p = a.cells.data_ptr<scalar_t>();
    const scalar_t* cx_p = a.cx.data_ptr<scalar_t>();
    scalar_t* dc_p = a.dc_carry.data_ptr<scalar_t>();
    scalar_t* dh_p = dh_carry.data_ptr<scalar_t>();
    scalar_t* dgates_p = a.dgates.data_ptr<scalar_t>();
    // Steps in processing order: the reverse of the forward schedule (Note [One thread team per
    // sequence]: one team for the whole reverse recurrence, nothing serial between steps).
    const int64_t num_steps = static_cast<int64_t>(a.schedule.size());
    auto step_at = [&](int64_t k) -> const StepRows& { return a.schedule[num_steps - 1 - k]; };
    auto blocks = [&](int64_t k, int64_t u_begin, int64_t u_end) {
      const StepRows& step = step_at(k);
      const StepRows* later = k > 0 ? &step_at(k - 1) : nullptr;  // processed just before
      const int64_t carry_rows = later != nullptr ? later->rows : 0;
      for (int64_t u = u_begin; u < u_end; ++u) {
        const int64_t j0 = u * block, units = std::min(block, H - j0);
        prefetch_gate_rows(gates_p + step.row_offset * 4 * H + j0, step.rows, 4 * H, H, units);
        if (later != nullptr && amx_carry) {  // float layers only: scalar_t is float here
          w_blocks_bf16->multiply(u, carry_rows, rounded_p + later->row_offset * 4 * H, 4 * H,
                                  reinterpret_cast<float*>(dh_p + j0), H);
        } else if (later != nullptr) {
          w_blocks->multiply(u, carry_rows, dgates_p + later->row_offset * 4 * H, 4 * H, dh_p + j0, H);
        }
        for (int64_t b = 0; b < step.rows; ++b) {
          const int64_t row = step.row_offset + b;
          scalar_t* dh_row = dh_p + b * H;
          if (grad_output_p != nullptr) {
            for (int64_t j = j0; j < j0 + units; ++j) dh_row[j] += grad_output_p[row * H + j];
          }
          // c_{t-1}: the previous processed step's row, or cx (Note [Row layout and step schedule]).
          const scalar_t* c_prev = b < step.prev_rows ? cells_p + (step.prev_row_offset + b) * H : cx_p + b * H;
          if (rounded_out) {  // float layers only: scalar_t is float here
            backward_cells_bf16_out(
                reinterpret_cast<const float*>(gates_p + row * 4 * H),
                reinterpret_cast<const float*>(cells_p + row * H), reinterpret_cast<const float*>(c_prev),
                reinterpret_cast<const float*>(dh_row), reinterpret_cast<float*>(dc_p + b * H),
                reinterpret_cast<float*>(dgates_p + row * 4 * H), rounded_p + row * 4 * H, H, j0, j0 + units);
          } else {
            backward_cells(gates_p + row * 4 * H, cells_p + row * H, c_prev, dh_row, dc_p + b * H,
                           dgates_p + row * 4 * H, H, j0, j0 + units);
          }
        }
      }
    };
    run_recurrence(
        num_steps, num_blocks, block_grain(B, 4 * H, block), /*one_team_allowed=*/true, [](int64_t) { return false; },
        [](int64_t) {}, blocks, [](int64_t) {},
        [&] {
          if (amx_carry) cpu::BlockedOperandBf16::release_thread_state();
        });
  });
  return true;
}

// Note [Weight gradients on CPU]
// dW_ih = dgatesᵀ · x and dW_hh = dgatesᵀ · h_prev are, with the input gradient, most of a
// backward's arithmetic at B >= 16. Read as stored, dgates [N, 4H] is the transposed left operand
// of a product whose depth is the N tokens, and MKL's SGEMM runs that at 147-185 GFLOP/s on a
// 2-core AMD EPYC (Zen 4), against 203 for the same product of contiguous dgatesᵀ [4H, N] and
// 219 for oneDNN's matmul of dgatesᵀ and operandᵀ [K, N] (a · wᵀ, both rows of depth N). So the
// backward copies dgates, x and h_prev transposed (8 x 8 register tiles, TransposeFn in
// gate_kernels.h: 0.5 ms for a [2048, 1024] fp32 matrix, where ATen's strided copy takes 2.2)
// and multiplies the copies through the measured GEMM choice (Note [Measured GEMM choice on
// CPU]). T=64 B=32 I=H=256: both weight gradients 14.4 ms -> 10.4 (plus ~0.7 of copies). fp32
// only; bf16 layers keep at::mm on the transposed view.
Tensor transposed_cpu(const Tensor& a) {
  if (a.scalar_type() != at::kFloat || a.dim() != 2) return Tensor();
  const Tensor src = a.stride(1) == 1 ? a : a.contiguous();
  const int64_t rows = src.size(0), cols = src.size(1), lda = src.stride(0);
  Tensor out = cpu::scratch_empty({cols, rows}, at::kFloat);
  const float* a_p = src.const_data_ptr<float>();
  float* out_p = out.data_ptr<float>();
  const auto transpose_tile = cpu::gate_kernels().transpose_float;
  constexpr int64_t kTile = 64;  // 64 x 64 floats (16 KiB) read and written per task
  const int64_t row_tiles = (rows + kTile - 1) / kTile, col_tiles = (cols + kTile - 1) / kTile;
  at::parallel_for(0, row_tiles * col_tiles, /*grain_size=*/16, [&](int64_t begin, int64_t end) {
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t r0 = tile / col_tiles * kTile, c0 = tile % col_tiles * kTile;
      transpose_tile(a_p + r0 * lda + c0, lda, std::min(kTile, rows - r0), std::min(kTile, cols - c0),
                     out_p + c0 * rows + r0, rows);
    }
  });
  return out;
}

BackwardResult layer_backward_cpu(const BackwardArgs& args) {
  const bool bf16_gemms = args.input.scalar_type() == at::kBFloat16 && use_bf16_gemms();
  return layer_backward(args, {&backward_pointwise_cpu, &backward_recurrence_cpu, bf16_gemms, &cpu::scratch_empty,
                               &cpu::linear, &transposed_cpu});
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_lstm, CPU, m) { m.impl("lstm_layer_backward", &backward_op<&layer_backward_cpu>); }

}  // namespace cpu
}  // namespace fused_lstm
