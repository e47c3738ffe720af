// Scratch memory of the CPU layers, reused across calls.
//
// Note [CPU scratch memory]
// A large buffer allocated fresh each call gets fresh pages from the kernel (glibc serves big
// allocations with mmap and returns them on free), and each 4 KiB page faults on first touch:
// measured on a 2-core Xeon, filling a fresh [6400, 2048] fp32 buffer (52 MiB) 13.8 ms, the same
// buffer reused 1.3 ms; the input projection of T=100 B=64 I=H=512 (at::mm) 52 vs 39 ms. oneDNN's
// LSTM (nn.LSTM's CPU path) keeps its scratchpad across calls; the fused layers do the same for
// what never reaches the user -- the hoisted input projection, the per-block weight layouts and
// MKL's packed buffers, the opmath h of a bf16 layer, the workspace saved for backward (gates and
// cells, freed when autograd is done with them), the backward's gate gradients, carries and GEMM
// operands: scratch_empty() hands out tensors on memory from a process-wide pool, which gets the
// memory back when the tensor's storage is freed. Only memory is reused, never contents. The
// pool keeps at most FUSED_LSTM_CPU_SCRATCH_MIB MiB (default 256; 0 turns pooling off) of idle
// memory; a request takes an idle block of at most twice its size.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace fused_lstm {
namespace cpu {

// An uninitialised, contiguous CPU tensor on pooled memory (its storage cannot be resized: not
// for the layer's outputs, which users may resize). While it or a view of it lives, its memory
// is not idle.
at::Tensor scratch_empty(at::IntArrayRef sizes, at::ScalarType dtype);

}  // namespace cpu
}  // namespace fused_lstm
