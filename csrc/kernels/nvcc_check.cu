// Instantiates every CUDA kernel of csrc/kernels/ without torch, so that plain
//   nvcc -c -std=c++17 -arch=sm_90 -Xptxas -v -I csrc csrc/kernels/nvcc_check.cu
// catches compile errors and reports registers and spills on a machine with no GPU and no CUDA
// build of torch (tests/test_nvcc_compile.py runs it).
#include "kernels/lstm_cuda_kernels.cuh"

namespace fused_lstm {
namespace kernels {

template cudaError_t launch_forward_step_simt<float, float>(const ForwardStepParams<float, float>&, cudaStream_t);
template cudaError_t launch_forward_step_simt<double, double>(const ForwardStepParams<double, double>&, cudaStream_t);
template cudaError_t launch_forward_step_mma<__half>(const ForwardStepParams<__half, float>&, bool, cudaStream_t);
template cudaError_t launch_forward_step_mma<__nv_bfloat16>(const ForwardStepParams<__nv_bfloat16, float>&, bool,
                                                            cudaStream_t);
template cudaError_t launch_forward_persistent<float, float>(const ForwardStepParams<float, float>&, const StepRows*,
                                                             int64_t, int64_t, bool, bool, int, cudaStream_t);
template cudaError_t launch_forward_persistent<double, double>(const ForwardStepParams<double, double>&,
                                                               const StepRows*, int64_t, int64_t, bool, bool, int,
                                                               cudaStream_t);
template cudaError_t launch_forward_persistent<__half, float>(const ForwardStepParams<__half, float>&, const StepRows*,
                                                              int64_t, int64_t, bool, bool, int, cudaStream_t);
template cudaError_t launch_forward_persistent<__nv_bfloat16, float>(const ForwardStepParams<__nv_bfloat16, float>&,
                                                                     const StepRows*, int64_t, int64_t, bool, bool,
                                                                     int, cudaStream_t);
template cudaError_t launch_backward_recurrence<float, float>(const BackwardSequenceParams<float, float>&, int64_t,
                                                              bool, int, cudaStream_t);
template cudaError_t launch_backward_recurrence<double, double>(const BackwardSequenceParams<double, double>&,
                                                                int64_t, bool, int, cudaStream_t);
template cudaError_t launch_backward_recurrence<__half, float>(const BackwardSequenceParams<__half, float>&, int64_t,
                                                               bool, int, cudaStream_t);
template cudaError_t launch_backward_recurrence<__nv_bfloat16, float>(
    const BackwardSequenceParams<__nv_bfloat16, float>&, int64_t, bool, int, cudaStream_t);
template cudaError_t launch_backward_pointwise<float>(const BackwardPointwiseParams<float>&, cudaStream_t);
template cudaError_t launch_backward_pointwise<double>(const BackwardPointwiseParams<double>&, cudaStream_t);

}  // namespace kernels
}  // namespace fused_lstm
