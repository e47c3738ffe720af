// The layer ops' arguments as structs, their one set of checks, and the sizes they imply.
//
// Every device kernel of an op has the schema's signature (Note [Op schemas] in lstm_ops.cpp),
// which the dispatcher calls. Each is written once, in `forward_op` / `backward_op` below, which
// gather the arguments into ForwardArgs / BackwardArgs and call the device's implementation; all
// code below them passes the struct. The checks here are the only full ones: every route (the
// modules, the functional API, torch.ops called directly) reaches them.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <tuple>
#include <vector>

namespace fused_lstm {

using at::Tensor;

// lstm_layer_forward's arguments, in schema order (references to the caller's values: a
// ForwardArgs lives no longer than the op call that made it).
struct ForwardArgs {
  const Tensor& input;  // [T, B, I], or [N, I] when packed
  const Tensor& hx;     // [B, P]
  const Tensor& cx;     // [B, H]
  const Tensor& weight_ih;
  const Tensor& weight_hh;
  const c10::optional<Tensor>& bias_ih;
  const c10::optional<Tensor>& bias_hh;
  const c10::optional<Tensor>& weight_hr;
  const c10::optional<Tensor>& batch_sizes;  // PackedSequence.batch_sizes, or none
  bool reverse;
  bool save_workspace;  // return gates and cells (training)
};

// lstm_layer_backward's arguments, in schema order.
struct BackwardArgs {
  const c10::optional<Tensor>& grad_output;
  const c10::optional<Tensor>& grad_hy;
  const c10::optional<Tensor>& grad_cy;
  const Tensor& input;
  const Tensor& hx;
  const Tensor& cx;
  const Tensor& weight_ih;
  const Tensor& weight_hh;
  const c10::optional<Tensor>& weight_hr;
  const c10::optional<Tensor>& batch_sizes;
  bool reverse;
  bool has_bias;
  const Tensor& output;  // the forward's outputs and workspace
  const Tensor& gates;
  const Tensor& cells;
  std::array<bool, 2> output_mask;  // {grad_input, weight gradients}
};

using ForwardResult = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;
using BackwardResult = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

// The schema signatures, written once: a device registers forward_op<&its_forward>.
template <ForwardResult (*Impl)(const ForwardArgs&)>
ForwardResult forward_op(const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& weight_ih,
                         const Tensor& weight_hh, const c10::optional<Tensor>& bias_ih,
                         const c10::optional<Tensor>& bias_hh, const c10::optional<Tensor>& weight_hr,
                         const c10::optional<Tensor>& batch_sizes, bool reverse, bool save_workspace) {
  return Impl(ForwardArgs{input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, batch_sizes, reverse,
                          save_workspace});
}

template <BackwardResult (*Impl)(const BackwardArgs&)>
BackwardResult backward_op(const c10::optional<Tensor>& grad_output, const c10::optional<Tensor>& grad_hy,
                           const c10::optional<Tensor>& grad_cy, const Tensor& input, const Tensor& hx,
                           const Tensor& cx, const Tensor& weight_ih, const Tensor& weight_hh,
                           const c10::optional<Tensor>& weight_hr, const c10::optional<Tensor>& batch_sizes,
                           bool reverse, bool has_bias, const Tensor& output, const Tensor& gates, const Tensor& cells,
                           std::array<bool, 2> output_mask) {
  return Impl(BackwardArgs{grad_output, grad_hy, grad_cy, input, hx, cx, weight_ih, weight_hh, weight_hr, batch_sizes,
                           reverse, has_bias, output, gates, cells, output_mask});
}

// Sizes of one layer call, after the checks. See Note [Row layout and step schedule].
struct LayerShape {
  int64_t steps;   // T
  int64_t batch;   // B (batch_sizes[0] when packed)
  int64_t input;   // I
  int64_t hidden;  // H
  int64_t proj;    // P (== H without projection)
  int64_t tokens;  // N = rows of every per-token buffer
  bool packed;
  bool has_bias;
  bool has_proj;
};

// Validates every argument and returns the sizes. Errors name the op and the argument:
// ValueError for dims/dtypes, RuntimeError for the rest.
LayerShape check_forward_arguments(const ForwardArgs& args);
// The forward's checks on the layer's arguments, then the gradients' and the workspace's.
LayerShape check_backward_arguments(const BackwardArgs& args);

inline bool is_defined(const c10::optional<Tensor>& t) { return t.has_value() && t->defined(); }

// float for reduced-precision inputs, double for double: the arithmetic and workspace dtype.
at::ScalarType opmath_type(at::ScalarType dtype);

// Output shapes for one call: [T, B, X] when padded, [N, X] when packed.
std::vector<int64_t> per_token_shape(const LayerShape& shape, int64_t width);

// The forward's results for a call with no tokens (T = 0 or B = 0): output empty, states unchanged.
ForwardResult forward_without_tokens(const LayerShape& shape, const ForwardArgs& args);

}  // namespace fused_lstm
