// Measures the cost of one cooperative-groups grid barrier (grid.sync()) on this GPU, for grids
// of 1 to all multiprocessors' worth of 256-thread blocks: the floor of a persistent kernel's
// step (Note [Persistent sequence kernels]). Torch-free; benchmarks/gpu_check.sh builds and runs it:
//   nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/grid_barrier_probe benchmarks/grid_barrier_probe.cu
//   /tmp/grid_barrier_probe            -> one JSON line per grid size
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cstdio>

__global__ void barrier_loop(int iterations, int* sink) {
  namespace cg = cooperative_groups;
  cg::grid_group grid = cg::this_grid();
  for (int i = 0; i < iterations; ++i) grid.sync();
  if (threadIdx.x == 0 && blockIdx.x == 0) *sink = iterations;
}

#define CHECK(call)                                                            \
  do {                                                                         \
    cudaError_t err_ = (call);                                                 \
    if (err_ != cudaSuccess) {                                                 \
      std::fprintf(stderr, "%s: %s\n", #call, cudaGetErrorString(err_));       \
      return 1;                                                                \
    }                                                                          \
  } while (0)

int main() {
  cudaDeviceProp props{};
  CHECK(cudaGetDeviceProperties(&props, 0));
  int* sink = nullptr;
  CHECK(cudaMalloc(&sink, sizeof(int)));
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  const int sizes[] = {1, 8, 16, 32, 64, 128, props.multiProcessorCount};
  for (int blocks : sizes) {
    float best_ms[2] = {1e30f, 1e30f};
    const int iteration_counts[2] = {10, 10010};  // the difference removes the launch cost
    for (int which = 0; which < 2; ++which) {
      for (int rep = 0; rep < 5; ++rep) {
        int iterations = iteration_counts[which];
        void* args[] = {&iterations, &sink};
        CHECK(cudaEventRecord(start));
        CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(&barrier_loop), dim3(blocks), dim3(256),
                                          args, 0, nullptr));
        CHECK(cudaEventRecord(stop));
        CHECK(cudaEventSynchronize(stop));
        float ms = 0.f;
        CHECK(cudaEventElapsedTime(&ms, start, stop));
        if (ms < best_ms[which]) best_ms[which] = ms;
      }
    }
    const double us_per_barrier = (best_ms[1] - best_ms[0]) * 1000.0 / (iteration_counts[1] - iteration_counts[0]);
    std::printf("{\"device\": \"%s\", \"blocks\": %d, \"threads\": 256, \"us_per_grid_sync\": %.3f}\n",
                props.name, blocks, us_per_barrier);
  }
  return 0;
}
