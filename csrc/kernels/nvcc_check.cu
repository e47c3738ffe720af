// Instantiates every CUDA kernel of csrc/kernels/ without torch, so that plain
//   nvcc -c -std=c++17 -arch=sm_90 -Xptxas -v -I csrc csrc/kernels/nvcc_check.cu
// catches compile errors and reports registers and spills on a machine with no GPU and no CUDA
// build of torch (tests/test_nvcc_compile.py runs it).
#include "kernels/lstm_cuda_kernels.cuh"

namespace fused_lstm {
namespace kernels {

#define FUSED_LSTM_INSTANTIATE(scalar_t, acc_t)                                                                       \
  template cudaError_t launch_forward_persistent<scalar_t, acc_t>(const ForwardStepParams<scalar_t, acc_t>&,          \
                                                                  const StepRows*, int64_t, int64_t, bool, int, bool, \
                                                                  bool, const DeviceLimits&, cudaStream_t);           \
  template cudaError_t prepare_forward_step<scalar_t, acc_t>(int64_t, int64_t, bool, int, bool, const DeviceLimits&,  \
                                                             ForwardStepLaunch*);                                     \
  template cudaError_t launch_forward_step<scalar_t, acc_t>(const ForwardStepParams<scalar_t, acc_t>&,                \
                                                            const ForwardStepLaunch&, bool, cudaStream_t);            \
  template cudaError_t launch_backward_recurrence<scalar_t, acc_t>(const BackwardSequenceParams<scalar_t, acc_t>&,    \
                                                                   int64_t, bool, const DeviceLimits&, cudaStream_t); \
  template cudaError_t launch_backward_persistent_mma<scalar_t, acc_t>(                                               \
      const BackwardSequenceParams<scalar_t, acc_t>&, int64_t, bool, const DeviceLimits&, cudaStream_t);

FUSED_LSTM_INSTANTIATE(float, float)
FUSED_LSTM_INSTANTIATE(double, double)
FUSED_LSTM_INSTANTIATE(__half, float)
FUSED_LSTM_INSTANTIATE(__nv_bfloat16, float)
template cudaError_t launch_backward_pointwise<float>(const BackwardPointwiseParams<float>&, cudaStream_t);
template cudaError_t launch_backward_pointwise<double>(const BackwardPointwiseParams<double>&, cudaStream_t);

}  // namespace kernels
}  // namespace fused_lstm
