#include "layer_args.h"

#include <c10/util/irange.h>

#include <utility>

namespace fused_lstm {
namespace {

bool is_supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// Same dtype (ValueError, as nn.LSTM's dtype errors) and same device (RuntimeError) as input.
void check_like_input(const char* op, const char* name, const Tensor& t, const Tensor& input) {
  TORCH_CHECK_VALUE(t.scalar_type() == input.scalar_type(), op, ": expected ", name, " to have the dtype of input (",
                    input.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK(t.device() == input.device(), op, ": expected ", name, " on the device of input (", input.device(),
              "), got ", t.device());
}

void check_dims(const char* op, const char* name, const Tensor& t, int64_t dims, const char* layout) {
  TORCH_CHECK_VALUE(t.dim() == dims, op, ": expected ", name, " with ", dims, " dims ", layout, ", got ", t.dim(),
                    " dims (shape ", t.sizes(), ")");
}

void check_shape(const char* op, const char* name, const Tensor& t, at::IntArrayRef expected, const char* layout) {
  TORCH_CHECK(t.sizes() == expected, op, ": expected ", name, " of shape ", expected, " ", layout, ", got ", t.sizes());
}

// The layer's own arguments (shared by both ops); `op` names the op in the messages.
LayerShape check_layer(const char* op, const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& weight_ih,
                       const Tensor& weight_hh, const c10::optional<Tensor>& bias_ih,
                       const c10::optional<Tensor>& bias_hh, const c10::optional<Tensor>& weight_hr,
                       const c10::optional<Tensor>& batch_sizes) {
  LayerShape s{};
  s.packed = batch_sizes.has_value() && batch_sizes->defined();
  if (s.packed) {
    check_dims(op, "input", input, 2, "(N, I) for packed input");
  } else {
    check_dims(op, "input", input, 3, "(T, B, I)");
  }
  TORCH_CHECK_VALUE(is_supported_dtype(input.scalar_type()), op,
                    ": expected input of dtype float32, float64, float16 or bfloat16, got ", input.scalar_type());
  s.input = input.size(-1);

  check_dims(op, "weight_hh", weight_hh, 2, "(4*hidden_size, proj_size or hidden_size)");
  check_like_input(op, "weight_hh", weight_hh, input);
  TORCH_CHECK(weight_hh.size(0) > 0 && weight_hh.size(0) % 4 == 0, op,
              ": expected weight_hh.size(0) to be 4*hidden_size > 0 (gates i, f, g, o), got ", weight_hh.size(0));
  s.hidden = weight_hh.size(0) / 4;
  s.has_proj = weight_hr.has_value() && weight_hr->defined();
  if (s.has_proj) {
    check_dims(op, "weight_hr", *weight_hr, 2, "(proj_size, hidden_size)");
    check_like_input(op, "weight_hr", *weight_hr, input);
    TORCH_CHECK(weight_hr->size(1) == s.hidden && weight_hr->size(0) > 0, op,
                ": expected weight_hr of shape (proj_size, ", s.hidden, "), got ", weight_hr->sizes());
    s.proj = weight_hr->size(0);
  } else {
    s.proj = s.hidden;
  }
  check_shape(op, "weight_hh", weight_hh, {4 * s.hidden, s.proj}, "(4*hidden_size, proj_size or hidden_size)");
  check_dims(op, "weight_ih", weight_ih, 2, "(4*hidden_size, input_size)");
  check_like_input(op, "weight_ih", weight_ih, input);
  check_shape(op, "weight_ih", weight_ih, {4 * s.hidden, s.input}, "(4*hidden_size, input_size)");

  const bool has_ih = bias_ih.has_value() && bias_ih->defined();
  const bool has_hh = bias_hh.has_value() && bias_hh->defined();
  TORCH_CHECK(has_ih == has_hh, op, ": expected bias_ih and bias_hh both given or both None");
  s.has_bias = has_ih;
  if (s.has_bias) {
    for (const auto& [name, bias] : {std::pair<const char*, const Tensor&>{"bias_ih", *bias_ih},
                                     std::pair<const char*, const Tensor&>{"bias_hh", *bias_hh}}) {
      check_like_input(op, name, bias, input);
      check_shape(op, name, bias, {4 * s.hidden}, "(4*hidden_size)");
    }
  }

  if (s.packed) {
    const Tensor& bs = *batch_sizes;
    TORCH_CHECK(bs.dim() == 1 && bs.scalar_type() == at::kLong && bs.device().is_cpu(), op,
                ": expected batch_sizes to be a 1-D int64 CPU tensor (PackedSequence.batch_sizes), got ", bs.dim(),
                "-D ", bs.scalar_type(), " on ", bs.device());
    TORCH_CHECK(bs.numel() > 0, op, ": expected a non-empty batch_sizes");
    const Tensor bs_c = bs.contiguous();
    const int64_t* sizes = bs_c.data_ptr<int64_t>();
    int64_t total = 0;
    for (const auto t : c10::irange(bs.numel())) {
      TORCH_CHECK(sizes[t] > 0, op, ": expected batch_sizes to be positive, got batch_sizes[", t, "] = ", sizes[t]);
      TORCH_CHECK(t == 0 || sizes[t] <= sizes[t - 1], op,
                  ": expected non-increasing batch_sizes (sequences sorted by length), got batch_sizes[", t,
                  "] = ", sizes[t], " > batch_sizes[", t - 1, "] = ", sizes[t - 1]);
      // Checked before adding, so the running sum never overflows whatever the values are.
      TORCH_CHECK(sizes[t] <= input.size(0) - total, op, ": expected sum(batch_sizes) == input.size(0) (",
                  input.size(0), " packed rows), but batch_sizes[", t, "] = ", sizes[t], " runs past them");
      total += sizes[t];
    }
    TORCH_CHECK(total == input.size(0), op, ": expected sum(batch_sizes) == input.size(0), got ", total, " and ",
                input.size(0));
    s.steps = bs.numel();
    s.batch = sizes[0];
    s.tokens = total;
  } else {
    s.steps = input.size(0);
    s.batch = input.size(1);
    s.tokens = s.steps * s.batch;
  }

  // (A leading layer dimension of size one is gone by now: Note [States with a layer dimension].)
  check_dims(op, "hx", hx, 2, "(batch, proj_size or hidden_size), or (1, batch, proj_size or hidden_size)");
  check_like_input(op, "hx", hx, input);
  check_shape(op, "hx", hx, {s.batch, s.proj}, "(batch, proj_size or hidden_size)");
  check_dims(op, "cx", cx, 2, "(batch, hidden_size), or (1, batch, hidden_size)");
  check_like_input(op, "cx", cx, input);
  check_shape(op, "cx", cx, {s.batch, s.hidden}, "(batch, hidden_size)");
  return s;
}

}  // namespace

at::ScalarType opmath_type(at::ScalarType dtype) { return dtype == at::kDouble ? at::kDouble : at::kFloat; }

LayerShape check_forward_arguments(const ForwardArgs& a) {
  return check_layer("fused_lstm.lstm_layer_forward", a.input, a.hx, a.cx, a.weight_ih, a.weight_hh, a.bias_ih,
                     a.bias_hh, a.weight_hr, a.batch_sizes);
}

LayerShape check_backward_arguments(const BackwardArgs& a) {
  constexpr const char* op = "fused_lstm.lstm_layer_backward";
  // The biases are not arguments of the backward (their gradient is the sum of dgates).
  const LayerShape s = check_layer(op, a.input, a.hx, a.cx, a.weight_ih, a.weight_hh, c10::nullopt, c10::nullopt,
                                   a.weight_hr, a.batch_sizes);
  auto check_grad = [&](const char* name, const c10::optional<Tensor>& g, at::IntArrayRef shape) {
    if (!is_defined(g)) return;
    TORCH_CHECK(g->sizes() == shape, op, ": expected ", name, " of shape ", shape, ", got ", g->sizes());
    TORCH_CHECK(g->device() == a.input.device(), op, ": expected ", name, " on ", a.input.device());
  };
  const auto out_shape = per_token_shape(s, s.proj);
  check_grad("grad_output", a.grad_output, out_shape);
  check_grad("grad_hy", a.grad_hy, {s.batch, s.proj});
  check_grad("grad_cy", a.grad_cy, {s.batch, s.hidden});
  TORCH_CHECK(a.output.sizes() == at::IntArrayRef(out_shape), op, ": expected output of shape ",
              at::IntArrayRef(out_shape), ", got ", a.output.sizes());
  // The dispatcher picks the kernel from any argument's device: a workspace left on another
  // device would otherwise reach this device's kernels as a foreign pointer.
  for (const auto& [name, t] : {std::pair<const char*, const Tensor&>{"output", a.output},
                                std::pair<const char*, const Tensor&>{"gates", a.gates},
                                std::pair<const char*, const Tensor&>{"cells", a.cells}}) {
    TORCH_CHECK(t.device() == a.input.device(), op, ": expected ", name, " on the device of input (", a.input.device(),
                "), got ", t.device());
  }
  if (s.tokens == 0) return s;  // nothing ran forward: no workspace to check
  TORCH_CHECK(a.gates.numel() == s.tokens * 4 * s.hidden && a.cells.numel() == s.tokens * s.hidden, op,
              ": gates/cells workspace missing or of the wrong size: run lstm_layer_forward with "
              "save_workspace=True (got ",
              a.gates.sizes(), " and ", a.cells.sizes(), ")");
  const auto acc_type = opmath_type(a.input.scalar_type());
  TORCH_CHECK(a.gates.scalar_type() == acc_type && a.cells.scalar_type() == acc_type, op,
              ": expected gates and cells of dtype ", acc_type);
  return s;
}

std::vector<int64_t> per_token_shape(const LayerShape& shape, int64_t width) {
  if (shape.packed) return {shape.tokens, width};
  return {shape.steps, shape.batch, width};
}

ForwardResult forward_without_tokens(const LayerShape& shape, const ForwardArgs& args) {
  const auto workspace = args.input.options().dtype(opmath_type(args.input.scalar_type()));
  auto workspace_of_width = [&](int64_t width) {
    return args.save_workspace ? at::empty(per_token_shape(shape, width), workspace) : at::empty({0}, workspace);
  };
  return {at::empty(per_token_shape(shape, shape.proj), args.input.options()), args.hx.clone(), args.cx.clone(),
          workspace_of_width(4 * shape.hidden), workspace_of_width(shape.hidden)};
}

}  // namespace fused_lstm
