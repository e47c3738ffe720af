// CPU implementation of the layer ops.
//
// Forward, per step: the recurrent product h_prev · W_hhᵀ for all four gates as one BLAS call into
// a preallocated buffer, then one fused, vectorised, multithreaded pass over (row, hidden unit)
// that adds the hoisted input projection, applies sigmoid/tanh, updates c and h and writes the
// saved gates when training (csrc/cpu/gate_kernels*: built per instruction set, Note [CPU
// instruction sets]). Backward: lstm_layer_backward_impl with the same kind of gate pass.
// All arithmetic is in the opmath type (float for bf16/fp16), with h and c carried in it across
// steps; outputs are rounded to the input dtype once.
// (A register-blocked recurrent micro-kernel with the pointwise update fused while the tile is
// hot is the CPU-performance issue's work; BLAS is the honest baseline here.)
//
// Note [bfloat16 GEMMs on CPU]
// For bfloat16 layers on a CPU with bf16 dot-product instructions (AVX512_BF16; oneDNN also uses
// AMX where present) the input projection and the per-step recurrent product run as bf16 GEMMs
// (at::mm -> oneDNN), their results widened to fp32 for the gate pass, which is unchanged; the
// backward's carry and gradient GEMMs likewise take dgates rounded to bf16.
// Measured on a 2-core Xeon with AMX: [6400,512]x[512,2048] 16 ms vs 112 ms in fp32, and the
// per-step [64,512]x[512,2048] 0.23 vs 0.57 ms. The products come out rounded to bf16 (nn.LSTM's
// oneDNN bf16 path keeps them in fp32), an extra relative error of 2^-9 on each pre-activation
// term; the tests hold the result to the same bf16 error rule as before (within 2x nn.LSTM's own
// bf16 error). FUSED_LSTM_CPU_BF16_GEMM=0 forces the fp32 GEMMs (=1 forces bf16 ones).
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>

#include "cpu/gate_kernels.h"
#include "kernels/lstm_step.h"
#include "lstm_common.h"

namespace fused_lstm {
namespace {

// Pointwise work is split into (row, chunk of hidden units) tasks; below this many cells per task
// the threads' start-up costs more than it saves.
constexpr int64_t kHiddenChunk = 256;
constexpr int64_t kCellsPerTask = 16384;

int64_t grain_in_tasks(int64_t chunk) { return std::max<int64_t>(1, kCellsPerTask / chunk); }

// Note [bfloat16 GEMMs on CPU]: whether a bf16 layer's GEMMs run in bf16 here.
bool use_bf16_gemms() {
  if (const char* forced = std::getenv("FUSED_LSTM_CPU_BF16_GEMM")) {
    TORCH_CHECK_VALUE(std::strcmp(forced, "0") == 0 || std::strcmp(forced, "1") == 0,
                      "fused_lstm: FUSED_LSTM_CPU_BF16_GEMM must be 0 or 1, got '", forced, "'");
    return forced[0] == '1';
  }
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool has_bf16_dot = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") != 0;
  }();
  return has_bf16_dot && at::hasMKLDNN() && at::globalContext().userEnabledMkldnn();
#else
  return false;
#endif
}

ForwardResult lstm_layer_forward_cpu(const Tensor& input, const Tensor& hx, const Tensor& cx,
                                     const Tensor& weight_ih, const Tensor& weight_hh,
                                     const c10::optional<Tensor>& bias_ih,
                                     const c10::optional<Tensor>& bias_hh,
                                     const c10::optional<Tensor>& weight_hr,
                                     const c10::optional<Tensor>& batch_sizes, bool reverse,
                                     bool save_workspace) {
  // Below autograd: the op is differentiated by its backward op, never through its internals.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const LayerShape s = check_layer_arguments("fused_lstm.lstm_layer_forward", input, hx, cx,
                                             weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
                                             batch_sizes);
  if (s.tokens == 0) return forward_without_tokens(s, input, hx, cx, save_workspace);
  const int64_t N = s.tokens, B = s.batch, H = s.hidden, P = s.proj;
  const auto dtype = input.scalar_type();
  const auto acc_type = opmath_type(dtype);
  const auto acc = input.options().dtype(acc_type);

  // Hoisted input projection for all steps: one GEMM. The biases are added in the gate pass
  // (folding them in with addmm costs a [N, 4H] broadcast copy: 12 ms of 150 at T=100 B=64 H=512).
  const bool bf16_gemms = dtype == at::kBFloat16 && use_bf16_gemms();
  const Tensor pre = bf16_gemms ? at::mm(input.reshape({N, s.input}), weight_ih.t()).to(acc_type)
                                : at::mm(input.reshape({N, s.input}).to(acc_type), weight_ih.to(acc_type).t());
  const Tensor bias = s.has_bias ? (bias_ih->to(acc_type) + bias_hh->to(acc_type)).contiguous()
                                 : at::zeros({4 * H}, acc);
  const Tensor w_hh_t = bf16_gemms ? weight_hh.t() : weight_hh.to(acc_type).t();
  const Tensor w_hr_t = s.has_proj ? weight_hr->to(acc_type).t() : Tensor();

  // Buffers for the whole sequence, allocated once (no per-step allocation).
  Tensor out = at::empty({N, P}, acc);
  const Tensor hx_acc = hx.to(acc_type).contiguous();
  Tensor h_joined;  // only for steps whose rows start from both out and hx (see h_prev below)
  Tensor c_state = cx.to(acc_type).contiguous().clone();
  Tensor rec = at::empty({B, 4 * H}, acc);
  Tensor h_unprojected = s.has_proj ? at::empty({B, H}, acc) : Tensor();
  // Saved for backward, one row per token: [T, B, 4H] / [T, B, H] (or [N, .] packed).
  Tensor gates = save_workspace ? at::empty(per_token_shape(s, 4 * H), acc) : at::empty({0}, acc);
  Tensor cells = save_workspace ? at::empty(per_token_shape(s, H), acc) : at::empty({0}, acc);

  const auto schedule = make_step_schedule(s, batch_sizes, reverse);
  AT_DISPATCH_FLOATING_TYPES(acc_type, "lstm_layer_forward_cpu", [&] {
    const auto forward_cells = cpu::gate_kernels().forward<scalar_t>();
    const int64_t chunks = (H + kHiddenChunk - 1) / kHiddenChunk;
    for (const auto& step : schedule) {
      const int64_t rows = step.rows;
      // h_prev is read where it already is (Note [Row layout and step schedule]): the previous
      // processed step's rows of `out`, hx at the first step, and both only where a reverse
      // packed step starts new sequences (rows > prev_rows): then joined into one buffer.
      Tensor h_prev;
      if (step.prev_rows >= rows) {
        h_prev = out.narrow(0, step.prev_row_offset, rows);
      } else if (step.prev_rows == 0) {
        h_prev = hx_acc.narrow(0, 0, rows);
      } else {
        if (!h_joined.defined()) h_joined = at::empty({B, P}, acc);
        h_joined.narrow(0, 0, step.prev_rows).copy_(out.narrow(0, step.prev_row_offset, step.prev_rows));
        h_joined.narrow(0, step.prev_rows, rows - step.prev_rows)
            .copy_(hx_acc.narrow(0, step.prev_rows, rows - step.prev_rows));
        h_prev = h_joined.narrow(0, 0, rows);
      }
      Tensor rec_rows = rec.narrow(0, 0, rows);
      if (bf16_gemms) {
        rec_rows.copy_(at::mm(h_prev.to(at::kBFloat16), w_hh_t));
      } else {
        at::mm_out(rec_rows, h_prev, w_hh_t);
      }
      const scalar_t* pre_p = pre.data_ptr<scalar_t>() + step.row_offset * 4 * H;
      const scalar_t* rec_p = rec.data_ptr<scalar_t>();
      const scalar_t* bias_p = bias.data_ptr<scalar_t>();
      scalar_t* c_p = c_state.data_ptr<scalar_t>();
      scalar_t* h_p = s.has_proj ? h_unprojected.data_ptr<scalar_t>()
                                 : out.data_ptr<scalar_t>() + step.row_offset * P;
      scalar_t* gates_p = save_workspace ? gates.data_ptr<scalar_t>() + step.row_offset * 4 * H : nullptr;
      scalar_t* cells_p = save_workspace ? cells.data_ptr<scalar_t>() + step.row_offset * H : nullptr;
      at::parallel_for(0, rows * chunks, grain_in_tasks(std::min(H, kHiddenChunk)),
                       [&](int64_t begin, int64_t end) {
        for (int64_t task = begin; task < end; ++task) {
          const int64_t b = task / chunks;
          const int64_t j0 = (task % chunks) * kHiddenChunk;
          forward_cells(pre_p + b * 4 * H, rec_p + b * 4 * H, bias_p, c_p + b * H, h_p + b * H,
                        gates_p ? gates_p + b * 4 * H : nullptr, cells_p ? cells_p + b * H : nullptr,
                        H, j0, std::min(H, j0 + kHiddenChunk));
        }
      });
      if (s.has_proj) {
        Tensor out_rows = out.narrow(0, step.row_offset, rows);
        at::mm_out(out_rows, h_unprojected.narrow(0, 0, rows), w_hr_t);
      }
    }
  });

  const Tensor output = out.to(dtype).view(per_token_shape(s, P));
  const Tensor hy = out.index_select(0, final_row_index(schedule, B, input.device())).to(dtype);
  return {output, hy, c_state.to(dtype), gates, cells};
}

void backward_pointwise_cpu(const kernels::StepRows& step, int64_t hidden, const Tensor& gates,
                            const Tensor& cells, const Tensor& cx, const Tensor& dh,
                            const Tensor& dc_carry, const Tensor& dgates) {
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
    at::parallel_for(0, step.rows * chunks, grain_in_tasks(std::min(H, kHiddenChunk)),
                     [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / chunks;
        const int64_t j0 = (task % chunks) * kHiddenChunk;
        const int64_t row = step.row_offset + b;
        // c_{t-1}: the previous processed step's row, or cx (Note [Row layout and step schedule]).
        const scalar_t* c_prev = b < step.prev_rows ? cells_p + (step.prev_row_offset + b) * H
                                                    : cx_p + b * H;
        backward_cells(gates_p + row * 4 * H, cells_p + row * H, c_prev, dh_p + b * dh.stride(0),
                       dc_p + b * H, dgates_p + row * 4 * H, H, j0, std::min(H, j0 + kHiddenChunk));
      }
    });
  });
}

BackwardResult lstm_layer_backward_cpu(
    const c10::optional<Tensor>& grad_output, const c10::optional<Tensor>& grad_hy,
    const c10::optional<Tensor>& grad_cy, const Tensor& input, const Tensor& hx, const Tensor& cx,
    const Tensor& weight_ih, const Tensor& weight_hh, const c10::optional<Tensor>& weight_hr,
    const c10::optional<Tensor>& batch_sizes, bool reverse, bool has_bias, const Tensor& output,
    const Tensor& gates, const Tensor& cells, std::array<bool, 2> output_mask) {
  return lstm_layer_backward_impl(grad_output, grad_hy, grad_cy, input, hx, cx, weight_ih,
                                  weight_hh, weight_hr, batch_sizes, reverse, has_bias, output,
                                  gates, cells, output_mask,
                                  {&backward_pointwise_cpu, nullptr,
                                   input.scalar_type() == at::kBFloat16 && use_bf16_gemms()});
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_lstm, CPU, m) {
  m.impl("lstm_layer_forward", &lstm_layer_forward_cpu);
  m.impl("lstm_layer_backward", &lstm_layer_backward_cpu);
}

}  // namespace fused_lstm
