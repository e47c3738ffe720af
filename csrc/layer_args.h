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

// Note [States with a layer dimension]
// Both ops take each state (hx, cx; grad_hy, grad_cy) either as (batch, width) or with a leading
// layer dimension of size one, (1, batch, width): the slice a one-layer, one-direction module
// holds. The results for states (hy, cy; grad_hx, grad_cx) come back in the shape hx and cx were
// given. A one-step module call then passes its states through as they are instead of viewing
// them in and out of the op in Python: four dispatches, ~3.5 us of a ~27 us T=1 call. Here the
// dimension is dropped and added by setting sizes and strides on tensor objects directly: even
// below autograd, select and unsqueeze_ through the dispatcher cost ~1.4 us for the four.
inline bool has_layer_dim(const Tensor& state) { return state.dim() == 3 && state.size(0) == 1; }
// A state given with its layer dimension as a (batch, width) tensor on the same memory.
inline Tensor without_layer_dim(const Tensor& state) {
  if (!has_layer_dim(state)) return state;
  Tensor alias =
      at::detail::make_tensor<c10::TensorImpl>(c10::Storage(state.storage()), state.key_set(), state.dtype());
  alias.unsafeGetTensorImpl()->set_sizes_and_strides(state.sizes().slice(1), state.strides().slice(1),
                                                     state.storage_offset());
  return alias;
}
inline c10::optional<Tensor> without_layer_dim(const c10::optional<Tensor>& state) {
  if (!state.has_value() || !state->defined()) return state;
  return without_layer_dim(*state);
}
// `result` (a fresh tensor of the kernel's, never a view: nn.LSTM's h_n and c_n are not, and
// `h_n.detach_()` works) given `like`'s layer dimension, if any, in place.
inline void match_layer_dim(Tensor& result, const Tensor& like) {
  if (!has_layer_dim(like) || result.dim() != 2) return;
  const int64_t sizes[3] = {1, result.size(0), result.size(1)};
  const int64_t strides[3] = {result.size(0) * result.stride(0), result.stride(0), result.stride(1)};
  result.unsafeGetTensorImpl()->set_sizes_and_strides(sizes, strides);
}

// The schema signatures, written once: a device registers forward_op<&its_forward>.
template <ForwardResult (*Impl)(const ForwardArgs&)>
ForwardResult forward_op(const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& weight_ih,
                         const Tensor& weight_hh, const c10::optional<Tensor>& bias_ih,
                         const c10::optional<Tensor>& bias_hh, const c10::optional<Tensor>& weight_hr,
                         const c10::optional<Tensor>& batch_sizes, bool reverse, bool save_workspace) {
  const Tensor hx_2d = without_layer_dim(hx), cx_2d = without_layer_dim(cx);
  ForwardResult result = Impl(ForwardArgs{input, hx_2d, cx_2d, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
                                          batch_sizes, reverse, save_workspace});
  match_layer_dim(std::get<1>(result), hx);
  match_layer_dim(std::get<2>(result), cx);
  return result;
}

template <BackwardResult (*Impl)(const BackwardArgs&)>
BackwardResult backward_op(const c10::optional<Tensor>& grad_output, const c10::optional<Tensor>& grad_hy,
                           const c10::optional<Tensor>& grad_cy, const Tensor& input, const Tensor& hx,
                           const Tensor& cx, const Tensor& weight_ih, const Tensor& weight_hh,
                           const c10::optional<Tensor>& weight_hr, const c10::optional<Tensor>& batch_sizes,
                           bool reverse, bool has_bias, const Tensor& output, const Tensor& gates, const Tensor& cells,
                           std::array<bool, 2> output_mask) {
  const Tensor hx_2d = without_layer_dim(hx), cx_2d = without_layer_dim(cx);
  const c10::optional<Tensor> grad_hy_2d = without_layer_dim(grad_hy), grad_cy_2d = without_layer_dim(grad_cy);
  BackwardResult result =
      Impl(BackwardArgs{grad_output, grad_hy_2d, grad_cy_2d, input, hx_2d, cx_2d, weight_ih, weight_hh, weight_hr,
                        batch_sizes, reverse, has_bias, output, gates, cells, output_mask});
  match_layer_dim(std::get<1>(result), hx);
  match_layer_dim(std::get<2>(result), cx);
  return result;
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
