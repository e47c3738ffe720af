// CPU implementation of the layer ops (lstm_cpu.h): the forward and the registration here, the
// backward in lstm_cpu_backward.cpp; the recurrence driver in recurrence.h, W_hh's prepared
// operands in operand_cache.h.
//
// Forward: the input projection for all steps as one GEMM; then the recurrence over blocks of
// hidden units, each block's task per step multiplying h_prev by its block's packed slice of
// W_hhᵀ (all four gates of its units) and running the fused, vectorised gate pass on that
// product while it is in cache: add the hoisted input projection and bias, sigmoid/tanh, update
// c and h, write the saved gates when training (Note [Recurrent GEMMs on CPU] in packed_gemm.h;
// the gate passes are built per instruction set, Note [CPU instruction sets]); one thread team
// runs the whole sequence (Note [One thread team per sequence]). Backward: the reverse recurrence
// the same way (carry GEMM per unit block, then that block's gate backward), then
// lstm_layer_backward_impl's large weight-gradient GEMMs. Buffers that never leave a call come
// from pooled memory (Note [CPU scratch memory] in scratch_pool.h).
// All arithmetic is in the opmath type (float for bf16/fp16), with c carried in it across steps
// and h too, except where bf16 products take h rounded anyway (below); outputs are rounded to
// the input dtype once.
//
// Note [bfloat16 GEMMs on CPU]
// For bfloat16 layers on a CPU with bf16 dot-product instructions (AVX512_BF16; oneDNN also uses
// AMX where present) the input projection and the backward's weight/input-gradient GEMMs run as
// bf16 GEMMs (at::mm -> oneDNN; dgates rounded to bf16). The per-step recurrent product: on CPUs
// with AMX (and H a multiple of 16, P even) each unit block multiplies h_prev rounded to bf16 by
// its W_hh columns packed once per call in oneDNN's VNNI layout, accumulating in fp32
// (BlockedOperandBf16, Note [Recurrent GEMMs on CPU]); elsewhere one bf16 at::mm per step, the
// fp32 unit-block products or (AVX512_BF16 CPUs) bf16 unit-block products on a hand-written
// dot-product kernel (Note [bf16 dot-product GEMM on CPU]), whichever is measured faster for the
// shape (Bf16Recurrence). The gate pass computes in fp32; without a projection it reads the bf16
// input projection as it is and writes h rounded to bf16 (the next product and the output take
// nothing else: no widening pass over [N, 4H], no per-step rounding of h, no final rounding of the
// output). The backward's carry: on AMX with H a multiple of 64, dgates rounded to bf16 (written
// by the gate backward alongside the fp32 ones, then also the large GEMMs' operand) times W_hh
// packed in bf16, as oneDNN's bf16 LSTM does; without AMX the same bf16 carry on the dot-product
// kernel where it is measured faster than fp32 for the shape (bf16_dot_carry, gemm_choice.h);
// otherwise fp32 (the fused recurrence) or, with a projection, bf16 at::mm per step. Measured on a
// 2-core Xeon with AMX: [6400,512]x[512,2048] 16 ms vs 112 ms in fp32; T=100 B=64 H=512 bf16
// inference 50 -> 22 ms with the bf16 gate-pass I/O and pooled memory (nn.LSTM 21), fwd+bwd 136 ->
// 102 ms with the bf16 carry (nn.LSTM 130). at::mm's products come out rounded to bf16 (nn.LSTM's
// oneDNN bf16 path keeps them in fp32), an extra relative error of 2^-9 on each pre-activation
// term; the tests hold the result to the same bf16 error rule as before (within 2x nn.LSTM's own
// bf16 error). FUSED_LSTM_CPU_BF16_GEMM=0 forces the fp32 GEMMs (=1 forces bf16 ones).
#include "cpu/lstm_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cpu/gate_kernels.h"
#include "cpu/gemm_choice.h"
#include "cpu/operand_cache.h"
#include "cpu/packed_gemm.h"
#include "cpu/recurrence.h"
#include "cpu/scratch_pool.h"
#include "kernels/lstm_step.h"
#include "lstm_common.h"

namespace fused_lstm {
namespace cpu {

// Note [bfloat16 GEMMs on CPU]: whether a bf16 layer's GEMMs run in bf16 here.
bool use_bf16_gemms() {
  if (const char* forced = std::getenv("FUSED_LSTM_CPU_BF16_GEMM")) {
    TORCH_CHECK_VALUE(std::strcmp(forced, "0") == 0 || std::strcmp(forced, "1") == 0,
                      "fused_lstm: FUSED_LSTM_CPU_BF16_GEMM must be 0 or 1, got '", forced, "'");
    return forced[0] == '1';
  }
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool has_bf16_dot = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") != 0;
  }();
  return has_bf16_dot && at::hasMKLDNN() && at::globalContext().userEnabledMkldnn();
#else
  return false;
#endif
}

namespace {

// Note [Single steps on CPU]
// One step of a few rows (T = 1 calls, LSTMCell steps, decoding loops) is two small products and
// a gate pass: microseconds of arithmetic, so fixed costs decide. The general path adds a step
// schedule, pooled buffers, a bias tensor and a final-state gather. Here: x · W_ihᵀ and h · W_hhᵀ
// into two small buffers (each by at::mm or by dot products along the weights' stored rows, no
// packing or transposed copy: whichever is measured faster on this host, Note [Measured GEMM
// choice on CPU]), the gate pass on them, and h's final state copied from the output row.
constexpr int64_t kSingleStepMaxRows = 8;  // more rows: the row dot products re-read the weights

bool single_step_applies(const LayerShape& s, at::ScalarType dtype) {
  return s.steps == 1 && !s.has_proj && s.batch <= kSingleStepMaxRows && s.input > 0 &&
         (dtype == at::kFloat || dtype == at::kDouble);
}

ForwardResult forward_single_step(const LayerShape& s, const Tensor& input, const Tensor& hx, const Tensor& cx,
                                  const Tensor& weight_ih, const Tensor& weight_hh,
                                  const c10::optional<Tensor>& bias_ih, const c10::optional<Tensor>& bias_hh,
                                  bool save_workspace) {
  const int64_t B = s.batch, H = s.hidden, I = s.input;
  const auto options = input.options();
  Tensor out = at::empty({B, H}, options);
  Tensor c_state = cx.contiguous().clone();
  Tensor gates = save_workspace ? at::empty(per_token_shape(s, 4 * H), options) : at::empty({0}, options);
  Tensor cells = save_workspace ? at::empty(per_token_shape(s, H), options) : at::empty({0}, options);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "lstm_layer_forward_cpu_single_step", [&] {
    Tensor products = at::empty({2, B, 4 * H}, options);  // one allocation for both
    Tensor pre = products[0], rec = products[1];
    cpu::small_linear(input.reshape({B, I}).contiguous(), weight_ih.contiguous(), pre);
    cpu::small_linear(hx.contiguous(), weight_hh.contiguous(), rec);
    std::vector<scalar_t> bias(4 * H, scalar_t(0));
    if (s.has_bias) {
      const Tensor b_ih = bias_ih->contiguous(), b_hh = bias_hh->contiguous();  // kept alive while read
      const scalar_t* b_ih_p = b_ih.const_data_ptr<scalar_t>();
      const scalar_t* b_hh_p = b_hh.const_data_ptr<scalar_t>();
      for (int64_t n = 0; n < 4 * H; ++n) bias[n] = b_ih_p[n] + b_hh_p[n];
    }
    const scalar_t* pre_p = pre.const_data_ptr<scalar_t>();
    const scalar_t* rec_p = rec.const_data_ptr<scalar_t>();
    const auto forward_cells = cpu::gate_kernels().forward<scalar_t>();
    scalar_t* gates_p = save_workspace ? gates.data_ptr<scalar_t>() : nullptr;
    scalar_t* cells_p = save_workspace ? cells.data_ptr<scalar_t>() : nullptr;
    for (int64_t b = 0; b < B; ++b) {
      forward_cells(pre_p + b * 4 * H, rec_p + b * 4 * H, H, bias.data(), c_state.data_ptr<scalar_t>() + b * H,
                    out.data_ptr<scalar_t>() + b * H, gates_p ? gates_p + b * 4 * H : nullptr,
                    cells_p ? cells_p + b * H : nullptr, H, 0, H);
    }
  });
  // hy is h of the only step; a copy, not a view: the op's outputs never alias one another.
  return {out.view(per_token_shape(s, H)), out.clone(), c_state, gates, cells};
}

// The recurrence of a bf16 layer without AMX (Note [bfloat16 GEMMs on CPU]): one bf16 at::mm of
// the whole product per step, or the fp32 unit-block products of fp32 layers (h and W_hh in fp32;
// more precise, and faster at some shapes: measured on a 2-core AMD EPYC, B=16 H=256 0.52 -> 0.64x
// nn.LSTM, but B=64 H=512 0.86 -> 0.65x), or -- on CPUs with AVX512_BF16 -- bf16 unit-block
// products by the dot-product kernel (BlockedOperandBf16::Kernel::kBf16Dot, Note [bf16 dot-product
// GEMM on CPU]), through the AMX path's code (h and the input projection in bf16). Which is
// measured per shape (Note [Measured GEMM choice on CPU]); FUSED_LSTM_CPU_BF16_RECURRENCE=bf16_mm,
// fp32 or bf16_dot pins one (bf16_dot on a CPU without AVX512_BF16: a ValueError; read by
// bf16_recurrence_from_env(), gemm_choice.h, which the backward's carry choice shares).
enum class Bf16Recurrence { kBf16Mm, kFp32Blocks, kBf16Dot };  // (the candidates' order)

ForwardResult forward_sequence(const LayerShape& s, const Tensor& input, const Tensor& hx, const Tensor& cx,
                               const Tensor& weight_ih, const Tensor& weight_hh, const c10::optional<Tensor>& bias_ih,
                               const c10::optional<Tensor>& bias_hh, const c10::optional<Tensor>& weight_hr,
                               const c10::optional<Tensor>& batch_sizes, bool reverse, bool save_workspace,
                               Bf16Recurrence bf16_recurrence);

}  // namespace

ForwardResult lstm_layer_forward_cpu(const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& weight_ih,
                                     const Tensor& weight_hh, const c10::optional<Tensor>& bias_ih,
                                     const c10::optional<Tensor>& bias_hh, const c10::optional<Tensor>& weight_hr,
                                     const c10::optional<Tensor>& batch_sizes, bool reverse, bool save_workspace) {
  // Below autograd: the op is differentiated by its backward op, never through its internals.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const LayerShape s = check_layer_arguments("fused_lstm.lstm_layer_forward", input, hx, cx, weight_ih, weight_hh,
                                             bias_ih, bias_hh, weight_hr, batch_sizes);
  if (s.tokens == 0) return forward_without_tokens(s, input, hx, cx, save_workspace);
  cpu::check_gemm_choice_environment();  // a bad value fails every call, not only where it is read
  const int pinned = bf16_recurrence_from_env();
  if (single_step_applies(s, input.scalar_type())) {
    return forward_single_step(s, input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, save_workspace);
  }
  auto run = [&](Bf16Recurrence how) {
    return forward_sequence(s, input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, batch_sizes, reverse,
                            save_workspace, how);
  };
  const bool bf16_without_amx = input.scalar_type() == at::kBFloat16 && use_bf16_gemms() &&
                                s.steps >= kMinStepsToPrepareWeights &&
                                !(s.proj % 2 == 0 && s.hidden % 16 == 0 && BlockedOperandBf16::available());
  if (!bf16_without_amx) return run(Bf16Recurrence::kBf16Mm);  // (the choice does not apply)
  std::ostringstream key;
  int64_t rows_class = 1;
  while (rows_class < s.batch) rows_class *= 2;
  key << "bf16 recurrence rows<=" << rows_class << " P=" << s.proj << " H=" << s.hidden
      << " threads=" << at::get_num_threads();
  // Measuring runs each candidate on this call's own operands; the winner's result is returned.
  // [bf16_dot hook] The dot-product kernel is a third candidate where the CPU runs it.
  const bool bf16_dot = BlockedOperandBf16::bf16_dot_available();
  TORCH_CHECK_VALUE(pinned != static_cast<int>(Bf16Recurrence::kBf16Dot) || bf16_dot,
                    "fused_lstm: FUSED_LSTM_CPU_BF16_RECURRENCE=bf16_dot needs a CPU with AVX512_BF16 (and "
                    "ATEN_CPU_CAPABILITY avx512); this process has none");
  std::vector<std::string> candidates = {"bf16_mm", "fp32"};
  if (bf16_dot) candidates.push_back("bf16_dot");
  std::array<std::optional<ForwardResult>, 3> results;
  const int chosen = fastest_candidate(
      key.str(), candidates, [&](int i) { results[i] = run(static_cast<Bf16Recurrence>(i)); }, pinned);
  return results[chosen].has_value() ? *results[chosen] : run(static_cast<Bf16Recurrence>(chosen));
}

namespace {

ForwardResult forward_sequence(const LayerShape& s, const Tensor& input, const Tensor& hx, const Tensor& cx,
                               const Tensor& weight_ih, const Tensor& weight_hh, const c10::optional<Tensor>& bias_ih,
                               const c10::optional<Tensor>& bias_hh, const c10::optional<Tensor>& weight_hr,
                               const c10::optional<Tensor>& batch_sizes, bool reverse, bool save_workspace,
                               Bf16Recurrence bf16_recurrence) {
  const int64_t N = s.tokens, B = s.batch, H = s.hidden, P = s.proj;
  const auto dtype = input.scalar_type();
  const auto acc_type = opmath_type(dtype);
  const auto acc = input.options().dtype(acc_type);

  // How the GEMMs run. The recurrent product: each unit block multiplies its slice inside the
  // step's region, in the opmath type or (bf16 GEMMs on AMX, Note [bfloat16 GEMMs on CPU]) in
  // bf16; other bf16 GEMMs take the whole product through at::mm before each step's region.
  // (Blocks of a multiple of 16 units: oneDNN packs bf16 weights in panels of 64 columns.)
  // Sequences of fewer than kMinStepsToPrepareWeights steps (T=1 decoding, say) skip the
  // preparation too: the whole product per step through at::mm, which packs internally.
  const bool bf16_gemms = dtype == at::kBFloat16 && use_bf16_gemms();
  const bool prepare_weights = s.steps >= kMinStepsToPrepareWeights;
  // [bf16_dot hook] "amx_recurrence": bf16 unit-block products (BlockedOperandBf16), by oneDNN on
  // AMX or, where the measured choice says bf16_dot (only without the AMX path), by the
  // AVX512_BF16 dot-product kernel (any H, P).
  const bool dot_recurrence = prepare_weights && bf16_gemms && bf16_recurrence == Bf16Recurrence::kBf16Dot;
  const bool amx_recurrence = dot_recurrence || (prepare_weights && bf16_gemms && P % 2 == 0 && H % 16 == 0 &&
                                                 cpu::BlockedOperandBf16::available());
  const bool whole_product =
      !prepare_weights || (bf16_gemms && !amx_recurrence && bf16_recurrence == Bf16Recurrence::kBf16Mm);
  // AMX layers without projection keep the input projection and h in bf16 (ForwardCellsBf16Fn):
  // h rounded to bf16 is all its consumers (the next step's product, the output) ever take.
  const bool bf16_io = amx_recurrence && !s.has_proj;

  // Hoisted input projection for all steps: one GEMM, into pooled memory (Note [CPU scratch
  // memory]: fresh pages for it cost a quarter of the GEMM). The biases are added in the gate
  // pass (folding them in with addmm costs a [N, 4H] broadcast copy: 12 ms of 150 at T=100 B=64
  // H=512).
  // The GEMM is the measured choice for this host and shape (Note [Measured GEMM choice on CPU]).
  Tensor pre = cpu::scratch_empty({N, 4 * H}, bf16_gemms ? at::kBFloat16 : acc_type);
  if (bf16_gemms) {
    pre = cpu::linear(input.reshape({N, s.input}), weight_ih.contiguous(), pre);
    if (!bf16_io) {  // widened for the float gate pass
      Tensor widened = cpu::scratch_empty({N, 4 * H}, acc_type);
      widened.copy_(pre);
      pre = widened;
    }
  } else {
    pre = cpu::linear(input.reshape({N, s.input}).to(acc_type), weight_ih.to(acc_type).contiguous(), pre);
  }
  const Tensor bias =
      s.has_bias ? (bias_ih->to(acc_type) + bias_hh->to(acc_type)).contiguous() : at::zeros({4 * H}, acc);
  const Tensor w_hh_t = !whole_product ? Tensor() : bf16_gemms ? weight_hh.t() : weight_hh.to(acc_type).t();
  const Tensor w_hr_t = s.has_proj ? weight_hr->to(acc_type).t() : Tensor();

  // Buffers for the whole sequence, allocated once (no per-step allocation). `out`, h of every
  // token: the output itself (opmath layers, bf16_io layers), else opmath scratch rounded into
  // the output at the end.
  Tensor out = dtype == acc_type ? at::empty({N, P}, acc)
               : bf16_io         ? at::empty({N, P}, input.options())
                                 : cpu::scratch_empty({N, P}, acc_type);
  const Tensor h0 = bf16_io ? hx.contiguous() : hx.to(acc_type).contiguous();  // out's dtype
  Tensor h_joined;  // only for steps whose rows start from both out and hx (previous_h)
  Tensor c_state = cx.to(acc_type).contiguous().clone();
  Tensor h_unprojected = s.has_proj ? at::empty({B, H}, acc) : Tensor();
  // Saved for backward, one row per token: [T, B, 4H] / [T, B, H] (or [N, .] packed); scratch
  // memory too, back in the pool once autograd has run the backward and let them go.
  Tensor gates = save_workspace ? cpu::scratch_empty(per_token_shape(s, 4 * H), acc_type) : at::empty({0}, acc);
  Tensor cells = save_workspace ? cpu::scratch_empty(per_token_shape(s, H), acc_type) : at::empty({0}, acc);

  const auto schedule = make_step_schedule(s, batch_sizes, reverse);
  AT_DISPATCH_FLOATING_TYPES(acc_type, "lstm_layer_forward_cpu", [&] {
    const auto forward_cells = cpu::gate_kernels().forward<scalar_t>();
    const auto forward_cells_bf16_io = cpu::gate_kernels().forward_bf16_io;
    const int64_t block = recurrence_block_size(H, B, P, 4, /*align=*/16, sizeof(scalar_t));
    const int64_t num_blocks = (H + block - 1) / block;
    // [K, 4H]: W_hhᵀ with its columns in (block, gate, unit) order: a transposed copy
    // (forward_blocked_weight), or for MKL's packed path, which transposes while packing, a
    // transposed view of W_hh's rows reordered (forward_blocked_rows).
    Tensor w_hh_blocked;
    if (!whole_product && !amx_recurrence &&
        cpu::BlockedOperand<scalar_t>::packs_with_mkl(B, P, 4 * std::min(block, H))) {
      const Tensor rows = cpu::scratch_empty({4 * H, P}, acc_type);
      forward_blocked_rows<scalar_t>(weight_hh.to(acc_type), H, block, rows);
      w_hh_blocked = rows.t();
    } else if (!whole_product) {  // Note [Prepared weight cache]
      w_hh_blocked = prepared_forward_operand(weight_hh, H, block, acc_type);
    }
    std::optional<cpu::BlockedOperand<scalar_t>> w_blocks;
    std::optional<cpu::BlockedOperandBf16> w_blocks_bf16;
    if (amx_recurrence) {
      w_blocks_bf16.emplace(w_hh_blocked, block_column_begin(H, block, 4),
                            dot_recurrence ? cpu::BlockedOperandBf16::Kernel::kBf16Dot
                                           : cpu::BlockedOperandBf16::Kernel::kOneDnnAmx);  // [bf16_dot hook]
    } else if (!whole_product) {
      w_blocks.emplace(w_hh_blocked, block_column_begin(H, block, 4), B);
    }
    // AMX products of float h (a projection): h_prev rounded to bf16 once per step.
    Tensor h_prev_bf16 = amx_recurrence && !bf16_io ? at::empty({B, P}, acc.dtype(at::kBFloat16)) : Tensor();
    // Recurrent products, [B, 4H]: columns in the whole bf16 product's gate-major order, else in
    // w_hh_blocked's (block u's [rows, 4 * units] product at columns 4 * j0, row stride 4H).
    Tensor rec = at::empty({B * 4 * H}, acc);
    scalar_t* rec_p = rec.data_ptr<scalar_t>();
    const scalar_t* bias_p = bias.data_ptr<scalar_t>();
    scalar_t* c_p = c_state.data_ptr<scalar_t>();
    // The per-token buffers' base pointers, looked up once (the per-step work indexes them):
    // pre and out in bf16 for bf16_io layers, in scalar_t otherwise.
    const scalar_t* pre_p = bf16_io ? nullptr : pre.const_data_ptr<scalar_t>();
    const c10::BFloat16* pre_bf16_p = bf16_io ? pre.const_data_ptr<c10::BFloat16>() : nullptr;
    scalar_t* out_p = bf16_io ? nullptr : out.data_ptr<scalar_t>();
    c10::BFloat16* out_bf16_p = bf16_io ? out.data_ptr<c10::BFloat16>() : nullptr;
    scalar_t* h_unprojected_p = s.has_proj ? h_unprojected.data_ptr<scalar_t>() : nullptr;
    scalar_t* gates_base = save_workspace ? gates.data_ptr<scalar_t>() : nullptr;
    scalar_t* cells_base = save_workspace ? cells.data_ptr<scalar_t>() : nullptr;
    // Per step (Note [One thread team per sequence]): `serial` finds h_prev (joining rows where a
    // reverse packed step starts new sequences), runs the whole product or rounds h_prev to bf16
    // where those are used; `blocks` runs unit blocks' products and gate passes; `finish`
    // projects h. Without whole products or projection, the serial part is pointer arithmetic
    // except for joins, and one thread team runs the sequence.
    const scalar_t* h_prev = nullptr;               // [rows, P], row stride P
    const c10::BFloat16* h_prev_rounded = nullptr;  // the same in bf16 (AMX products)
    auto needs_join = [&](int64_t k) { return schedule[k].prev_rows > 0 && schedule[k].prev_rows < schedule[k].rows; };
    auto serial = [&](int64_t k) {
      const StepRows& step = schedule[k];
      const int64_t rows = step.rows;
      if (bf16_io) {
        h_prev_rounded = previous_h<c10::BFloat16>(step, P, out, h0, h_joined);
      } else {
        h_prev = previous_h<scalar_t>(step, P, out, h0, h_joined);
      }
      if (whole_product) {
        const Tensor h_prev_rows = at::from_blob(const_cast<scalar_t*>(h_prev), {rows, P}, acc);
        Tensor rec_rows = rec.view({B, 4 * H}).narrow(0, 0, rows);
        if (bf16_gemms) {
          rec_rows.copy_(at::mm(h_prev_rows.to(at::kBFloat16), w_hh_t));
        } else {
          at::mm_out(rec_rows, h_prev_rows, w_hh_t);
        }
      } else if (amx_recurrence && !bf16_io) {  // through ATen's copy: vectorised for this CPU
        h_prev_bf16.narrow(0, 0, rows).copy_(at::from_blob(const_cast<scalar_t*>(h_prev), {rows, P}, acc));
        h_prev_rounded = h_prev_bf16.const_data_ptr<c10::BFloat16>();
      }
    };
    const bool one_team = !whole_product && !s.has_proj && (bf16_io || !amx_recurrence);
    auto blocks = [&](int64_t k, int64_t u_begin, int64_t u_end) {
      const StepRows& step = schedule[k];
      const int64_t rows = step.rows;
      // In a team only joins run `serial`: other steps read h_prev where it is, here.
      const scalar_t* step_h_prev = h_prev;
      const c10::BFloat16* step_h_prev_rounded = h_prev_rounded;
      if (one_team && !needs_join(k)) {
        if (bf16_io) {
          step_h_prev_rounded = previous_h<c10::BFloat16>(step, P, out, h0, h_joined);
        } else {
          step_h_prev = previous_h<scalar_t>(step, P, out, h0, h_joined);
        }
      }
      const int64_t pre_offset = step.row_offset * 4 * H;
      scalar_t* gates_p = save_workspace ? gates_base + pre_offset : nullptr;
      scalar_t* cells_p = save_workspace ? cells_base + step.row_offset * H : nullptr;
      for (int64_t u = u_begin; u < u_end; ++u) {
        const int64_t j0 = u * block, units = std::min(block, H - j0);
        if (bf16_io) {
          prefetch_gate_rows(pre_bf16_p + pre_offset + j0, rows, 4 * H, H, units);
        } else {
          prefetch_gate_rows(pre_p + pre_offset + j0, rows, 4 * H, H, units);
        }
        // Gate g of unit j0 + jj of row b at rec_u[b * row_stride + g * gate_stride + jj].
        const scalar_t* rec_u;
        int64_t row_stride, gate_stride;
        if (whole_product) {
          rec_u = rec_p + j0, row_stride = 4 * H, gate_stride = H;
        } else {
          scalar_t* product = rec_p + 4 * j0;
          if (amx_recurrence) {  // bf16 layers only, so scalar_t is float here
            w_blocks_bf16->multiply(u, rows, step_h_prev_rounded, P, reinterpret_cast<float*>(product), 4 * H);
          } else {
            w_blocks->multiply(u, rows, step_h_prev, P, product, 4 * H);
          }
          rec_u = product, row_stride = 4 * H, gate_stride = units;
        }
        for (int64_t b = 0; b < rows; ++b) {
          scalar_t* gates_row = gates_p ? gates_p + b * 4 * H : nullptr;
          scalar_t* cells_row = cells_p ? cells_p + b * H : nullptr;
          if (bf16_io) {  // bf16 layers only, so scalar_t is float here
            forward_cells_bf16_io(pre_bf16_p + pre_offset + b * 4 * H,
                                  reinterpret_cast<const float*>(rec_u + b * row_stride), gate_stride,
                                  reinterpret_cast<const float*>(bias_p), reinterpret_cast<float*>(c_p + b * H),
                                  out_bf16_p + (step.row_offset + b) * P, reinterpret_cast<float*>(gates_row),
                                  reinterpret_cast<float*>(cells_row), H, j0, j0 + units);
            continue;
          }
          scalar_t* h_row = s.has_proj ? h_unprojected_p + b * H : out_p + (step.row_offset + b) * P;
          forward_cells(pre_p + pre_offset + b * 4 * H, rec_u + b * row_stride, gate_stride, bias_p, c_p + b * H, h_row,
                        gates_row, cells_row, H, j0, j0 + units);
        }
      }
    };
    auto finish = [&](int64_t k) {
      if (!s.has_proj) return;
      const StepRows& step = schedule[k];
      Tensor out_rows = out.narrow(0, step.row_offset, step.rows);
      at::mm_out(out_rows, h_unprojected.narrow(0, 0, step.rows), w_hr_t);
    };
    run_recurrence(static_cast<int64_t>(schedule.size()), num_blocks, block_grain(B, P, block), one_team, needs_join,
                   serial, blocks, finish, [&] {
                     if (amx_recurrence) cpu::BlockedOperandBf16::release_thread_state();
                   });
  });

  const Tensor output = out.to(dtype).view(per_token_shape(s, P));  // (no copy where out is it)
  const Tensor hy = out.index_select(0, final_row_index(schedule, B, input.device())).to(dtype);
  return {output, hy, c_state.to(dtype), gates, cells};
}

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_IMPL(fused_lstm, CPU, m) {
  m.impl("lstm_layer_forward", &cpu::lstm_layer_forward_cpu);
  m.impl("lstm_layer_backward", &cpu::lstm_layer_backward_cpu);
}

}  // namespace fused_lstm
