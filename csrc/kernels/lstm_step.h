// The per-step contract between the ATen glue and the kernels (CPU and CUDA). Torch-free.
//
// Note [Row layout and step schedule]
// Every per-token buffer is a 2-D row-major matrix with one row per (time step, batch row):
// padded input [T, B, X] is viewed as [T*B, X]; packed input is PackedSequence.data, [N, X].
// Step t owns rows [row_offset, row_offset + rows), where rows = batch_sizes[t] (B when not
// packed). Because batch_sizes never increases, the rows active at a step are always the first
// `rows` batch rows, so one schedule serves padded and packed input and both directions:
//   * forward direction processes t = 0, 1, ..., T-1;
//   * reverse direction processes t = T-1, ..., 0, and a packed sequence b starts at its own last
//     step (the first processed step with rows > b).
// A batch row b at a step reads its previous hidden state from the previously *processed* step's
// row if that step had it (b < prev_rows), else from the initial state hx/cx. Rows not active at
// a step keep their state, which is why the final state of each sequence is where it stopped.
#pragma once

#include <cstdint>

#include "kernels/lstm_math.h"

namespace fused_lstm {
namespace kernels {

struct StepRows {
  int64_t row_offset;       // first row of this step in the [N, .] buffers
  int64_t rows;             // batch rows active at this step (batch_sizes[t])
  int64_t prev_row_offset;  // first row of the previously processed step
  int64_t prev_rows;        // rows of the previously processed step; 0 at the first step
};

// One fused forward step (CUDA): gates = input_proj[row] + b_ih + b_hh + h_prev · W_hhᵀ, the cell
// update, and the writes of h (or of the unprojected h when a projection follows).
template <typename scalar_t, typename acc_t>
struct ForwardStepParams {
  StepRows step;
  int64_t hidden;              // H
  int64_t proj;                // P: width of h (== H without projection)
  const scalar_t* input_proj;  // [N, 4H]  x · W_ihᵀ for all steps (biases not included)
  const scalar_t* bias_ih;     // [4H] or nullptr
  const scalar_t* bias_hh;     // [4H] or nullptr
  const scalar_t* weight_hh;   // [4H, P], row-major
  const scalar_t* hx;          // [B, P] initial hidden state
  scalar_t* output;            // [N, P]: reads the previous step's rows, writes this step's
  acc_t* c_state;              // [B, H] cell state, updated in place (fp32 for half types)
  acc_t* gates_ws;             // [N, 4H] activated gates, or nullptr when not training
  acc_t* cells_ws;             // [N, H] c_t, or nullptr when not training
  scalar_t* h_unprojected;     // [B, H] o * tanh(c) when a projection follows, else nullptr
};

// Where batch row b reads h_{prev}[b, k] from: the previous processed step, or hx.
template <typename scalar_t, typename acc_t>
FUSED_LSTM_HD const scalar_t* previous_h_row(const ForwardStepParams<scalar_t, acc_t>& p, int64_t b) {
  return b < p.step.prev_rows ? p.output + (p.step.prev_row_offset + b) * p.proj : p.hx + b * p.proj;
}

// The pointwise part of the backward recurrence for one step.
template <typename acc_t>
struct BackwardPointwiseParams {
  StepRows step;
  int64_t hidden;      // H
  const acc_t* gates;  // [N, 4H] saved activated gates
  const acc_t* cells;  // [N, H] saved c_t
  const acc_t* cx;     // [B, H] initial cell state
  const acc_t* dh;     // [rows, H], row stride dh_stride: gradient reaching o * tanh(c)
  int64_t dh_stride;
  acc_t* dc_carry;  // [B, H] in: gradient reaching c_t; out: gradient reaching c_{t-1}
  acc_t* dgates;    // [N, 4H] out: gradients of the pre-activations
};

// Backward of one cell (batch row b of `step`, hidden unit j), given dh, the total gradient
// reaching its o * tanh(c). Shared by CPU and CUDA.
template <typename acc_t>
FUSED_LSTM_HD void backward_cell(const BackwardPointwiseParams<acc_t>& p, const StepRows& step, int64_t b, int64_t j,
                                 acc_t dh) {
  const int64_t H = p.hidden;
  const int64_t row = step.row_offset + b;
  const acc_t* g = p.gates + row * kNumGates * H;
  const Gates<acc_t> a{g[j], g[H + j], g[2 * H + j], g[3 * H + j]};
  const acc_t c = p.cells[row * H + j];
  const acc_t c_prev = b < step.prev_rows ? p.cells[(step.prev_row_offset + b) * H + j] : p.cx[b * H + j];
  acc_t d_pre[kNumGates];
  p.dc_carry[b * H + j] = cell_backward(a, c, c_prev, dh, p.dc_carry[b * H + j], d_pre);
  acc_t* dg = p.dgates + row * kNumGates * H;
  dg[j] = d_pre[0];
  dg[H + j] = d_pre[1];
  dg[2 * H + j] = d_pre[2];
  dg[3 * H + j] = d_pre[3];
}

// The same, reading dh from p.dh (the per-step pointwise kernels).
template <typename acc_t>
FUSED_LSTM_HD void backward_pointwise_element(const BackwardPointwiseParams<acc_t>& p, int64_t b, int64_t j) {
  backward_cell(p, p.step, b, j, p.dh[b * p.dh_stride + j]);
}

// The fused backward recurrence without projection (CUDA): per step, for its (b, j) cells, a
// block computes the carry dh[b, j] = dgates[next step's row b, :] · W_hh[:, j] (the gradient
// that the next processed step sends back to this step's h), adds grad_output, and runs
// backward_cell. Rows with no next step (the sequence ended here) take grad_hy instead.
template <typename scalar_t, typename acc_t>
struct BackwardSequenceParams {
  const StepRows* schedule;  // [num_steps], forward processing order (device memory)
  int64_t num_steps;
  const scalar_t* weight_hh;            // [4H, H]
  const acc_t* grad_output;             // [N, H] or nullptr
  const acc_t* grad_hy;                 // [B, H] or nullptr
  BackwardPointwiseParams<acc_t> cell;  // gates, cells, cx, dc_carry, dgates (step, dh unused)
};

}  // namespace kernels
}  // namespace fused_lstm
