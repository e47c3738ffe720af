// Both directions of a bidirectional CPU layer in one call, one direction per thread where that
// is measured faster (Note [Concurrent directions on CPU]).
#include "cpu/lstm_cpu_directions.h"

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>
#include <sstream>
#include <string>

#include "cpu/gemm_choice.h"

namespace fused_lstm {
namespace cpu {
namespace {

// Note [Concurrent directions on CPU]
// The two directions of a bidirectional layer share only their input. Run one after the other,
// each direction's steps are split over the thread team, which meets at a barrier every step:
// at small batches that barrier, and the team's threads sharing each step's few microseconds of
// products, are a large part of the step. Run concurrently, each direction has a core of its own
// and no barrier at all. Measured on a 2-core AMD EPYC (Zen 4), fp32, each way pinned in
// alternating processes: T=50 B=8 I=300 H=200 inference 3.73 -> 3.47 ms, forward+backward
// 12.86 -> 11.59; T=100 B=1 I=H=256 forward+backward 6.17 -> 5.67; T=100 B=64 I=H=512 no gain
// (one direction's weights and products per core then stream no better). Which one runs is measured per shape class
// (fastest_candidate, Note [Measured GEMM choice on CPU]); FUSED_LSTM_CPU_DIRECTIONS=sequential|concurrent pins it. In
// the concurrent runs each call is one task of an at::parallel_for over the two directions: inside it ATen's and the
// layers' own parallel loops run inline (at::in_parallel_region()), as do oneDNN's and MKL's
// (nested OpenMP). The worker threads take the caller's thread-local state (grad mode,
// autocast, dispatch exclusions); the ops are called below autograd (the Python caller is the
// autograd node).
template <typename Result>
std::array<Result, 2> run_directions(const std::string& shape_class, const std::function<Result(int)>& call) {
  std::array<std::optional<Result>, 2> results;
  auto one_after_the_other = [&] {
    for (int d = 0; d < 2; ++d) results[d] = call(d);
  };
  const at::ThreadLocalState caller_state;
  auto concurrently = [&] {
    at::parallel_for(0, 2, 1, [&](int64_t begin, int64_t end) {
      const at::ThreadLocalStateGuard state(caller_state);
      for (int64_t d = begin; d < end; ++d) results[d] = call(static_cast<int>(d));
    });
  };
  if (at::get_num_threads() < 2 || at::in_parallel_region()) {
    one_after_the_other();
  } else {
    const int chosen = fastest_candidate(
        shape_class, {"sequential", "concurrent"}, [&](int i) { i == 0 ? one_after_the_other() : concurrently(); },
        directions_from_env());
    // Measured: the last run's results; pinned or chosen before: run the choice.
    if (!results[0].has_value()) chosen == 0 ? one_after_the_other() : concurrently();
  }
  return {std::move(*results[0]), std::move(*results[1])};
}

using ForwardFn = ForwardResult(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                const c10::optional<Tensor>&, const c10::optional<Tensor>&,
                                const c10::optional<Tensor>&, const c10::optional<Tensor>&, bool, bool);
using BackwardFn = BackwardResult(const c10::optional<Tensor>&, const c10::optional<Tensor>&,
                                  const c10::optional<Tensor>&, const Tensor&, const Tensor&, const Tensor&,
                                  const Tensor&, const Tensor&, const c10::optional<Tensor>&,
                                  const c10::optional<Tensor>&, bool, bool, const Tensor&, const Tensor&, const Tensor&,
                                  std::array<bool, 2>);

// The ops through the dispatcher (their checks and adapters, the CPU kernels).
const c10::TypedOperatorHandle<ForwardFn>& forward_op_handle() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("fused_lstm::lstm_layer_forward", "").typed<ForwardFn>();
  return op;
}

const c10::TypedOperatorHandle<BackwardFn>& backward_op_handle() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("fused_lstm::lstm_layer_backward", "").typed<BackwardFn>();
  return op;
}

std::string directions_class(const char* kind, const Tensor& input, const Tensor& weight_ih, const Tensor& weight_hh,
                             const c10::optional<Tensor>& batch_sizes, int64_t batch) {
  std::ostringstream key;
  const int64_t tokens = batch_sizes.has_value() && batch_sizes->defined() ? input.size(0) : input.size(0) * batch;
  key << "directions " << kind << " " << c10::toString(input.scalar_type()) << " tokens<=" << round_up_pow2(tokens)
      << " rows<=" << round_up_pow2(batch) << " I=" << weight_ih.size(1) << " H=" << weight_hh.size(0) / 4
      << " P=" << weight_hh.size(1) << " threads=" << at::get_num_threads();
  return key.str();
}

}  // namespace

std::array<ForwardResult, 2> forward_directions(const Tensor& input, const c10::optional<Tensor>& batch_sizes,
                                                bool save_workspace, const std::array<DirectionTensors, 2>& d) {
  const std::string shape_class = directions_class(save_workspace ? "forward" : "inference", input, d[0].weight_ih,
                                                   d[0].weight_hh, batch_sizes, d[0].hx.size(-2));
  return run_directions<ForwardResult>(shape_class, [&](int i) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;  // the caller is the autograd node
    return forward_op_handle().call(input, d[i].hx, d[i].cx, d[i].weight_ih, d[i].weight_hh, d[i].bias_ih, d[i].bias_hh,
                                    d[i].weight_hr, batch_sizes, /*reverse=*/i == 1, save_workspace);
  });
}

std::array<BackwardResult, 2> backward_directions(const Tensor& input, const c10::optional<Tensor>& batch_sizes,
                                                  bool has_bias, std::array<bool, 2> input_and_weights_wanted_fwd,
                                                  std::array<bool, 2> input_and_weights_wanted_rev,
                                                  const std::array<DirectionGradients, 2>& g,
                                                  const std::array<DirectionTensors, 2>& d) {
  const std::string shape_class =
      directions_class("backward", input, d[0].weight_ih, d[0].weight_hh, batch_sizes, d[0].hx.size(-2));
  const std::array<std::array<bool, 2>, 2> masks = {input_and_weights_wanted_fwd, input_and_weights_wanted_rev};
  return run_directions<BackwardResult>(shape_class, [&](int i) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return backward_op_handle().call(g[i].grad_output, g[i].grad_hy, g[i].grad_cy, input, d[i].hx, d[i].cx,
                                     d[i].weight_ih, d[i].weight_hh, d[i].weight_hr, batch_sizes, /*reverse=*/i == 1,
                                     has_bias, g[i].output, g[i].gates, g[i].cells, masks[i]);
  });
}

}  // namespace cpu
}  // namespace fused_lstm
