#include "step_schedule.h"

#include <c10/util/irange.h>

namespace fused_lstm {

std::vector<StepRows> make_step_schedule(const LayerShape& shape, const c10::optional<Tensor>& batch_sizes,
                                         bool reverse) {
  std::vector<int64_t> offsets(shape.steps), rows(shape.steps);
  if (shape.packed) {
    const Tensor bs = batch_sizes->contiguous();
    const int64_t* sizes = bs.data_ptr<int64_t>();
    int64_t offset = 0;
    for (const auto t : c10::irange(shape.steps)) {
      offsets[t] = offset;
      rows[t] = sizes[t];
      offset += sizes[t];
    }
  } else {
    for (const auto t : c10::irange(shape.steps)) {
      offsets[t] = t * shape.batch;
      rows[t] = shape.batch;
    }
  }
  std::vector<StepRows> schedule;
  schedule.reserve(shape.steps);
  int64_t prev_offset = 0, prev_rows = 0;
  for (const auto k : c10::irange(shape.steps)) {
    const int64_t t = reverse ? shape.steps - 1 - k : k;
    schedule.push_back({offsets[t], rows[t], prev_offset, prev_rows});
    prev_offset = offsets[t];
    prev_rows = rows[t];
  }
  return schedule;
}

Tensor host_index_buffer(at::IntArrayRef sizes, at::Device device) {
  return at::empty(sizes, at::TensorOptions(at::kLong).pinned_memory(device.is_cuda()));
}

Tensor final_row_index(const std::vector<StepRows>& schedule, int64_t batch, at::Device device) {
  Tensor index = host_index_buffer({batch}, device);
  int64_t* last = index.data_ptr<int64_t>();
  for (const auto& step : schedule) {
    for (const auto b : c10::irange(step.rows)) last[b] = step.row_offset + b;
  }
  return index.to(device, /*non_blocking=*/true);
}

Tensor first_row_index(const std::vector<StepRows>& schedule, int64_t batch, at::Device device) {
  Tensor index = host_index_buffer({batch}, device).fill_(-1);
  int64_t* first = index.data_ptr<int64_t>();
  for (const auto& step : schedule) {
    for (const auto b : c10::irange(step.rows)) {
      if (first[b] < 0) first[b] = step.row_offset + b;
    }
  }
  return index.to(device, /*non_blocking=*/true);
}

Tensor previous_row_index(const std::vector<StepRows>& schedule, int64_t tokens, int64_t batch, at::Device device) {
  Tensor index = host_index_buffer({tokens}, device);
  int64_t* source = index.data_ptr<int64_t>();
  for (const auto& step : schedule) {
    for (const auto b : c10::irange(step.rows)) {
      source[step.row_offset + b] = b < step.prev_rows ? batch + step.prev_row_offset + b : b;
    }
  }
  return index.to(device, /*non_blocking=*/true);
}

}  // namespace fused_lstm
