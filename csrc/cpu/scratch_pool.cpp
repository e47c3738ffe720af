// Note [CPU scratch memory] (scratch_pool.h).
#include "cpu/scratch_pool.h"

#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <vector>

namespace fused_lstm {
namespace cpu {
namespace {

int64_t max_idle_bytes() {
  static const int64_t bytes = [] {
    int64_t mib = 256;
    if (const char* env = std::getenv("FUSED_LSTM_CPU_SCRATCH_MIB")) {
      char* end = nullptr;
      mib = std::strtoll(env, &end, 10);
      TORCH_CHECK_VALUE(end != env && *end == '\0' && mib >= 0,
                        "fused_lstm: FUSED_LSTM_CPU_SCRATCH_MIB "
                        "must be a non-negative integer (MiB), got '",
                        env, "'");
    }
    return mib << 20;
  }();
  return bytes;
}

struct Block {
  void* data;
  int64_t bytes;
};

class ScratchPool {
 public:
  Block acquire(int64_t bytes) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      // The smallest idle block that is large enough, and not more than twice the size (a
      // small request would otherwise hold a large block that the next large request misses).
      auto best = idle_.end();
      for (auto it = idle_.begin(); it != idle_.end(); ++it) {
        if (it->bytes >= bytes && it->bytes <= 2 * bytes && (best == idle_.end() || it->bytes < best->bytes)) {
          best = it;
        }
      }
      if (best != idle_.end()) {
        const Block block = *best;
        idle_.erase(best);
        idle_bytes_ -= block.bytes;
        return block;
      }
    }
    return {c10::alloc_cpu(static_cast<size_t>(bytes)), bytes};  // 64-byte aligned
  }

  // Never throws (it runs in a deleter).
  void release(Block block) {
    std::vector<Block> to_free;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      // Over the cap: evict smaller idle blocks for a larger one (the larger is the one the
      // workload keeps asking for), else free this one.
      while (idle_bytes_ + block.bytes > max_idle_bytes() && !idle_.empty()) {
        auto smallest = std::min_element(idle_.begin(), idle_.end(),
                                         [](const Block& a, const Block& b) { return a.bytes < b.bytes; });
        if (smallest->bytes >= block.bytes) break;
        idle_bytes_ -= smallest->bytes;
        to_free.push_back(*smallest);
        idle_.erase(smallest);
      }
      if (idle_bytes_ + block.bytes <= max_idle_bytes()) {
        idle_bytes_ += block.bytes;
        idle_.push_back(block);
      } else {
        to_free.push_back(block);
      }
    }
    for (const Block& b : to_free) c10::free_cpu(b.data);  // outside the lock
  }

 private:
  std::mutex mutex_;
  std::vector<Block> idle_;
  int64_t idle_bytes_ = 0;
};

ScratchPool& scratch_pool() {
  static auto* pool = new ScratchPool();  // never destroyed: outlives static destructors
  return *pool;
}

}  // namespace

at::Tensor scratch_empty(at::IntArrayRef sizes, at::ScalarType dtype) {
  max_idle_bytes();  // reads (and checks) the cap here, where an error can propagate
  int64_t numel = 1;
  for (int64_t size : sizes) numel *= size;
  const int64_t bytes = std::max<int64_t>(1, numel * static_cast<int64_t>(c10::elementSize(dtype)));
  const Block block = scratch_pool().acquire(bytes);
  return at::from_blob(
      block.data, sizes, [block](void*) { scratch_pool().release(block); },
      at::TensorOptions().dtype(dtype).device(at::kCPU));
}

}  // namespace cpu
}  // namespace fused_lstm
