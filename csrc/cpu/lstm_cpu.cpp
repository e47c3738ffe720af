// CPU kernel of the forward op (the backward's: lstm_cpu_backward.cpp).
//
// A call with one step of a few rows takes the single-step path (Note [Single steps on CPU]).
// Otherwise: plan_forward decides once how the call runs (ForwardPlan); the input projection for
// all steps is one GEMM; then ForwardSteps runs the recurrence over blocks of hidden units, each
// block's task per step multiplying h_prev by its block's slice of W_hhᵀ (all four gates of its
// units) and running the vectorised gate pass on that product while it is in cache (Note
// [Recurrent GEMMs on CPU] in packed_gemm.h, Note [CPU instruction sets] in gate_kernels.h), one
// thread team for the whole sequence (Note [One thread team per sequence] in recurrence.h).
// Arithmetic is in the opmath type (float for bf16/fp16), c and h carried in it across steps
// except where bf16 products take h rounded anyway (Note [bfloat16 GEMMs on CPU] in lstm_cpu.h);
// outputs are rounded to the input dtype once.
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
#include "layer_args.h"
#include "step_schedule.h"

namespace fused_lstm {
namespace cpu {

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

ForwardResult forward_single_step(const LayerShape& s, const ForwardArgs& a) {
  const int64_t B = s.batch, H = s.hidden, I = s.input;
  const auto options = a.input.options();
  // Fresh outputs filled by plain copies: clone()/copy_() would each cost a dispatch and a
  // TensorIterator, a visible share of a step of a few microseconds.
  Tensor out = at::empty({B, H}, options);
  Tensor hy = at::empty({B, H}, options);
  Tensor c_state = at::empty({B, H}, options);
  Tensor gates = a.save_workspace ? at::empty(per_token_shape(s, 4 * H), options) : at::empty({0}, options);
  Tensor cells = a.save_workspace ? at::empty(per_token_shape(s, H), options) : at::empty({0}, options);
  AT_DISPATCH_FLOATING_TYPES(a.input.scalar_type(), "lstm_layer_forward_cpu_single_step", [&] {
    const Tensor cx = a.cx.contiguous();
    std::memcpy(c_state.data_ptr<scalar_t>(), cx.const_data_ptr<scalar_t>(), B * H * sizeof(scalar_t));
    Tensor products = at::empty({2, B, 4 * H}, options);  // one allocation for both
    Tensor pre = products[0], rec = products[1];
    cpu::small_linear(a.input.reshape({B, I}).contiguous(), a.weight_ih.contiguous(), pre);
    cpu::small_linear(a.hx.contiguous(), a.weight_hh.contiguous(), rec);
    // b_ih + b_hh, in a buffer each thread keeps (no allocation a step).
    thread_local std::vector<scalar_t> bias;
    bias.assign(4 * H, scalar_t(0));
    if (s.has_bias) {
      const Tensor b_ih = a.bias_ih->contiguous(), b_hh = a.bias_hh->contiguous();  // kept alive while read
      const scalar_t* b_ih_p = b_ih.const_data_ptr<scalar_t>();
      const scalar_t* b_hh_p = b_hh.const_data_ptr<scalar_t>();
      for (int64_t n = 0; n < 4 * H; ++n) bias[n] = b_ih_p[n] + b_hh_p[n];
    }
    const scalar_t* pre_p = pre.const_data_ptr<scalar_t>();
    const scalar_t* rec_p = rec.const_data_ptr<scalar_t>();
    const auto forward_cells = cpu::gate_kernels().forward<scalar_t>();
    scalar_t* gates_p = a.save_workspace ? gates.data_ptr<scalar_t>() : nullptr;
    scalar_t* cells_p = a.save_workspace ? cells.data_ptr<scalar_t>() : nullptr;
    scalar_t* out_p = out.data_ptr<scalar_t>();
    for (int64_t b = 0; b < B; ++b) {
      forward_cells(pre_p + b * 4 * H, rec_p + b * 4 * H, H, bias.data(), c_state.data_ptr<scalar_t>() + b * H,
                    out_p + b * H, gates_p ? gates_p + b * 4 * H : nullptr, cells_p ? cells_p + b * H : nullptr, H, 0,
                    H);
    }
    // hy is h of the only step; its own buffer: the op's outputs never alias one another.
    std::memcpy(hy.data_ptr<scalar_t>(), out_p, B * H * sizeof(scalar_t));
  });
  return {out.view(per_token_shape(s, H)), hy, c_state, gates, cells};
}

// The recurrence of a bf16 layer without AMX (Note [bfloat16 GEMMs on CPU]): one bf16 at::mm of
// the whole product per step; the fp32 unit-block products of fp32 layers (h and W_hh in fp32;
// more precise); or, on CPUs with AVX512_BF16, bf16 unit-block products on the dot-product kernel
// (Note [bf16 dot-product GEMM on CPU]). Each is fastest at some shapes on some hosts, so which
// runs is measured per shape (Note [Measured GEMM choice on CPU]);
// FUSED_LSTM_CPU_BF16_RECURRENCE=bf16_mm, fp32 or bf16_dot pins one (bf16_recurrence_from_env in
// gemm_choice.h, shared with the backward's carry choice).
enum class Bf16Recurrence { kBf16Mm, kFp32Blocks, kBf16Dot };  // (the candidates' order)

// How the per-step recurrent product h_prev · W_hhᵀ runs (Note [Recurrent GEMMs on CPU]).
enum class RecurrentProduct {
  // The whole [rows, 4H] product per step through at::mm (which packs internally), before the
  // step's parallel region: sequences too short to amortise preparing the weight, and bf16 layers
  // without AMX where one bf16 at::mm is measured faster (Bf16Recurrence).
  kWholeMm,
  // Each unit block multiplies its slice of the prepared W_hhᵀ in the opmath type, inside the
  // step's region (BlockedOperand).
  kBlocks,
  // The same in bf16 with float accumulation (BlockedOperandBf16): bf16 layers on AMX (oneDNN's
  // kernel: blocks of a multiple of 16 units, P even, for its VNNI packing) or on the
  // AVX512_BF16 dot-product kernel where the measured choice takes it (any H, P).
  kBlocksBf16,
};

// How one forward call runs, decided once from its shape, dtype and the host before anything
// runs. Everything that varies by path below reads these fields.
struct ForwardPlan {
  RecurrentProduct product;
  cpu::BlockedOperandBf16::Kernel bf16_kernel;  // which kernel serves kBlocksBf16
  // A bf16 layer whose GEMMs run in bf16 (Note [bfloat16 GEMMs on CPU]): the input projection,
  // and a kWholeMm product.
  bool bf16_gemms;
  // The gate pass reads the input projection and writes h in bf16 (kBlocksBf16 without a
  // projection): h rounded to bf16 is all its consumers (the next product, the output) take.
  bool bf16_io;
  // One thread team runs the whole sequence (Note [One thread team per sequence]): nothing but
  // joins of packed rows needs the calling thread between steps.
  bool one_team;
};

ForwardPlan plan_forward(const LayerShape& s, at::ScalarType dtype, Bf16Recurrence bf16_recurrence) {
  ForwardPlan plan{};
  plan.bf16_gemms = dtype == at::kBFloat16 && use_bf16_gemms();
  if (s.steps < kMinStepsToPrepareWeights) {
    plan.product = RecurrentProduct::kWholeMm;
  } else if (plan.bf16_gemms && s.proj % 2 == 0 && s.hidden % 16 == 0 && cpu::BlockedOperandBf16::available()) {
    plan.product = RecurrentProduct::kBlocksBf16;
    plan.bf16_kernel = cpu::BlockedOperandBf16::Kernel::kOneDnnAmx;
  } else if (plan.bf16_gemms && bf16_recurrence == Bf16Recurrence::kBf16Dot) {
    plan.product = RecurrentProduct::kBlocksBf16;
    plan.bf16_kernel = cpu::BlockedOperandBf16::Kernel::kBf16Dot;
  } else if (plan.bf16_gemms && bf16_recurrence == Bf16Recurrence::kBf16Mm) {
    plan.product = RecurrentProduct::kWholeMm;
  } else {
    plan.product = RecurrentProduct::kBlocks;
  }
  plan.bf16_io = plan.product == RecurrentProduct::kBlocksBf16 && !s.has_proj;
  // A projection's GEMM (and a whole product) is ATen work between the steps' block tasks.
  plan.one_team = plan.product != RecurrentProduct::kWholeMm && !s.has_proj;
  return plan;
}

// The tensors of one forward call, allocated once before the steps (none per step).
struct ForwardBuffers {
  Tensor pre;            // [N, 4H] x · W_ihᵀ: bf16 where plan.bf16_io, else opmath
  Tensor bias;           // [4H] b_ih + b_hh (zeros without biases), opmath
  Tensor w_hh_t;         // kWholeMm: W_hhᵀ, bf16 (bf16_gemms) or opmath
  Tensor w_hr_t;         // projection: W_hrᵀ, opmath
  Tensor out;            // [N, P] h of every token: the output itself where its dtype allows
  Tensor h0;             // hx, in out's dtype
  Tensor h_joined;       // rows joined from out and h0 (previous_h), made on first use
  Tensor c_state;        // [B, H] opmath: c carried across steps; cy in the end
  Tensor h_unprojected;  // projection: [B, H] o * tanh(c) of the step
  Tensor gates, cells;   // the workspace saved for backward, or empty
  Tensor products;       // [B * 4H] opmath: the step's recurrent products
};

ForwardBuffers allocate_forward(const ForwardArgs& a, const LayerShape& s, const ForwardPlan& plan) {
  const int64_t N = s.tokens, B = s.batch, H = s.hidden, P = s.proj;
  const auto dtype = a.input.scalar_type();
  const auto acc_type = opmath_type(dtype);
  const auto acc = a.input.options().dtype(acc_type);
  ForwardBuffers buf;
  // Hoisted input projection for all steps: one GEMM (the measured choice for this host and
  // shape, Note [Measured GEMM choice on CPU]) into pooled memory (Note [CPU scratch memory]:
  // fresh pages for it cost a quarter of the GEMM). The biases are added in the gate pass:
  // folding them in with addmm costs a [N, 4H] broadcast copy.
  buf.pre = cpu::scratch_empty({N, 4 * H}, plan.bf16_gemms ? at::kBFloat16 : acc_type);
  if (plan.bf16_gemms) {
    buf.pre = cpu::linear(a.input.reshape({N, s.input}), a.weight_ih.contiguous(), buf.pre);
    if (!plan.bf16_io) {  // widened for the float gate pass
      Tensor widened = cpu::scratch_empty({N, 4 * H}, acc_type);
      widened.copy_(buf.pre);
      buf.pre = widened;
    }
  } else {
    buf.pre = cpu::linear(a.input.reshape({N, s.input}).to(acc_type), a.weight_ih.to(acc_type).contiguous(), buf.pre);
  }
  buf.bias = s.has_bias ? (a.bias_ih->to(acc_type) + a.bias_hh->to(acc_type)).contiguous() : at::zeros({4 * H}, acc);
  if (plan.product == RecurrentProduct::kWholeMm) {
    buf.w_hh_t = plan.bf16_gemms ? a.weight_hh.t() : a.weight_hh.to(acc_type).t();
  }
  if (s.has_proj) buf.w_hr_t = a.weight_hr->to(acc_type).t();
  buf.out = dtype == acc_type ? at::empty({N, P}, acc)
            : plan.bf16_io    ? at::empty({N, P}, a.input.options())
                              : cpu::scratch_empty({N, P}, acc_type);
  buf.h0 = plan.bf16_io ? a.hx.contiguous() : a.hx.to(acc_type).contiguous();
  buf.c_state = a.cx.to(acc_type).contiguous().clone();
  if (s.has_proj) buf.h_unprojected = at::empty({B, H}, acc);
  // One row per token, [T, B, 4H] / [T, B, H] (or [N, .] packed); scratch memory too, back in the
  // pool once autograd has run the backward and let them go. The saved gates overwrite the input
  // projection where it is in the opmath type: the gate pass reads a row's pre-activations and
  // writes its activations in place (each element read before it is written), instead of
  // writing 8 MiB at T=64 B=32 H=256 to memory not in cache (the op with vs without saving:
  // 11.3 vs 9.0 ms).
  const bool gates_over_pre = a.save_workspace && buf.pre.scalar_type() == acc_type && buf.pre.is_contiguous();
  buf.gates = !a.save_workspace ? at::empty({0}, acc)
              : gates_over_pre  ? buf.pre.view(per_token_shape(s, 4 * H))
                                : cpu::scratch_empty(per_token_shape(s, 4 * H), acc_type);
  buf.cells = a.save_workspace ? cpu::scratch_empty(per_token_shape(s, H), acc_type) : at::empty({0}, acc);
  buf.products = at::empty({B * 4 * H}, acc);
  return buf;
}

// The steps of one forward call, as run_recurrence's parts (Note [One thread team per
// sequence]): serial(k) finds h_prev (joining rows where a reverse packed step starts new
// sequences) and runs a whole product or rounds h_prev to bf16 where the plan uses those;
// blocks(k, ...) runs unit blocks' products and gate passes; finish(k) projects h.
template <typename scalar_t>
class ForwardSteps {
 public:
  ForwardSteps(const ForwardArgs& a, const LayerShape& s, const ForwardPlan& plan, ForwardBuffers& buf,
               const std::vector<StepRows>& schedule)
      : s_(s), plan_(plan), buf_(buf), schedule_(schedule) {
    const int64_t B = s.batch, H = s.hidden, P = s.proj;
    block_ = recurrence_block_size(H, B, P, 4, /*align=*/16, sizeof(scalar_t));
    num_blocks_ = (H + block_ - 1) / block_;
    prepare_weight(a);
    if (plan.product == RecurrentProduct::kBlocksBf16 && !plan.bf16_io) {
      h_prev_bf16_ = at::empty({B, P}, a.input.options().dtype(at::kBFloat16));
    }
    // The per-token buffers' base pointers, looked up once (the per-step work indexes them):
    // pre and out in bf16 for bf16_io plans, in scalar_t otherwise.
    products_ = buf.products.data_ptr<scalar_t>();
    bias_ = buf.bias.data_ptr<scalar_t>();
    c_ = buf.c_state.data_ptr<scalar_t>();
    if (plan.bf16_io) {
      pre_bf16_ = buf.pre.const_data_ptr<c10::BFloat16>();
      out_bf16_ = buf.out.data_ptr<c10::BFloat16>();
    } else {
      pre_ = buf.pre.const_data_ptr<scalar_t>();
      out_ = buf.out.data_ptr<scalar_t>();
    }
    if (s.has_proj) h_unprojected_ = buf.h_unprojected.data_ptr<scalar_t>();
    if (a.save_workspace) {
      gates_ = buf.gates.data_ptr<scalar_t>();
      cells_ = buf.cells.data_ptr<scalar_t>();
    }
  }

  void run() {
    run_recurrence(
        static_cast<int64_t>(schedule_.size()), num_blocks_, block_grain(s_.batch, s_.proj, block_), plan_.one_team,
        [this](int64_t k) { return needs_join(k); }, [this](int64_t k) { serial(k); },
        [this](int64_t k, int64_t u_begin, int64_t u_end) { blocks(k, u_begin, u_end); },
        [this](int64_t k) { finish(k); },
        [this] {
          if (plan_.product == RecurrentProduct::kBlocksBf16) cpu::BlockedOperandBf16::release_thread_state();
        });
  }

 private:
  // The unit-block operand: W_hhᵀ with its columns in (block, gate, unit) order, a transposed copy
  // (cached across calls, Note [Prepared weight cache]; block-major for the fp32/fp64 kernels,
  // [K, 4H] for the bf16 ones) or, for MKL's packed path, which transposes while packing, a
  // transposed view of W_hh's rows reordered.
  void prepare_weight(const ForwardArgs& a) {
    if (plan_.product == RecurrentProduct::kWholeMm) return;
    const int64_t H = s_.hidden;
    const auto acc_type = buf_.c_state.scalar_type();
    const auto columns = block_column_begin(H, block_, 4);
    if (plan_.product == RecurrentProduct::kBlocks &&
        cpu::BlockedOperand<scalar_t>::packs_with_mkl(s_.batch, s_.proj, 4 * std::min(block_, H))) {
      const Tensor rows = cpu::scratch_empty({4 * H, s_.proj}, acc_type);
      forward_blocked_rows<scalar_t>(a.weight_hh.to(acc_type), H, block_, rows);
      w_hh_blocked_ = rows.t();
      w_blocks_.emplace(w_hh_blocked_, columns, s_.batch);
    } else if (plan_.product == RecurrentProduct::kBlocks) {
      w_hh_blocked_ = prepared_forward_operand(a.weight_hh, H, block_, /*block_major=*/true, acc_type);
      w_blocks_.emplace(typename cpu::BlockedOperand<scalar_t>::BlockMajor{}, w_hh_blocked_, s_.proj, columns);
    } else {
      w_hh_blocked_ = prepared_forward_operand(a.weight_hh, H, block_, /*block_major=*/false, acc_type);
      w_blocks_bf16_.emplace(w_hh_blocked_, columns, plan_.bf16_kernel);
    }
  }

  bool needs_join(int64_t k) const { return schedule_[k].prev_rows > 0 && schedule_[k].prev_rows < schedule_[k].rows; }

  void serial(int64_t k) {
    const StepRows& step = schedule_[k];
    const int64_t rows = step.rows, P = s_.proj;
    if (plan_.bf16_io) {
      h_prev_rounded_ = previous_h<c10::BFloat16>(step, P, buf_.out, buf_.h0, buf_.h_joined);
    } else {
      h_prev_ = previous_h<scalar_t>(step, P, buf_.out, buf_.h0, buf_.h_joined);
    }
    const auto acc = buf_.products.options();
    if (plan_.product == RecurrentProduct::kWholeMm) {
      const Tensor h_prev_rows = at::from_blob(const_cast<scalar_t*>(h_prev_), {rows, P}, acc);
      Tensor product_rows = buf_.products.view({s_.batch, 4 * s_.hidden}).narrow(0, 0, rows);
      if (plan_.bf16_gemms) {
        product_rows.copy_(at::mm(h_prev_rows.to(at::kBFloat16), buf_.w_hh_t));
      } else {
        at::mm_out(product_rows, h_prev_rows, buf_.w_hh_t);
      }
    } else if (plan_.product == RecurrentProduct::kBlocksBf16 && !plan_.bf16_io) {
      // Rounded through ATen's copy: vectorised for this CPU.
      h_prev_bf16_.narrow(0, 0, rows).copy_(at::from_blob(const_cast<scalar_t*>(h_prev_), {rows, P}, acc));
      h_prev_rounded_ = h_prev_bf16_.const_data_ptr<c10::BFloat16>();
    }
  }

  void blocks(int64_t k, int64_t u_begin, int64_t u_end) {
    const StepRows& step = schedule_[k];
    // In a team only joins run `serial`: other steps read h_prev where it is, here.
    const scalar_t* h_prev = h_prev_;
    const c10::BFloat16* h_prev_rounded = h_prev_rounded_;
    if (plan_.one_team && !needs_join(k)) {
      if (plan_.bf16_io) {
        h_prev_rounded = previous_h<c10::BFloat16>(step, s_.proj, buf_.out, buf_.h0, buf_.h_joined);
      } else {
        h_prev = previous_h<scalar_t>(step, s_.proj, buf_.out, buf_.h0, buf_.h_joined);
      }
    }
    for (int64_t u = u_begin; u < u_end; ++u) block_step(step, u, h_prev, h_prev_rounded);
  }

  // Unit block u of one step: its product (unless the step's whole product is done), then the
  // gate pass of its units on every row.
  void block_step(const StepRows& step, int64_t u, const scalar_t* h_prev, const c10::BFloat16* h_prev_rounded) {
    const int64_t H = s_.hidden, P = s_.proj, rows = step.rows;
    const int64_t j0 = u * block_, units = std::min(block_, H - j0);
    const int64_t pre_offset = step.row_offset * 4 * H;
    if (plan_.bf16_io) {
      prefetch_gate_rows(pre_bf16_ + pre_offset + j0, rows, 4 * H, H, units);
    } else {
      prefetch_gate_rows(pre_ + pre_offset + j0, rows, 4 * H, H, units);
    }
    // Gate g of unit j0 + jj of row b at product[b * 4H + g * gate_stride + jj]: the whole
    // product's gate-major columns, or block u's [rows, 4 * units] product at columns 4 * j0.
    const scalar_t* product = products_ + j0;
    int64_t gate_stride = H;
    if (plan_.product != RecurrentProduct::kWholeMm) {
      scalar_t* block_product = products_ + 4 * j0;
      if (plan_.product == RecurrentProduct::kBlocksBf16) {  // bf16 layers only: scalar_t is float
        w_blocks_bf16_->multiply(u, rows, h_prev_rounded, P, reinterpret_cast<float*>(block_product), 4 * H);
      } else {
        w_blocks_->multiply(u, rows, h_prev, P, block_product, 4 * H);
      }
      product = block_product;
      gate_stride = units;
    }
    for (int64_t b = 0; b < rows; ++b) {
      const int64_t row = step.row_offset + b;
      scalar_t* gates_row = gates_ ? gates_ + row * 4 * H : nullptr;
      scalar_t* cells_row = cells_ ? cells_ + row * H : nullptr;
      if (plan_.bf16_io) {  // bf16 layers only: scalar_t is float
        forward_cells_bf16_io_(pre_bf16_ + row * 4 * H, reinterpret_cast<const float*>(product + b * 4 * H),
                               gate_stride, reinterpret_cast<const float*>(bias_), reinterpret_cast<float*>(c_ + b * H),
                               out_bf16_ + row * P, reinterpret_cast<float*>(gates_row),
                               reinterpret_cast<float*>(cells_row), H, j0, j0 + units);
        continue;
      }
      scalar_t* h_row = s_.has_proj ? h_unprojected_ + b * H : out_ + row * P;
      forward_cells_(pre_ + row * 4 * H, product + b * 4 * H, gate_stride, bias_, c_ + b * H, h_row, gates_row,
                     cells_row, H, j0, j0 + units);
    }
  }

  void finish(int64_t k) {
    if (!s_.has_proj) return;
    const StepRows& step = schedule_[k];
    Tensor out_rows = buf_.out.narrow(0, step.row_offset, step.rows);
    at::mm_out(out_rows, buf_.h_unprojected.narrow(0, 0, step.rows), buf_.w_hr_t);
  }

  const LayerShape& s_;
  const ForwardPlan& plan_;
  ForwardBuffers& buf_;
  const std::vector<StepRows>& schedule_;
  int64_t block_ = 0, num_blocks_ = 0;
  Tensor w_hh_blocked_;  // the operand the blocks read (must outlive them)
  std::optional<cpu::BlockedOperand<scalar_t>> w_blocks_;
  std::optional<cpu::BlockedOperandBf16> w_blocks_bf16_;
  Tensor h_prev_bf16_;  // kBlocksBf16 with float h (a projection): h_prev rounded once per step
  // Set by serial(k), read by the step's blocks (after the team's barrier).
  const scalar_t* h_prev_ = nullptr;               // [rows, P], row stride P
  const c10::BFloat16* h_prev_rounded_ = nullptr;  // the same in bf16 (kBlocksBf16)
  scalar_t* products_ = nullptr;
  const scalar_t* bias_ = nullptr;
  scalar_t* c_ = nullptr;
  const scalar_t* pre_ = nullptr;
  const c10::BFloat16* pre_bf16_ = nullptr;
  scalar_t* out_ = nullptr;
  c10::BFloat16* out_bf16_ = nullptr;
  scalar_t* h_unprojected_ = nullptr;
  scalar_t* gates_ = nullptr;
  scalar_t* cells_ = nullptr;
  // The gate passes built for this CPU (Note [CPU instruction sets]).
  const cpu::ForwardCellsFn<scalar_t> forward_cells_ = cpu::gate_kernels().forward<scalar_t>();
  const cpu::ForwardCellsBf16Fn forward_cells_bf16_io_ = cpu::gate_kernels().forward_bf16_io;
};

// A sequence of steps (the general path): plan, buffers, the steps, then the results.
ForwardResult forward_sequence(const ForwardArgs& a, const LayerShape& s, Bf16Recurrence bf16_recurrence) {
  const ForwardPlan plan = plan_forward(s, a.input.scalar_type(), bf16_recurrence);
  ForwardBuffers buf = allocate_forward(a, s, plan);
  const auto schedule = make_step_schedule(s, a.batch_sizes, a.reverse);
  AT_DISPATCH_FLOATING_TYPES(buf.c_state.scalar_type(), "lstm_layer_forward_cpu",
                             [&] { ForwardSteps<scalar_t>(a, s, plan, buf, schedule).run(); });
  const auto dtype = a.input.scalar_type();
  const Tensor output = buf.out.to(dtype).view(per_token_shape(s, s.proj));  // (no copy where out is it)
  const Tensor hy = buf.out.index_select(0, final_row_index(schedule, s.batch, a.input.device())).to(dtype);
  return {output, hy, buf.c_state.to(dtype), buf.gates, buf.cells};
}

// The fused layer over several steps: for bf16 layers without AMX's path, the measured choice of
// how the recurrence runs (Note [bfloat16 GEMMs on CPU] in lstm_cpu.h); else the one plan.
ForwardResult forward_fused(const ForwardArgs& args, const LayerShape& s) {
  const int pinned = bf16_recurrence_from_env();
  const auto dtype = args.input.scalar_type();
  const bool choice_applies = plan_forward(s, dtype, Bf16Recurrence::kBf16Mm).product !=
                              plan_forward(s, dtype, Bf16Recurrence::kFp32Blocks).product;
  if (!choice_applies) return forward_sequence(args, s, Bf16Recurrence::kBf16Mm);
  std::ostringstream key;
  key << "bf16 recurrence rows<=" << round_up_pow2(s.batch) << " P=" << s.proj << " H=" << s.hidden
      << " threads=" << at::get_num_threads();
  // The dot-product kernel is a candidate where this CPU runs it.
  const bool bf16_dot = cpu::BlockedOperandBf16::bf16_dot_available();
  TORCH_CHECK_VALUE(pinned != static_cast<int>(Bf16Recurrence::kBf16Dot) || bf16_dot,
                    "fused_lstm: FUSED_LSTM_CPU_BF16_RECURRENCE=bf16_dot needs a CPU with AVX512_BF16 (and "
                    "ATEN_CPU_CAPABILITY avx512); this process has none");
  std::vector<std::string> candidates = {"bf16_mm", "fp32"};
  if (bf16_dot) candidates.push_back("bf16_dot");
  // Measuring runs each candidate on this call's own operands; the winner's result is returned.
  std::array<std::optional<ForwardResult>, 3> results;
  const int chosen = fastest_candidate(
      key.str(), candidates, [&](int i) { results[i] = forward_sequence(args, s, static_cast<Bf16Recurrence>(i)); },
      pinned);
  return results[chosen].has_value() ? *results[chosen]
                                     : forward_sequence(args, s, static_cast<Bf16Recurrence>(chosen));
}

// Note [ATen's LSTM as a candidate]
// On hosts where oneDNN's LSTM primitive (nn.LSTM's CPU path) is strong, it runs large
// compute-bound inference layers closer to the machine's GEMM peak than the fused layer: measured
// on a 2-core AMD EPYC (Zen 4), T=100 B=64 I=H=512 fp32, 128 ms (~93% of the fp32 FMA peak) against
// 141-149 ms, where every product of the fused layer already runs at 82-88% of it. A drop-in
// nn.LSTM must never be the slower choice, so an inference call of a layer that ATen's LSTM can
// run -- no workspace to save (its gates are not the backward op's), no projection, not packed,
// fp32 or bf16 -- takes whichever of the two is measured faster for its shape class on this host
// (fastest_candidate, Note [Measured GEMM choice on CPU]): ATen's runs the layer as nn.LSTM would
// (a reverse direction on the time-flipped input). cpu_kernel_choices() records each choice;
// FUSED_LSTM_CPU_LAYER=fused|aten_lstm pins one (the test suite pins the fused layer and tests
// ATen's separately). Training calls always run the fused layer.
bool aten_lstm_applies(const ForwardArgs& a, const LayerShape& s) {
  const auto dtype = a.input.scalar_type();
  return !a.save_workspace && !s.has_proj && !s.packed && (dtype == at::kFloat || dtype == at::kBFloat16) &&
         at::hasMKLDNN() && at::globalContext().userEnabledMkldnn();
}

ForwardResult forward_aten_lstm(const ForwardArgs& a, const LayerShape& s) {
  const Tensor input = a.reverse ? a.input.flip(0) : a.input;
  std::vector<Tensor> params = {a.weight_ih, a.weight_hh};
  if (s.has_bias) params.insert(params.end(), {*a.bias_ih, *a.bias_hh});
  auto [output, hy, cy] = at::lstm(input, {a.hx.unsqueeze(0), a.cx.unsqueeze(0)}, params, s.has_bias,
                                   /*num_layers=*/1, /*dropout=*/0.0, /*train=*/false, /*bidirectional=*/false,
                                   /*batch_first=*/false);
  const auto no_workspace = a.input.options().dtype(opmath_type(a.input.scalar_type()));
  // hy and cy copied out of their layer dimension: the op's results are never views (Note
  // [States with a layer dimension]); [B, H] each, a negligible copy beside such a layer.
  return {a.reverse ? output.flip(0) : output, hy.select(0, 0).clone(), cy.select(0, 0).clone(),
          at::empty({0}, no_workspace), at::empty({0}, no_workspace)};
}

ForwardResult layer_forward_cpu(const ForwardArgs& args) {
  // Below autograd: the op is differentiated by its backward op, never through its internals.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const LayerShape s = check_forward_arguments(args);
  if (s.tokens == 0) return forward_without_tokens(s, args);
  cpu::check_gemm_choice_environment();  // a bad value fails every call, not only where it is read
  if (single_step_applies(s, args.input.scalar_type())) return forward_single_step(s, args);
  if (!aten_lstm_applies(args, s)) return forward_fused(args, s);
  std::ostringstream key;
  key << "layer " << c10::toString(args.input.scalar_type()) << " T<=" << round_up_pow2(s.steps)
      << " rows<=" << round_up_pow2(s.batch) << " I=" << s.input << " H=" << s.hidden
      << (args.reverse ? " reverse" : "") << " threads=" << at::get_num_threads();
  // Measuring runs both on this call's own operands; the winner's result is returned.
  std::array<std::optional<ForwardResult>, 2> results;
  const int chosen = fastest_candidate(
      key.str(), {"fused", "aten_lstm"},
      [&](int i) { results[i] = i == 0 ? forward_fused(args, s) : forward_aten_lstm(args, s); },
      layer_kernel_from_env());
  if (results[chosen].has_value()) return *results[chosen];
  return chosen == 0 ? forward_fused(args, s) : forward_aten_lstm(args, s);
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_lstm, CPU, m) { m.impl("lstm_layer_forward", &forward_op<&layer_forward_cpu>); }

}  // namespace cpu
}  // namespace fused_lstm
