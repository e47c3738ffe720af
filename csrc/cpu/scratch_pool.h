// Scratch memory of the CPU layers, reused across calls.
//
// Note [CPU scratch memory]
// A large buffer allocated fresh each call gets fresh pages from the kernel (glibc serves big
// allocations with mmap and returns them on free), and each 4 KiB page faults on first touch:
// measured on a 2-core Xeon, filling a fresh [6400, 2048] fp32 buffer (52 MiB) 13.8 ms, the same
// buffer reused 1.3 ms; the input projection of T=100 B=64 I=H=512 (at::mm) 52 vs 39 ms. oneDNN's
// LSTM (nn.LSTM) keeps its scratchpad across calls; the fused layers do the same for what never
// leaves a call (the hoisted input projection, the per-block weight layouts and MKL's packed
// buffers, the opmath copy of a bf16 layer's output): ScratchTensor borrows memory from a process-
// wide pool and gives it back when it goes out of scope. Only memory is reused, never contents.
// The pool keeps at most FUSED_LSTM_CPU_SCRATCH_MIB MiB (default 256; 0 turns pooling off) of
// idle buffers; a buffer that is still referenced when its ScratchTensor dies (a view escaped)
// is left to its holders, never pooled.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace fused_lstm {
namespace cpu {

class ScratchTensor {
 public:
  // An uninitialised, contiguous CPU tensor of these sizes and dtype.
  ScratchTensor(at::IntArrayRef sizes, at::ScalarType dtype);
  ~ScratchTensor();
  ScratchTensor(const ScratchTensor&) = delete;
  ScratchTensor& operator=(const ScratchTensor&) = delete;

  const at::Tensor& tensor() const { return tensor_; }

 private:
  at::Tensor buffer_;  // bytes, from the pool
  at::Tensor tensor_;  // the typed view handed out
};

// Memory the pool holds while idle (for tests and build_info).
int64_t pooled_scratch_bytes();

}  // namespace cpu
}  // namespace fused_lstm
