// Both directions of a bidirectional CPU layer in one call (Note [Concurrent directions on CPU]
// in lstm_cpu_directions.cpp): the plain-eager modules' route for bidirectional layers
// (fused_lstm/_eager.py), bound in the fused_lstm._C module.
#pragma once

#include <ATen/ATen.h>

#include <array>

#include "layer_args.h"

namespace fused_lstm {
namespace cpu {

// One direction's own arguments of the ops (index 0 forward, 1 reverse).
struct DirectionTensors {
  Tensor hx, cx, weight_ih, weight_hh;
  c10::optional<Tensor> bias_ih, bias_hh, weight_hr;
};

// One direction's gradients reaching the layer and what its forward saved.
struct DirectionGradients {
  c10::optional<Tensor> grad_output, grad_hy, grad_cy;
  Tensor output, gates, cells;
};

// lstm_layer_forward of both directions over the same input.
std::array<ForwardResult, 2> forward_directions(const Tensor& input, const c10::optional<Tensor>& batch_sizes,
                                                bool save_workspace, const std::array<DirectionTensors, 2>& d);

// lstm_layer_backward of both directions; output_mask per direction.
std::array<BackwardResult, 2> backward_directions(const Tensor& input, const c10::optional<Tensor>& batch_sizes,
                                                  bool has_bias, std::array<bool, 2> input_and_weights_wanted_fwd,
                                                  std::array<bool, 2> input_and_weights_wanted_rev,
                                                  const std::array<DirectionGradients, 2>& g,
                                                  const std::array<DirectionTensors, 2>& d);

}  // namespace cpu
}  // namespace fused_lstm
