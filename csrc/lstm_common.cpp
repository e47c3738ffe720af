#include "lstm_common.h"

#include <c10/util/irange.h>

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

}  // namespace

at::ScalarType opmath_type(at::ScalarType dtype) { return dtype == at::kDouble ? at::kDouble : at::kFloat; }

LayerShape check_layer_arguments(const char* op, const Tensor& input, const Tensor& hx, const Tensor& cx,
                                 const Tensor& weight_ih, const Tensor& weight_hh, const c10::optional<Tensor>& bias_ih,
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

  check_dims(op, "hx", hx, 2, "(batch, proj_size or hidden_size)");
  check_like_input(op, "hx", hx, input);
  check_shape(op, "hx", hx, {s.batch, s.proj}, "(batch, proj_size or hidden_size)");
  check_dims(op, "cx", cx, 2, "(batch, hidden_size)");
  check_like_input(op, "cx", cx, input);
  check_shape(op, "cx", cx, {s.batch, s.hidden}, "(batch, hidden_size)");
  return s;
}

std::vector<StepRows> make_step_schedule(const LayerShape& shape, const c10::optional<Tensor>& batch_sizes,
                                         bool reverse) {
  std::vector<int64_t> offsets(shape.steps), rows(shape.steps);
  if (shape.packed) {
    const Tensor bs = batch_sizes->contiguous();
    const int64_t* sizes = bs.data_ptr<int64_t>();
    int64_t offset = 0;
    for (const auto t : c10::irange(shape.steps)) {
      offsets[t] = offset;
      rows[t] = sizes[t];
      offset += sizes[t];
    }
  } else {
    for (const auto t : c10::irange(shape.steps)) {
      offsets[t] = t * shape.batch;
      rows[t] = shape.batch;
    }
  }
  std::vector<StepRows> schedule;
  schedule.reserve(shape.steps);
  int64_t prev_offset = 0, prev_rows = 0;
  for (const auto k : c10::irange(shape.steps)) {
    const int64_t t = reverse ? shape.steps - 1 - k : k;
    schedule.push_back({offsets[t], rows[t], prev_offset, prev_rows});
    prev_offset = offsets[t];
    prev_rows = rows[t];
  }
  return schedule;
}

Tensor host_index_buffer(at::IntArrayRef sizes, at::Device device) {
  return at::empty(sizes, at::TensorOptions(at::kLong).pinned_memory(device.is_cuda()));
}

Tensor final_row_index(const std::vector<StepRows>& schedule, int64_t batch, at::Device device) {
  Tensor index = host_index_buffer({batch}, device);
  int64_t* last = index.data_ptr<int64_t>();
  for (const auto& step : schedule) {
    for (const auto b : c10::irange(step.rows)) last[b] = step.row_offset + b;
  }
  return index.to(device, /*non_blocking=*/true);
}

Tensor first_row_index(const std::vector<StepRows>& schedule, int64_t batch, at::Device device) {
  Tensor index = host_index_buffer({batch}, device).fill_(-1);
  int64_t* first = index.data_ptr<int64_t>();
  for (const auto& step : schedule) {
    for (const auto b : c10::irange(step.rows)) {
      if (first[b] < 0) first[b] = step.row_offset + b;
    }
  }
  return index.to(device, /*non_blocking=*/true);
}

Tensor previous_row_index(const std::vector<StepRows>& schedule, int64_t tokens, int64_t batch, at::Device device) {
  Tensor index = host_index_buffer({tokens}, device);
  int64_t* source = index.data_ptr<int64_t>();
  for (const auto& step : schedule) {
    for (const auto b : c10::irange(step.rows)) {
      source[step.row_offset + b] = b < step.prev_rows ? batch + step.prev_row_offset + b : b;
    }
  }
  return index.to(device, /*non_blocking=*/true);
}

std::vector<int64_t> per_token_shape(const LayerShape& shape, int64_t width) {
  if (shape.packed) return {shape.tokens, width};
  return {shape.steps, shape.batch, width};
}

ForwardResult forward_without_tokens(const LayerShape& shape, const Tensor& input, const Tensor& hx, const Tensor& cx,
                                     bool save_workspace) {
  const auto workspace = input.options().dtype(opmath_type(input.scalar_type()));
  auto workspace_of_width = [&](int64_t width) {
    return save_workspace ? at::empty(per_token_shape(shape, width), workspace) : at::empty({0}, workspace);
  };
  return {at::empty(per_token_shape(shape, shape.proj), input.options()), hx.clone(), cx.clone(),
          workspace_of_width(4 * shape.hidden), workspace_of_width(shape.hidden)};
}

BackwardResult lstm_layer_backward_impl(const c10::optional<Tensor>& grad_output, const c10::optional<Tensor>& grad_hy,
                                        const c10::optional<Tensor>& grad_cy, const Tensor& input, const Tensor& hx,
                                        const Tensor& cx, const Tensor& weight_ih, const Tensor& weight_hh,
                                        const c10::optional<Tensor>& weight_hr,
                                        const c10::optional<Tensor>& batch_sizes, bool reverse, bool has_bias,
                                        const Tensor& output, const Tensor& gates, const Tensor& cells,
                                        std::array<bool, 2> output_mask, BackwardKernels kernels) {
  constexpr const char* op = "fused_lstm.lstm_layer_backward";
  // Below autograd (double backward goes through the autograd Function, not these internals).
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const LayerShape s = check_layer_arguments(op, input, hx, cx, weight_ih, weight_hh, c10::nullopt, c10::nullopt,
                                             weight_hr, batch_sizes);
  const int64_t N = s.tokens, B = s.batch, H = s.hidden, P = s.proj;
  const auto dtype = input.scalar_type();
  const auto acc = input.options().dtype(opmath_type(dtype));
  const auto with_dtype = input.options();

  auto defined = [](const c10::optional<Tensor>& t) { return t.has_value() && t->defined(); };
  auto check_grad = [&](const char* name, const c10::optional<Tensor>& g, at::IntArrayRef shape) {
    if (!defined(g)) return;
    TORCH_CHECK(g->sizes() == shape, op, ": expected ", name, " of shape ", shape, ", got ", g->sizes());
    TORCH_CHECK(g->device() == input.device(), op, ": expected ", name, " on ", input.device());
  };
  const auto out_shape = per_token_shape(s, P);
  check_grad("grad_output", grad_output, out_shape);
  check_grad("grad_hy", grad_hy, {B, P});
  check_grad("grad_cy", grad_cy, {B, H});
  TORCH_CHECK(output.sizes() == at::IntArrayRef(out_shape), op, ": expected output of shape ",
              at::IntArrayRef(out_shape), ", got ", output.sizes());
  // The dispatcher picks the kernel from any argument's device: a workspace left on another
  // device would otherwise reach this device's kernels as a foreign pointer.
  for (const auto& [name, t] :
       {std::pair<const char*, const Tensor&>{"output", output}, std::pair<const char*, const Tensor&>{"gates", gates},
        std::pair<const char*, const Tensor&>{"cells", cells}}) {
    TORCH_CHECK(t.device() == input.device(), op, ": expected ", name, " on the device of input (", input.device(),
                "), got ", t.device());
  }

  const bool want_input = output_mask[0], want_weights = output_mask[1];
  // Results not asked for (output_mask) or not applicable (no bias, no projection) are empty,
  // each its own tensor (outputs of an op must not alias).
  auto nothing = [&] { return at::empty({0}, with_dtype); };
  Tensor grad_input = nothing(), grad_w_ih = nothing(), grad_w_hh = nothing(), grad_bias = nothing(),
         grad_w_hr = nothing();
  if (N == 0) {  // nothing ran: the states pass their gradients through, weights get zeros
    auto zeros_like = [](const Tensor& t) { return at::zeros_like(t, at::MemoryFormat::Contiguous); };
    if (want_input) grad_input = zeros_like(input);
    if (want_weights) {
      grad_w_ih = zeros_like(weight_ih);
      grad_w_hh = zeros_like(weight_hh);
      if (has_bias) grad_bias = at::zeros({4 * H}, with_dtype);
      if (s.has_proj) grad_w_hr = zeros_like(*weight_hr);
    }
    return {grad_input,
            defined(grad_hy) ? grad_hy->clone() : zeros_like(hx),
            defined(grad_cy) ? grad_cy->clone() : zeros_like(cx),
            grad_w_ih,
            grad_w_hh,
            grad_bias,
            grad_w_hr};
  }
  TORCH_CHECK(gates.numel() == N * 4 * H && cells.numel() == N * H, op,
              ": gates/cells workspace missing or of the wrong size: run lstm_layer_forward with "
              "save_workspace=True (got ",
              gates.sizes(), " and ", cells.sizes(), ")");
  TORCH_CHECK(gates.scalar_type() == acc.dtype() && cells.scalar_type() == acc.dtype(), op,
              ": expected gates and cells of dtype ", acc.dtype());
  const Tensor gates_2d = gates.reshape({N, 4 * H}).contiguous();
  const Tensor cells_2d = cells.reshape({N, H}).contiguous();

  auto temporary = [&](at::IntArrayRef sizes, at::ScalarType type) {
    return kernels.temporary ? kernels.temporary(sizes, type) : at::empty(sizes, with_dtype.dtype(type));
  };
  const auto acc_type = acc.dtype().toScalarType();
  // dh_total: gradient reaching each step's h (projected h when P != H). Starts as grad_output;
  // each step adds the carry from the step after it.
  Tensor dh_total = temporary({N, P}, acc_type);
  if (defined(grad_output)) {
    dh_total.copy_(grad_output->reshape({N, P}));
  } else {
    dh_total.zero_();
  }
  Tensor dh_carry = at::zeros({B, P}, acc);
  if (defined(grad_hy)) dh_carry.copy_(*grad_hy);
  Tensor dc_carry = at::zeros({B, H}, acc);
  if (defined(grad_cy)) dc_carry.copy_(*grad_cy);
  const Tensor cx_acc = cx.to(acc.dtype()).contiguous();
  const Tensor w_hh_acc = weight_hh.to(acc.dtype());
  const Tensor w_hr_acc = s.has_proj ? weight_hr->to(acc.dtype()) : Tensor();
  Tensor dr = s.has_proj ? at::empty({B, H}, acc) : Tensor();
  Tensor dgates = temporary({N, 4 * H}, acc_type);

  const auto schedule = make_step_schedule(s, batch_sizes, reverse);
  // dgates in the input dtype for input-dtype GEMMs: filled by a fused recurrence, else rounded
  // from dgates below.
  const Tensor dgates_rounded = kernels.input_dtype_gemms ? temporary({N, 4 * H}, dtype) : Tensor();
  const bool fused =
      !s.has_proj && kernels.fused_recurrence != nullptr &&
      kernels.fused_recurrence(BackwardRecurrenceArgs{
          schedule, B, H, weight_hh, defined(grad_output) ? dh_total : Tensor(), defined(grad_hy) ? dh_carry : Tensor(),
          gates_2d, cells_2d, cx_acc, dc_carry, dgates, dgates_rounded});
  if (fused) {
    // The kernel consumed the carries inside; what reaches hx is the first processed step's.
    dh_carry = at::mm(dgates.index_select(0, first_row_index(schedule, B, input.device())), w_hh_acc);
  } else {
    for (auto it = schedule.rbegin(); it != schedule.rend(); ++it) {
      const StepRows& step = *it;
      Tensor dh = dh_total.narrow(0, step.row_offset, step.rows);
      dh.add_(dh_carry.narrow(0, 0, step.rows));
      if (s.has_proj) {
        Tensor dr_rows = dr.narrow(0, 0, step.rows);
        at::mm_out(dr_rows, dh, w_hr_acc);  // [rows, P] x [P, H]
        dh = dr_rows;
      }
      kernels.pointwise(step, H, gates_2d, cells_2d, cx_acc, dh, dc_carry, dgates);
      Tensor carry_rows = dh_carry.narrow(0, 0, step.rows);
      const Tensor step_dgates = dgates.narrow(0, step.row_offset, step.rows);
      if (kernels.input_dtype_gemms) {
        carry_rows.copy_(at::mm(step_dgates.to(dtype), weight_hh));
      } else {
        at::mm_out(carry_rows, step_dgates, w_hh_acc);  // [rows,4H]x[4H,P]
      }
    }
  }

  // The large GEMMs, in the opmath type or (input_dtype_gemms) in the input dtype.
  const auto gemm_dtype = kernels.input_dtype_gemms ? dtype : acc_type;
  Tensor dgates_gemm = dgates;
  if (gemm_dtype != acc_type) {
    dgates_gemm = dgates_rounded;
    if (!fused) dgates_gemm.copy_(dgates);
  }
  if (want_input) {
    grad_input = kernels.linear != nullptr
                     ? kernels.linear(dgates_gemm, weight_ih.to(gemm_dtype).t().contiguous(), Tensor())
                     : at::mm(dgates_gemm, weight_ih.to(gemm_dtype));
    grad_input = grad_input.to(dtype).view(input.sizes());
  }
  if (want_weights) {
    const Tensor dgates_t = dgates_gemm.t();
    grad_w_ih = at::mm(dgates_t, input.reshape({N, s.input}).to(gemm_dtype)).to(dtype);
    // h_prev of every token: rows of [hx; output] (Note [Row layout and step schedule]).
    Tensor h_sources = temporary({B + N, P}, gemm_dtype);
    h_sources.narrow(0, 0, B).copy_(hx);
    h_sources.narrow(0, B, N).copy_(output.reshape({N, P}));
    Tensor h_prev = temporary({N, P}, gemm_dtype);
    at::index_select_out(h_prev, h_sources, 0, previous_row_index(schedule, N, B, input.device()));
    grad_w_hh = at::mm(dgates_t, h_prev).to(dtype);
    if (has_bias) grad_bias = dgates.sum(0).to(dtype);
    if (s.has_proj) {
      const Tensor h_unprojected = gates_2d.narrow(1, 3 * H, H) * cells_2d.tanh();  // o * tanh(c)
      grad_w_hr = at::mm(dh_total.t(), h_unprojected).to(dtype);
    }
  }
  return {grad_input, dh_carry.to(dtype), dc_carry.to(dtype), grad_w_ih, grad_w_hh, grad_bias, grad_w_hr};
}

}  // namespace fused_lstm
