// Note [CPU scratch memory] (scratch_pool.h).
#include "cpu/scratch_pool.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <mutex>
#include <vector>

namespace fused_lstm {
namespace cpu {
namespace {

int64_t max_pooled_bytes() {
  static const int64_t bytes = [] {
    int64_t mib = 256;
    if (const char* env = std::getenv("FUSED_LSTM_CPU_SCRATCH_MIB")) {
      char* end = nullptr;
      mib = std::strtoll(env, &end, 10);
      TORCH_CHECK_VALUE(end != env && *end == '\0' && mib >= 0, "fused_lstm: FUSED_LSTM_CPU_SCRATCH_MIB "
                        "must be a non-negative integer (MiB), got '", env, "'");
    }
    return mib << 20;
  }();
  return bytes;
}

class ScratchPool {
 public:
  at::Tensor acquire(int64_t bytes) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      // The smallest idle buffer that is large enough.
      auto best = idle_.end();
      for (auto it = idle_.begin(); it != idle_.end(); ++it) {
        if (it->numel() >= bytes && (best == idle_.end() || it->numel() < best->numel())) best = it;
      }
      if (best != idle_.end()) {
        at::Tensor buffer = std::move(*best);
        idle_.erase(best);
        idle_bytes_ -= buffer.numel();
        return buffer;
      }
    }
    return at::empty({bytes}, at::TensorOptions().dtype(at::kByte));
  }

  void release(at::Tensor buffer) {
    if (buffer.storage().use_count() > 1) return;  // a view escaped: its holders own it now
    const std::lock_guard<std::mutex> lock(mutex_);
    // Over the cap: evict smaller idle buffers for a larger one (the larger is the one the
    // workload keeps asking for), else free this one.
    while (idle_bytes_ + buffer.numel() > max_pooled_bytes() && !idle_.empty()) {
      auto smallest = idle_.begin();
      for (auto it = idle_.begin(); it != idle_.end(); ++it) {
        if (it->numel() < smallest->numel()) smallest = it;
      }
      if (smallest->numel() >= buffer.numel()) break;
      idle_bytes_ -= smallest->numel();
      idle_.erase(smallest);
    }
    if (idle_bytes_ + buffer.numel() > max_pooled_bytes()) return;  // freed here
    idle_bytes_ += buffer.numel();
    idle_.push_back(std::move(buffer));
  }

  int64_t idle_bytes() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return idle_bytes_;
  }

 private:
  std::mutex mutex_;
  std::vector<at::Tensor> idle_;
  int64_t idle_bytes_ = 0;
};

ScratchPool& scratch_pool() {
  static auto* pool = new ScratchPool();  // never destroyed: outlives static destructors
  return *pool;
}

}  // namespace

ScratchTensor::ScratchTensor(at::IntArrayRef sizes, at::ScalarType dtype) {
  // Reads (and checks) the cap here, where an error can propagate: release() runs in a destructor.
  max_pooled_bytes();
  int64_t numel = 1;
  for (int64_t size : sizes) numel *= size;
  const int64_t bytes = std::max<int64_t>(1, numel * static_cast<int64_t>(c10::elementSize(dtype)));
  buffer_ = scratch_pool().acquire(bytes);
  tensor_ = at::empty({0}, at::TensorOptions().dtype(dtype)).set_(buffer_.storage(), 0, sizes);
}

ScratchTensor::~ScratchTensor() {
  tensor_ = at::Tensor();
  scratch_pool().release(std::move(buffer_));
}

int64_t pooled_scratch_bytes() { return scratch_pool().idle_bytes(); }

}  // namespace cpu
}  // namespace fused_lstm
