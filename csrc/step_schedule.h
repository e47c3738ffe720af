// The order in which a layer call processes its steps, and the row gathers derived from it
// (Note [Row layout and step schedule] in kernels/lstm_step.h).
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "kernels/lstm_step.h"
#include "layer_args.h"

namespace fused_lstm {

using kernels::StepRows;

// The steps in processing order (forward or reverse).
std::vector<StepRows> make_step_schedule(const LayerShape& shape, const c10::optional<Tensor>& batch_sizes,
                                         bool reverse);

// A host int64 buffer to fill and then copy to `device` with non_blocking=true: pinned when the
// device is CUDA, so the copy is asynchronous (a pageable copy waits for the stream to drain).
Tensor host_index_buffer(at::IntArrayRef sizes, at::Device device);

// [B] row index of each sequence's last processed step, on `device` (for hy).
Tensor final_row_index(const std::vector<StepRows>& schedule, int64_t batch, at::Device device);

// [B] row index of each sequence's first processed step (the step that consumed hx).
Tensor first_row_index(const std::vector<StepRows>& schedule, int64_t batch, at::Device device);

// [N] index into cat(hx, output) of the h each row consumed as h_prev (for dW_hh).
Tensor previous_row_index(const std::vector<StepRows>& schedule, int64_t tokens, int64_t batch, at::Device device);

}  // namespace fused_lstm
