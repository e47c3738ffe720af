// Note [Measured GEMM choice on CPU] (gemm_choice.h).
#include "cpu/gemm_choice.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string_view>
#include <tuple>
#include <vector>

#include "cpu/gate_kernels.h"
#include "cpu/packed_gemm.h"

namespace fused_lstm {
namespace cpu {
namespace {

// ---- the environment ------------------------------------------------------------------------
// The value of a variable that takes one of `allowed` (ValueError naming it otherwise), or "auto".
std::string choice_from_env(const char* name, const std::vector<std::string>& allowed) {
  const char* env = std::getenv(name);
  if (env == nullptr || std::strcmp(env, "auto") == 0) return "auto";
  std::string expected = "auto";
  for (const std::string& value : allowed) {
    if (value == env) return value;
    expected += ", " + value;
  }
  TORCH_CHECK_VALUE(false, "fused_lstm: ", name, " must be one of ", expected, ", got '", env, "'");
}

std::string big_gemm_from_env() { return choice_from_env("FUSED_LSTM_CPU_GEMM", {"aten", "onednn"}); }
std::string recurrent_from_env() { return choice_from_env("FUSED_LSTM_CPU_RECURRENT_GEMM", {"mkl_packed", "brgemm"}); }

// ---- what was chosen ------------------------------------------------------------------------
struct Choices {
  std::mutex mutex;
  std::map<std::string, std::string> chosen;  // shape class -> kernel name
  std::vector<KernelChoice> log;              // in the order made
};

Choices& choices() {
  static Choices instance;
  return instance;
}

std::optional<std::string> cached(const std::string& shape_class) {
  Choices& c = choices();
  std::lock_guard<std::mutex> lock(c.mutex);
  auto it = c.chosen.find(shape_class);
  if (it == c.chosen.end()) return std::nullopt;
  return it->second;
}

void remember(const std::string& shape_class, const std::string& kernel, const std::string& how) {
  Choices& c = choices();
  std::lock_guard<std::mutex> lock(c.mutex);
  if (c.chosen.emplace(shape_class, kernel).second) c.log.push_back({shape_class, kernel, how});
}

// The fastest of a few timed runs of fn, after one unmeasured run (first-touch pages, oneDNN's
// JIT, caches): the minimum, not the median, because on a loaded machine a run is only ever
// slowed down (descheduled), never sped up. Runs until kBudgetMs of timed runs or max_runs runs,
// at least one: a big GEMM is timed once, a small product several times.
template <typename Fn>
double fastest_ms(Fn&& fn, bool warm_up = true, int max_runs = 7) {
  constexpr double kBudgetMs = 20.0;
  if (warm_up) fn();
  double best = 0, total = 0;
  for (int run = 0; run < max_runs && (run == 0 || total < kBudgetMs); ++run) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    best = run == 0 ? ms : std::min(best, ms);
    total += ms;
  }
  return best;
}

std::string format_ms(double ms) {
  std::ostringstream out;
  out.precision(3);
  out << ms << " ms";
  return out.str();
}

// ---- oneDNN's matmul, through the op PyTorch registers for it ---------------------------------
// mkldnn::_linear_pointwise(X, W, B?, attr, scalars, algorithm) = X · Wᵀ (+ B): oneDNN's matmul,
// JIT-compiled for the running CPU. Looked up once; absent in builds without oneDNN.
using LinearPointwise = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                   std::string_view, c10::List<std::optional<at::Scalar>>,
                                   std::optional<std::string_view>);

const std::optional<c10::TypedOperatorHandle<LinearPointwise>>& onednn_linear_op() {
  static const std::optional<c10::TypedOperatorHandle<LinearPointwise>> op =
      []() -> std::optional<c10::TypedOperatorHandle<LinearPointwise>> {
    const auto handle = c10::Dispatcher::singleton().findSchema({"mkldnn::_linear_pointwise", ""});
    if (!handle.has_value() || !handle->hasKernelForDispatchKey(c10::DispatchKey::CPU)) return std::nullopt;
    return handle->typed<LinearPointwise>();
  }();
  return op;
}

// oneDNN's result, or an undefined tensor where oneDNN cannot do this product on this CPU (it
// has no primitive for it: bf16 on an AVX2-only CPU, say).
at::Tensor onednn_linear(const at::Tensor& a, const at::Tensor& w) {
  try {
    return onednn_linear_op()->call(a.contiguous(), w.contiguous(), std::nullopt, "none",
                                    c10::List<std::optional<at::Scalar>>(), std::nullopt);
  } catch (const std::exception&) {  // c10::Error, or oneDNN's own dnnl::error
    return at::Tensor();
  }
}

}  // namespace

at::Tensor linear(const at::Tensor& a, const at::Tensor& w, const at::Tensor& out) {
  const auto dtype = a.scalar_type();
  const bool onednn_possible = (dtype == at::kFloat || dtype == at::kBFloat16) && w.scalar_type() == dtype &&
                               onednn_linear_op().has_value() && a.dim() == 2 && a.size(0) > 0;
  auto run_aten = [&]() -> at::Tensor {
    if (!out.defined()) return at::mm(a, w.t());
    at::Tensor result = out;
    at::mm_out(result, a, w.t());
    return result;
  };
  if (!onednn_possible) return run_aten();
  const std::string pinned = big_gemm_from_env();
  if (pinned == "aten") return run_aten();
  if (pinned == "onednn") {
    const at::Tensor result = onednn_linear(a, w);
    return result.defined() ? result : run_aten();
  }

  std::ostringstream key;
  key << "linear " << c10::toString(dtype) << " M<=" << round_up_pow2(a.size(0)) << " K<=" << round_up_pow2(a.size(1))
      << " N=" << w.size(0) << " threads=" << at::get_num_threads();
  const std::string shape_class = key.str();
  std::optional<std::string> kernel = cached(shape_class);
  if (!kernel.has_value()) {
    // Measured on this call's own operands (fastest_ms: one timed run of a big product, a few of
    // a small one, after one to warm up: first-touch pages, oneDNN's JIT); the faster one's result
    // is returned.
    at::Tensor aten_result, onednn_result;
    const double aten_ms = fastest_ms([&] { aten_result = run_aten(); });
    std::string fastest = "aten", how = "measured: aten (at::mm) " + format_ms(aten_ms) + ", onednn ";
    if (onednn_linear(a, w).defined()) {  // (also the warm-up run)
      const double onednn_ms = fastest_ms([&] { onednn_result = onednn_linear(a, w); }, /*warm_up=*/false);
      if (onednn_ms < aten_ms) fastest = "onednn";
      how += format_ms(onednn_ms);
    } else {
      how += "cannot (no oneDNN primitive for it on this CPU)";
    }
    remember(shape_class, fastest, how);
    // Another thread may have chosen first: every call of the class follows one choice.
    if (cached(shape_class) == fastest) return fastest == "onednn" ? onednn_result : aten_result;
    kernel = cached(shape_class);
  }
  if (*kernel == "onednn") {
    const at::Tensor result = onednn_linear(a, w);
    if (result.defined()) return result;
  }
  return run_aten();
}

void small_linear(const at::Tensor& x, const at::Tensor& w, at::Tensor& y) {
  const int64_t rows = x.size(0), k = x.size(1), n = w.size(0);
  auto run_aten = [&] { at::mm_out(y, x, w.t()); };
  auto run_row_dot = [&] {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "small_linear", [&] {
      const auto row_dot = gate_kernels().row_dot<scalar_t>();
      const scalar_t* x_p = x.const_data_ptr<scalar_t>();
      const scalar_t* w_p = w.const_data_ptr<scalar_t>();
      scalar_t* y_p = y.data_ptr<scalar_t>();
      // Columns split over threads where there is enough work for each (64 K multiply-adds).
      const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, rows * k));
      at::parallel_for(0, n, grain,
                       [&](int64_t begin, int64_t end) { row_dot(x_p, k, rows, w_p, k, k, y_p, n, begin, end); });
    });
  };
  const std::string pinned = big_gemm_from_env();
  if (pinned != "auto") return pinned == "aten" ? run_aten() : run_row_dot();
  // Single steps are microseconds: each thread keeps the choices it has used by plain key, and
  // only a class it has not seen goes through the shared, string-keyed record.
  const int threads = at::get_num_threads();
  const auto fast_key = std::make_tuple(static_cast<int>(x.scalar_type()), rows, k, n, threads);
  thread_local std::map<decltype(fast_key), bool> row_dot_chosen;
  auto known = row_dot_chosen.find(fast_key);
  if (known == row_dot_chosen.end()) {
    std::ostringstream key;
    key << "single-step " << c10::toString(x.scalar_type()) << " rows=" << rows << " K=" << k << " N=" << n
        << " threads=" << threads;
    const std::string shape_class = key.str();
    if (!cached(shape_class).has_value()) {
      // Microseconds each: alternate the two, many times, and keep each one's best, so a burst of
      // load from elsewhere on the machine cannot decide the choice by landing on one of them.
      constexpr int kRounds = 15;
      double aten_ms = fastest_ms(run_aten, /*warm_up=*/true, /*max_runs=*/1);
      double row_dot_ms = fastest_ms(run_row_dot, /*warm_up=*/true, /*max_runs=*/1);
      for (int round = 1; round < kRounds; ++round) {
        aten_ms = std::min(aten_ms, fastest_ms(run_aten, /*warm_up=*/false, /*max_runs=*/1));
        row_dot_ms = std::min(row_dot_ms, fastest_ms(run_row_dot, /*warm_up=*/false, /*max_runs=*/1));
      }
      remember(shape_class, row_dot_ms < aten_ms ? "row_dot" : "aten",
               "measured: aten (at::mm) " + format_ms(aten_ms) + ", row_dot " + format_ms(row_dot_ms));
    }
    known = row_dot_chosen.emplace(fast_key, *cached(shape_class) == "row_dot").first;
  }
  return known->second ? run_row_dot() : run_aten();
}

int fastest_candidate(const std::string& shape_class, const std::vector<std::string>& candidates,
                      const std::function<void(int)>& run, int pinned) {
  if (pinned >= 0) return pinned;
  std::optional<std::string> kernel = cached(shape_class);
  if (!kernel.has_value()) {
    // Each candidate once to warm up, then rounds of one timed run each, alternating, keeping
    // each one's best: a burst of load from elsewhere lands on one run, not on one candidate's
    // every run. At least two rounds, more while they take under kBudgetMs (small layers).
    constexpr double kBudgetMs = 40.0;
    constexpr int kMaxRounds = 7;
    const int n = static_cast<int>(candidates.size());
    for (int i = 0; i < n; ++i) run(i);
    std::vector<double> best(n, 0.0);
    double total = 0;
    for (int round = 0; round < kMaxRounds && (round < 2 || total < kBudgetMs); ++round) {
      for (int i = 0; i < n; ++i) {
        const double ms = fastest_ms([&] { run(i); }, /*warm_up=*/false, /*max_runs=*/1);
        best[i] = round == 0 ? ms : std::min(best[i], ms);
        total += ms;
      }
    }
    const int fastest = static_cast<int>(std::min_element(best.begin(), best.end()) - best.begin());
    std::string how = "measured:";
    for (int i = 0; i < n; ++i) how += (i > 0 ? ", " : " ") + candidates[i] + " " + format_ms(best[i]);
    remember(shape_class, candidates[fastest], how);
    kernel = cached(shape_class);
  }
  const auto it = std::find(candidates.begin(), candidates.end(), *kernel);
  return static_cast<int>(it - candidates.begin());
}

namespace {

// Operands for timing one block's recurrent product, c[rows, n_block] = a[rows, k] · b: values
// do not change the timing, so constants rather than random draws, which would advance the
// global generator (and so the caller's dropout masks, say).
struct BlockTimingOperands {
  BlockTimingOperands(int64_t rows, int64_t k, int64_t n_block)
      : a(at::full({rows, k}, 0.5f, at::kFloat)),
        b(at::full({k, n_block}, 0.015625f, at::kFloat)),
        c(at::empty({rows, n_block}, at::kFloat)),
        one_block{0, n_block} {}
  const float* a_ptr() const { return a.const_data_ptr<float>(); }
  float* c_ptr() const { return c.data_ptr<float>(); }
  at::Tensor a, b, c;
  std::vector<int64_t> one_block;
};

}  // namespace

RecurrentKernel recurrent_kernel(int64_t rows, int64_t k, int64_t n_block, bool mkl_packed_possible) {
  if (!mkl_packed_possible) return RecurrentKernel::kBrgemm;
  const std::string pinned = recurrent_from_env();
  if (pinned != "auto") return pinned == "mkl_packed" ? RecurrentKernel::kMklPacked : RecurrentKernel::kBrgemm;
  std::ostringstream key;
  key << "recurrent float32 rows<=" << round_up_pow2(rows) << " K=" << k << " N_block=" << n_block;
  const std::string shape_class = key.str();
  std::optional<std::string> kernel = cached(shape_class);
  if (!kernel.has_value()) {
    // One block's product as one thread of a step's team runs it, on operands of this shape
    // (the choice comes before the layer prepares its weights). Ten products per timed run.
    const BlockTimingOperands t(rows, k, n_block);
    auto time_kernel = [&](RecurrentKernel which) {
      const BlockedOperand<float> operand(t.b, t.one_block, rows, which);
      return fastest_ms([&] {
        for (int i = 0; i < 10; ++i) operand.multiply(0, rows, t.a_ptr(), k, t.c_ptr(), n_block);
      });
    };
    const double packed_ms = time_kernel(RecurrentKernel::kMklPacked);
    const double brgemm_ms = time_kernel(RecurrentKernel::kBrgemm);
    kernel = packed_ms < brgemm_ms ? "mkl_packed" : "brgemm";
    remember(shape_class, *kernel,
             "measured (10 products): mkl_packed " + format_ms(packed_ms) + ", brgemm " + format_ms(brgemm_ms));
    kernel = cached(shape_class);
  }
  return *kernel == "mkl_packed" ? RecurrentKernel::kMklPacked : RecurrentKernel::kBrgemm;
}

int64_t round_up_pow2(int64_t x) {
  int64_t p = 1;
  while (p < x) p *= 2;
  return p;
}

int layer_kernel_from_env() {
  const std::string pinned = choice_from_env("FUSED_LSTM_CPU_LAYER", {"fused", "aten_lstm"});
  return pinned == "auto" ? -1 : pinned == "fused" ? 0 : 1;
}

int directions_from_env() {
  const std::string pinned = choice_from_env("FUSED_LSTM_CPU_DIRECTIONS", {"sequential", "concurrent"});
  return pinned == "auto" ? -1 : pinned == "sequential" ? 0 : 1;
}

int bf16_recurrence_from_env() {
  const std::string pinned = choice_from_env("FUSED_LSTM_CPU_BF16_RECURRENCE", {"bf16_mm", "fp32", "bf16_dot"});
  if (pinned == "auto") return -1;
  return pinned == "bf16_mm" ? 0 : pinned == "fp32" ? 1 : 2;
}

bool bf16_dot_carry(int64_t rows, int64_t k, int64_t n_block) {
  if (!BlockedOperandBf16::bf16_dot_available()) return false;
  const int pinned = bf16_recurrence_from_env();
  if (pinned >= 0) return pinned == 2;
  std::ostringstream key;
  key << "bf16 carry rows<=" << round_up_pow2(rows) << " K=" << k << " N_block=" << n_block;
  const std::string shape_class = key.str();
  std::optional<std::string> kernel = cached(shape_class);
  if (!kernel.has_value()) {
    // As recurrent_kernel(): one block's product as one thread of the team runs it, on constant
    // operands of this shape, ten products per timed run. The fp32 side is what would run instead
    // (BlockedOperand<float>: MKL's packed path or brgemm, itself a measured choice).
    const BlockTimingOperands t(rows, k, n_block);
    const at::Tensor a16 = t.a.to(at::kBFloat16);
    const BlockedOperand<float> fp32(t.b, t.one_block, rows);
    const BlockedOperandBf16 dot(t.b, t.one_block, BlockedOperandBf16::Kernel::kBf16Dot);
    const double fp32_ms = fastest_ms([&] {
      for (int i = 0; i < 10; ++i) fp32.multiply(0, rows, t.a_ptr(), k, t.c_ptr(), n_block);
    });
    const double dot_ms = fastest_ms([&] {
      for (int i = 0; i < 10; ++i) dot.multiply(0, rows, a16.const_data_ptr<c10::BFloat16>(), k, t.c_ptr(), n_block);
    });
    remember(shape_class, dot_ms < fp32_ms ? "bf16_dot" : "fp32",
             "measured (10 products): fp32 " + format_ms(fp32_ms) + ", bf16_dot " + format_ms(dot_ms));
    kernel = cached(shape_class);
  }
  return *kernel == "bf16_dot";
}

std::vector<KernelChoice> kernel_choices() {
  Choices& c = choices();
  std::lock_guard<std::mutex> lock(c.mutex);
  return c.log;
}

void check_gemm_choice_environment() {
  (void)big_gemm_from_env();
  (void)recurrent_from_env();
  (void)bf16_recurrence_from_env();
  (void)layer_kernel_from_env();
  (void)directions_from_env();
}

}  // namespace cpu
}  // namespace fused_lstm
