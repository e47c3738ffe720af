// Op schemas: the contract between C++ and Python (the fused_lstm._C module itself: python_module.cpp).
//
// Note [Op schemas]
// One forward and one backward op for one LSTM layer in one direction over a whole sequence.
// Every feature of nn.LSTM that changes a layer's computation is an argument: reverse direction,
// optional biases, an optional projection weight (proj_size), optional batch_sizes for packed
// input. The forward returns everything backward needs (gates, cells: the workspace) as outputs,
// empty when save_workspace is false, so fake kernels, opcheck and torch.compile see them.
// States are (batch, width) or (1, batch, width), results for them in the shape given (Note
// [States with a layer dimension] in layer_args.h).
// Device kernels are registered per dispatch key in csrc/cpu/ and csrc/cuda/.
// Both ops are tagged cudagraph_unsafe: the CUDA kernels stage their step schedule and row
// indices through (pinned) host memory every call, which a captured CUDA graph would replay from
// a buffer that has since been reused. torch.compile(mode="reduce-overhead") then leaves graphs
// holding these ops out of CUDA graphs instead of capturing them (and a manual capture is
// refused with an error, csrc/cuda/lstm_cuda.cu).
#include <torch/library.h>

TORCH_LIBRARY(fused_lstm, m) {
  m.def(
      "lstm_layer_forward(Tensor input, Tensor hx, Tensor cx, Tensor weight_ih, Tensor weight_hh, "
      "Tensor? bias_ih, Tensor? bias_hh, Tensor? weight_hr, Tensor? batch_sizes, bool reverse, "
      "bool save_workspace) -> (Tensor output, Tensor hy, Tensor cy, Tensor gates, Tensor cells)",
      {at::Tag::cudagraph_unsafe});
  m.def(
      "lstm_layer_backward(Tensor? grad_output, Tensor? grad_hy, Tensor? grad_cy, Tensor input, "
      "Tensor hx, Tensor cx, Tensor weight_ih, Tensor weight_hh, Tensor? weight_hr, "
      "Tensor? batch_sizes, bool reverse, bool has_bias, Tensor output, Tensor gates, "
      "Tensor cells, bool[2] output_mask) -> (Tensor grad_input, Tensor grad_hx, Tensor grad_cx, "
      "Tensor grad_weight_ih, Tensor grad_weight_hh, Tensor grad_bias, Tensor grad_weight_hr)",
      {at::Tag::cudagraph_unsafe});
}
