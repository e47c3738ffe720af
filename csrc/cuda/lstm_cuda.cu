// CUDA implementation of the layer ops: ATen glue around csrc/kernels/lstm_cuda_kernels.cuh.
//
// Forward: the input projection x · W_ihᵀ for all steps as one cuBLAS GEMM (torch's TF32 flags
// apply), then the recurrence: one persistent cooperative launch for the whole sequence
// (Note [Persistent sequence kernels]) or, where its grid cannot be resident, one fused step
// kernel per time step (Note [Fused forward step]). With a projection, a cuBLAS GEMM per step maps
// o * tanh(c) to h, so that case always runs per step.
// Backward: the device-independent driver (layer_backward.h) with these kernels: without
// projection the reverse recurrence is one fused CUDA launch (half, bfloat16, float: the
// tensor-core persistent kernel, Note [Tensor-core backward recurrence]); otherwise, or where that
// kernel does not fit, the generic per-step loop (cuBLAS carry GEMM + pointwise kernel, launched
// from the host every step). Weight gradients are single cuBLAS GEMMs. Everything runs on the current stream of input's
// device.
//
// Which kernels run is decided once per call by select_kernels (csrc/cuda_variants.h): only
// variants that passed the GPU check unless others are asked for (Note [Verified CUDA kernel
// variants]). FUSED_LSTM_CUDA_ALGO picks the recurrence kernels (read per call):
//   auto (default)  forward: persistent where its grid fits, else per step; backward: tensor-core
//                   persistent where it applies and fits, else the generic loop
//   persistent      as auto, but where the tensor-core backward does not apply or fit the SIMT
//                   persistent backward, then its per-step launches
//   step            forward and backward: fused kernels, one launch per step
//   generic         forward as auto; backward: always the generic per-step loop
// FUSED_LSTM_CUDA_FP32 picks how float32 recurrences multiply (read per call):
//   auto (default)  the FMA (SIMT) kernels while float32 on tensor cores is unverified; once
//                   verified, tensor cores: TF32 when torch.backends.cudnn.allow_tf32 is on (what
//                   nn.LSTM's cuDNN call follows), else 3xTF32 (fp32-level error); batches <= 8
//                   keep the split-K SIMT forward tile
//   tf32 / 3xtf32   tensor cores with that precision, whatever the flag says (asks for the variant)
//   simt            the FMA kernels
// (Note [Tensor-core precision]). FUSED_LSTM_CUDA_K_CHUNK forces the K staging width (Note [K staging]).
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>

#include "cuda_variants.h"
#include "kernels/lstm_cuda_kernels.cuh"
#include "layer_args.h"
#include "layer_backward.h"
#include "step_schedule.h"

namespace fused_lstm {
namespace {

// at:: storage types -> CUDA's (same bits).
template <typename T>
struct CudaType {
  using type = T;
};
template <>
struct CudaType<at::Half> {
  using type = __half;
};
template <>
struct CudaType<at::BFloat16> {
  using type = __nv_bfloat16;
};

template <typename T>
typename CudaType<T>::type* cuda_ptr(const Tensor& t) {
  return t.defined() && t.numel() > 0 ? reinterpret_cast<typename CudaType<T>::type*>(t.data_ptr<T>()) : nullptr;
}

bool aligned_16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The kernel variants this call runs (Note [Verified CUDA kernel variants], csrc/cuda_variants.h),
// from its dtype, batch, projection, the device and the FUSED_LSTM_CUDA_* variables; raises where
// the call would need a variant that has not passed the GPU check and was not asked for.
cuda::Selection select_kernels(const char* op, at::ScalarType dtype, int64_t batch, bool has_proj) {
  cuda::DType kind = cuda::DType::kFloat;
  if (dtype == at::kHalf) kind = cuda::DType::kHalf;
  if (dtype == at::kBFloat16) kind = cuda::DType::kBFloat16;
  if (dtype == at::kDouble) kind = cuda::DType::kDouble;
  const cuda::Selection selection = cuda::select_variants(cuda::selection_inputs(
      kind, at::cuda::getCurrentDeviceProperties()->major, batch, has_proj, at::globalContext().allowTF32CuDNN()));
  TORCH_CHECK(selection.refused.empty(), op, ": ", selection.refused);
  return selection;
}

// The ops copy host-built schedules and indices to the device on every call, so a captured CUDA
// graph would replay those copies from host buffers that have been reused since: refuse capture
// (the ops are also tagged cudagraph_unsafe, csrc/lstm_ops.cpp, so torch.compile does not try).
void check_not_capturing(const char* op) {
  TORCH_CHECK(c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None, op,
              ": CUDA graph capture is not supported (the op copies its step schedule from host "
              "memory on every call); run it outside torch.cuda.graph / CUDA-graph capture");
}

// The step schedule in device memory, for the persistent kernels (StepRows is 4 int64); an
// asynchronous copy (host_index_buffer).
Tensor schedule_on_device(const std::vector<StepRows>& schedule, at::Device device) {
  static_assert(sizeof(StepRows) == 4 * sizeof(int64_t), "StepRows must be four packed int64");
  Tensor host = host_index_buffer({static_cast<int64_t>(schedule.size()), 4}, device);
  std::memcpy(host.data_ptr<int64_t>(), schedule.data(), schedule.size() * sizeof(StepRows));
  return host.to(device, /*non_blocking=*/true);
}

// The current device's limits for launch configuration, and FUSED_LSTM_CUDA_K_CHUNK (Note [K staging]).
kernels::DeviceLimits device_limits() {
  const cudaDeviceProp* props = at::cuda::getCurrentDeviceProperties();
  int forced = 0;
  if (const char* chunk = std::getenv("FUSED_LSTM_CUDA_K_CHUNK")) {
    forced = std::atoi(chunk);
    TORCH_CHECK_VALUE(forced > 0, "fused_lstm: FUSED_LSTM_CUDA_K_CHUNK must be a positive integer, got '", chunk, "'");
  }
  return {props->multiProcessorCount, props->sharedMemPerBlockOptin, forced};
}

ForwardResult layer_forward_cuda(const ForwardArgs& args) {
  // Below autograd: the op is differentiated by its backward op, never through its internals.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const LayerShape s = check_forward_arguments(args);
  const Tensor &input = args.input, &hx = args.hx, &cx = args.cx, &weight_ih = args.weight_ih;
  const bool save_workspace = args.save_workspace;
  const c10::cuda::CUDAGuard device_guard(input.device());
  check_not_capturing("fused_lstm.lstm_layer_forward");
  if (s.tokens == 0) return forward_without_tokens(s, args);
  const int64_t N = s.tokens, B = s.batch, H = s.hidden, P = s.proj;
  const auto dtype = input.scalar_type();
  const auto acc_type = opmath_type(dtype);
  const auto acc = input.options().dtype(acc_type);

  const Tensor input_proj = at::mm(input.reshape({N, s.input}), weight_ih.t());  // [N, 4H]
  const Tensor w_hh = args.weight_hh.contiguous();
  const Tensor hx_c = hx.contiguous();
  const Tensor b_ih = s.has_bias ? args.bias_ih->contiguous() : Tensor();
  const Tensor b_hh = s.has_bias ? args.bias_hh->contiguous() : Tensor();
  const Tensor w_hr_t = s.has_proj ? args.weight_hr->t() : Tensor();

  Tensor output = at::empty({N, P}, input.options());
  Tensor c_state = cx.to(acc_type).contiguous().clone();
  Tensor h_unprojected = s.has_proj ? at::empty({B, H}, input.options()) : Tensor();
  // Saved for backward, one row per token: [T, B, 4H] / [T, B, H] (or [N, .] packed).
  Tensor gates = save_workspace ? at::empty(per_token_shape(s, 4 * H), acc) : at::empty({0}, acc);
  Tensor cells = save_workspace ? at::empty(per_token_shape(s, H), acc) : at::empty({0}, acc);

  const auto schedule = make_step_schedule(s, args.batch_sizes, args.reverse);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const cuda::Selection kernels_used = select_kernels("fused_lstm.lstm_layer_forward", dtype, B, s.has_proj);
  const kernels::DeviceLimits limits = device_limits();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "lstm_layer_forward_cuda", [&] {
    using cuda_t = typename CudaType<scalar_t>::type;
    using acc_t = at::opmath_type<scalar_t>;
    kernels::ForwardStepParams<cuda_t, acc_t> p{};
    p.hidden = H;
    p.proj = P;
    p.input_proj = cuda_ptr<scalar_t>(input_proj);
    p.bias_ih = s.has_bias ? cuda_ptr<scalar_t>(b_ih) : nullptr;
    p.bias_hh = s.has_bias ? cuda_ptr<scalar_t>(b_hh) : nullptr;
    p.weight_hh = cuda_ptr<scalar_t>(w_hh);
    p.hx = cuda_ptr<scalar_t>(hx_c);
    p.output = cuda_ptr<scalar_t>(output);
    p.c_state = c_state.data_ptr<acc_t>();
    p.gates_ws = save_workspace ? gates.data_ptr<acc_t>() : nullptr;
    p.cells_ws = save_workspace ? cells.data_ptr<acc_t>() : nullptr;
    p.h_unprojected = s.has_proj ? cuda_ptr<scalar_t>(h_unprojected) : nullptr;
    // 16-byte loads need every row of h (output, hx) and W_hh to start 16-byte aligned.
    const bool vector_loads =
        (P * sizeof(scalar_t)) % 16 == 0 && aligned_16(p.weight_hh) && aligned_16(p.hx) && aligned_16(p.output);
    if (!s.has_proj && kernels_used.algorithm != cuda::Algorithm::kStep) {
      const Tensor device_schedule = schedule_on_device(schedule, input.device());
      const cudaError_t err = kernels::launch_forward_persistent<cuda_t, acc_t>(
          p, reinterpret_cast<const StepRows*>(device_schedule.data_ptr<int64_t>()),
          static_cast<int64_t>(schedule.size()), B, kernels_used.tensor_cores, kernels_used.mma_k_split, vector_loads,
          kernels_used.split_tf32, limits, stream);
      if (err != cudaErrorCooperativeLaunchTooLarge) {
        C10_CUDA_CHECK(err);
        return;  // the whole sequence ran in one launch
      }
    }
    kernels::ForwardStepLaunch launch{};
    C10_CUDA_CHECK((kernels::prepare_forward_step<cuda_t, acc_t>(
        P, B, kernels_used.tensor_cores, kernels_used.mma_k_split, vector_loads, limits, &launch)));
    for (const auto& step : schedule) {
      p.step = step;
      C10_CUDA_CHECK(kernels::launch_forward_step(p, launch, kernels_used.split_tf32, stream));
      if (s.has_proj) {
        Tensor out_rows = output.narrow(0, step.row_offset, step.rows);
        at::mm_out(out_rows, h_unprojected.narrow(0, 0, step.rows), w_hr_t);
      }
    }
  });

  const Tensor hy = output.index_select(0, final_row_index(schedule, B, input.device()));
  return {output.view(per_token_shape(s, P)), hy, c_state.to(dtype), gates, cells};
}

void backward_pointwise_cuda(const kernels::StepRows& step, int64_t hidden, const Tensor& gates, const Tensor& cells,
                             const Tensor& cx, const Tensor& dh, const Tensor& dc_carry, const Tensor& dgates) {
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "lstm_backward_pointwise_cuda", [&] {
    const kernels::BackwardPointwiseParams<scalar_t> p{step,
                                                       hidden,
                                                       gates.data_ptr<scalar_t>(),
                                                       cells.data_ptr<scalar_t>(),
                                                       cx.data_ptr<scalar_t>(),
                                                       dh.data_ptr<scalar_t>(),
                                                       dh.stride(0),
                                                       dc_carry.data_ptr<scalar_t>(),
                                                       dgates.data_ptr<scalar_t>()};
    C10_CUDA_CHECK(kernels::launch_backward_pointwise<scalar_t>(p, stream));
  });
}

// The fused reverse recurrence without projection (see BackwardRecurrenceFn), per
// FUSED_LSTM_CUDA_ALGO (top of this file). Measured on H100/H200 (benchmarks/results/cuda-*-20261126*):
// the SIMT kernels' carry GEMM (two shared-memory loads per FMA) costs ~100 us a step at H=512,
// twice the generic loop's cuBLAS carry GEMM + pointwise kernel, so `auto` uses them for no dtype;
// it takes the tensor-core persistent kernel (11.8 us a step at H=512 B=64 bf16 on an H200, vs
// 33.9 for the generic loop: benchmarks/results/cuda-h200-step-probe-v4-*) and the generic loop
// where that does not apply (double; float unless on tensor cores) or fit.
bool backward_recurrence_cuda(const BackwardRecurrenceArgs& a) {
  const cuda::Selection kernels_used =
      select_kernels("fused_lstm.lstm_layer_backward", a.weight_hh.scalar_type(), a.batch, /*has_proj=*/false);
  const cuda::Algorithm algorithm = kernels_used.algorithm;
  const bool tensor_cores = kernels_used.tensor_cores;
  if (algorithm == cuda::Algorithm::kGeneric || (algorithm == cuda::Algorithm::kAuto && !tensor_cores)) {
    return false;
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const Tensor device_schedule = schedule_on_device(a.schedule, a.dgates.device());
  const Tensor w_hh = a.weight_hh.contiguous();
  bool ran = false;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w_hh.scalar_type(), "lstm_backward_recurrence_cuda", [&] {
    using cuda_t = typename CudaType<scalar_t>::type;
    using acc_t = at::opmath_type<scalar_t>;
    kernels::BackwardSequenceParams<cuda_t, acc_t> p{};
    p.schedule = reinterpret_cast<const StepRows*>(device_schedule.data_ptr<int64_t>());
    p.num_steps = static_cast<int64_t>(a.schedule.size());
    p.weight_hh = cuda_ptr<scalar_t>(w_hh);
    p.grad_output = a.grad_output.defined() ? a.grad_output.data_ptr<acc_t>() : nullptr;
    p.grad_hy = a.grad_hy.defined() ? a.grad_hy.data_ptr<acc_t>() : nullptr;
    p.cell.hidden = a.hidden;
    p.cell.gates = a.gates.data_ptr<acc_t>();
    p.cell.cells = a.cells.data_ptr<acc_t>();
    p.cell.cx = a.cx.data_ptr<acc_t>();
    p.cell.dc_carry = a.dc_carry.data_ptr<acc_t>();
    p.cell.dgates = a.dgates.data_ptr<acc_t>();
    const kernels::DeviceLimits limits = device_limits();
    if (algorithm != cuda::Algorithm::kStep && tensor_cores) {
      const cudaError_t err =
          kernels::launch_backward_persistent_mma<cuda_t, acc_t>(p, a.batch, kernels_used.split_tf32, limits, stream);
      if (err != cudaErrorCooperativeLaunchTooLarge) {
        C10_CUDA_CHECK(err);
        ran = true;
        return;
      }
    }
    if (algorithm == cuda::Algorithm::kAuto) return;  // the generic loop
    C10_CUDA_CHECK((kernels::launch_backward_recurrence<cuda_t, acc_t>(
        p, a.batch, algorithm == cuda::Algorithm::kPersistent, limits, stream)));
    ran = true;
  });
  return ran;
}

BackwardResult layer_backward_cuda(const BackwardArgs& args) {
  const c10::cuda::CUDAGuard device_guard(args.input.device());
  check_not_capturing("fused_lstm.lstm_layer_backward");
  return layer_backward(args, {&backward_pointwise_cuda, &backward_recurrence_cuda});
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_lstm, CUDA, m) {
  m.impl("lstm_layer_forward", &forward_op<&layer_forward_cuda>);
  m.impl("lstm_layer_backward", &backward_op<&layer_backward_cuda>);
}

}  // namespace fused_lstm
