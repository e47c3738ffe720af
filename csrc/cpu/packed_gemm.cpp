// Note [Recurrent GEMMs on CPU] (packed_gemm.h).
#include "cpu/packed_gemm.h"

#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <c10/util/Exception.h>
#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <optional>
#include <type_traits>

#include "cpu/bf16_dot_gemm.h"
#include "cpu/scratch_pool.h"

namespace fused_lstm {
namespace cpu {
namespace {

// MKL's CBLAS enumerators and LP64 integer (mkl_cblas.h), declared here rather than included:
// the extension has no MKL headers and only uses what the running libtorch exports.
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112, kPacked = 151, kBMatrix = 162;
using mkl_int = int;
using PackGetSizeFn = size_t (*)(int identifier, mkl_int m, mkl_int n, mkl_int k);
using PackFn = void (*)(int layout, int identifier, int trans, mkl_int m, mkl_int n, mkl_int k, float alpha,
                        const float* src, mkl_int ld, float* dest);
using ComputeFn = void (*)(int layout, mkl_int transa, mkl_int transb, mkl_int m, mkl_int n, mkl_int k, const float* a,
                           mkl_int lda, const float* b, mkl_int ldb, float beta, float* c, mkl_int ldc);
using SetNumThreadsLocalFn = int (*)(int threads);

struct MklPackedSgemm {
  PackGetSizeFn get_size = nullptr;
  PackFn pack = nullptr;
  ComputeFn compute = nullptr;
  SetNumThreadsLocalFn set_num_threads_local = nullptr;
  bool available() const { return get_size && pack && compute && set_num_threads_local; }
};

const MklPackedSgemm& mkl_packed_sgemm() {
  static const MklPackedSgemm api = [] {
    MklPackedSgemm found;
    // FUSED_LSTM_CPU_PACKED_GEMM=0 leaves MKL out (to compare, or to test the other paths).
    if (const char* env = std::getenv("FUSED_LSTM_CPU_PACKED_GEMM")) {
      if (std::strcmp(env, "0") == 0) return found;
    }
    // libtorch_cpu is already loaded (this extension links against it): RTLD_NOLOAD finds it.
    void* lib = dlopen("libtorch_cpu.so", RTLD_LAZY | RTLD_NOLOAD);
    if (lib == nullptr) return found;
    found.get_size = reinterpret_cast<PackGetSizeFn>(dlsym(lib, "cblas_sgemm_pack_get_size"));
    found.pack = reinterpret_cast<PackFn>(dlsym(lib, "cblas_sgemm_pack"));
    found.compute = reinterpret_cast<ComputeFn>(dlsym(lib, "cblas_sgemm_compute"));
    // The C entry point (int by value); the lower-case names are the Fortran ones (int*).
    found.set_num_threads_local = reinterpret_cast<SetNumThreadsLocalFn>(dlsym(lib, "MKL_Set_Num_Threads_Local"));
    return found;  // the handle stays open: libtorch_cpu outlives this extension anyway
  }();
  return api;
}

// While alive, MKL calls made by this thread use this thread only. MKL implements this through
// the thread's OpenMP setting, so an ATen parallel region opened meanwhile would get one thread
// too: keep it around single calls.
class SingleThreadedMkl {
 public:
  SingleThreadedMkl() : previous_(mkl_packed_sgemm().set_num_threads_local(1)) {}
  ~SingleThreadedMkl() { mkl_packed_sgemm().set_num_threads_local(previous_); }
  SingleThreadedMkl(const SingleThreadedMkl&) = delete;
  SingleThreadedMkl& operator=(const SingleThreadedMkl&) = delete;

 private:
  int previous_;  // the previous thread-local setting (0: none, follow the global one)
};

// MKL takes 32-bit sizes; the layers' sizes are far below that, but say so if ever not.
mkl_int as_mkl_int(int64_t v) {
  TORCH_CHECK(v >= 0 && v <= INT32_MAX, "fused_lstm: matrix size ", v, " too large for MKL");
  return static_cast<mkl_int>(v);
}

}  // namespace

std::string recurrent_gemm_kernels() {
#ifdef CPUBLAS_BRGEMM_F32F32F32
  const std::string small = "oneDNN brgemm";
#else
  const std::string small = "at::mm";
#endif
  std::string fp32 = mkl_packed_sgemm().available()
                         ? "MKL packed SGEMM or " + small + " from " + std::to_string(kMklPackedMinRows) +
                               " rows, whichever is measured faster per shape (cpu_kernel_choices()), else " + small
                         : small;
  const std::string bf16 =
      BlockedOperandBf16::available() ? "oneDNN AMX brgemm"
      : BlockedOperandBf16::bf16_dot_available()
          ? "AVX512_BF16 dot-product kernel, bf16 at::mm per step or fp32, whichever is measured faster per shape"
          : "at::mm per step";
  return "fp32: " + fp32 + "; bf16: " + bf16;
}

template <typename scalar_t>
bool BlockedOperand<scalar_t>::mkl_packed_possible(int64_t max_rows, int64_t k) {
  return std::is_same_v<scalar_t, float> && mkl_packed_sgemm().available() && max_rows >= kMklPackedMinRows && k > 0;
}

template <typename scalar_t>
bool BlockedOperand<scalar_t>::packs_with_mkl(int64_t max_rows, int64_t k, int64_t n_block) {
  return mkl_packed_possible(max_rows, k) &&
         recurrent_kernel(max_rows, k, n_block, /*mkl_packed_possible=*/true) == RecurrentKernel::kMklPacked;
}

template <typename scalar_t>
BlockedOperand<scalar_t>::BlockedOperand(const at::Tensor& b, std::vector<int64_t> column_begin, int64_t max_rows,
                                         std::optional<RecurrentKernel> kernel)
    : b_(b), k_(b.size(0)), column_begin_(std::move(column_begin)) {
  const bool transposed = b.dim() == 2 && b.stride(1) != 1;  // unit stride along k
  ld_ = transposed ? b.stride(1) : b.stride(0);
  TORCH_INTERNAL_ASSERT(b.dim() == 2 && (b.stride(1) == 1 || b.stride(0) == 1) && column_begin_.size() >= 2 &&
                        b.scalar_type() == c10::CppTypeToScalarType<scalar_t>::value);
  const bool pack = kernel.has_value() ? *kernel == RecurrentKernel::kMklPacked && mkl_packed_possible(max_rows, k_)
                                       : packs_with_mkl(max_rows, k_, column_begin_[1] - column_begin_[0]);
  TORCH_INTERNAL_ASSERT(!transposed || pack, "a transposed operand needs MKL's packed path");
  if constexpr (std::is_same_v<scalar_t, float>) {
    const auto& mkl = mkl_packed_sgemm();
    if (!pack) return;
    // One allocation for all blocks; each block's buffer starts 64-byte aligned.
    constexpr int64_t kAlign = 64;
    std::vector<int64_t> offsets;
    int64_t bytes = 0;
    for (int64_t u = 0; u < num_blocks(); ++u) {
      offsets.push_back(bytes);
      const int64_t n = column_begin_[u + 1] - column_begin_[u];
      bytes += (static_cast<int64_t>(mkl.get_size(kBMatrix, as_mkl_int(max_rows), as_mkl_int(n), as_mkl_int(k_))) +
                kAlign - 1) /
               kAlign * kAlign;
    }
    // MKL sizes each packed buffer far above the operand (at least ~7.5 MiB, whatever the block)
    // and writes most of it: fresh pages each call cost ~1.5 ms a block in page faults (T=50 B=16
    // H=512: 8 blocks, 13 ms of a 24 ms call), so the memory comes from the scratch pool.
    packed_storage_ = scratch_empty({bytes + kAlign}, at::kByte);
    const auto base = reinterpret_cast<uintptr_t>(packed_storage_.data_ptr());
    const auto aligned = (base + kAlign - 1) / kAlign * kAlign;
    for (int64_t u = 0; u < num_blocks(); ++u) {
      float* dest = reinterpret_cast<float*>(aligned + offsets[u]);
      const int64_t n = column_begin_[u + 1] - column_begin_[u];
      // Row-major B: column c at element c; transposed (B's columns are rows of length k): at
      // element c * ld.
      const float* source = b.const_data_ptr<float>() + column_begin_[u] * (transposed ? ld_ : 1);
      mkl.pack(kRowMajor, kBMatrix, transposed ? kTrans : kNoTrans, as_mkl_int(max_rows), as_mkl_int(n), as_mkl_int(k_),
               1.0f, source, as_mkl_int(ld_), dest);
      packed_.push_back(dest);
    }
  }
}

template <typename scalar_t>
BlockedOperand<scalar_t>::BlockedOperand(BlockMajor, const at::Tensor& blocks, int64_t k,
                                         std::vector<int64_t> column_begin)
    : b_(blocks), k_(k), ld_(0), block_major_(true), column_begin_(std::move(column_begin)) {
  TORCH_INTERNAL_ASSERT(blocks.is_contiguous() && column_begin_.size() >= 2 && column_begin_.front() == 0 &&
                        blocks.numel() == k * column_begin_.back() &&
                        blocks.scalar_type() == c10::CppTypeToScalarType<scalar_t>::value);
}

template <typename scalar_t>
void BlockedOperand<scalar_t>::multiply(int64_t block, int64_t m, const scalar_t* a, int64_t lda, scalar_t* c,
                                        int64_t ldc) const {
  const int64_t n = column_begin_[block + 1] - column_begin_[block];
  if (m == 0 || n == 0) return;
  if (k_ == 0) {
    for (int64_t r = 0; r < m; ++r) std::memset(c + r * ldc, 0, n * sizeof(scalar_t));
    return;
  }
  // Block-major: block u's own [k, n] matrix; else columns of the whole [k, n_total] operand.
  const scalar_t* b = b_.const_data_ptr<scalar_t>() + (block_major_ ? k_ * column_begin_[block] : column_begin_[block]);
  const int64_t ldb = block_major_ ? n : ld_;
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (!packed_.empty()) {
      // Outside a parallel region (a step too small to split, run inline) MKL would open a
      // thread team of its own for this product; keep it on this thread.
      std::optional<SingleThreadedMkl> single_threaded;
      if (!at::in_parallel_region()) single_threaded.emplace();
      mkl_packed_sgemm().compute(kRowMajor, kNoTrans, kPacked, as_mkl_int(m), as_mkl_int(n), as_mkl_int(k_), a,
                                 as_mkl_int(lda), static_cast<const float*>(packed_[block]), as_mkl_int(n), 0.0f, c,
                                 as_mkl_int(ldc));
      return;
    }
#ifdef CPUBLAS_BRGEMM_F32F32F32
    // oneDNN's batch-reduce GEMM micro-kernel (JIT-compiled once per shape and cached by ATen).
    at::native::cpublas::brgemm(m, n, k_, lda, ldb, ldc, /*add_C=*/false, a, b, c,
                                /*is_vnni=*/false);
    return;
#endif
  }
  // at::mm_out over views of the raw buffers (inside a parallel region ATen's BLAS call stays on
  // the calling thread). A strided `c` (ldc > n) is written through a copy.
  const auto options = b_.options();
  const at::Tensor a_view = at::from_blob(const_cast<scalar_t*>(a), {m, k_}, {lda, 1}, options);
  const at::Tensor b_view = at::from_blob(const_cast<scalar_t*>(b), {k_, n}, {ldb, 1}, options);
  at::Tensor c_view = at::from_blob(c, {m, n}, {ldc, 1}, options);
  at::mm_out(c_view, a_view, b_view);
}

bool BlockedOperandBf16::available() {
#if defined(CPUBLAS_BRGEMM_BF16BF16F32)
  return at::native::cpublas::could_pack(at::kBFloat16);
#else
  return false;
#endif
}

bool BlockedOperandBf16::bf16_dot_available() { return bf16_dot_gemm_available(); }

BlockedOperandBf16::BlockedOperandBf16(const at::Tensor& b, std::vector<int64_t> column_begin, Kernel kernel)
    : kernel_(kernel), k_(b.size(0)), column_begin_(std::move(column_begin)) {
  TORCH_INTERNAL_ASSERT(b.dim() == 2 && column_begin_.size() >= 2);
  for (int64_t begin : column_begin_) TORCH_INTERNAL_ASSERT(begin % column_alignment(kernel_) == 0);
  const at::Tensor b16 = b.to(at::kBFloat16).contiguous();
  const int64_t n_total = b16.size(1);
  if (kernel_ == Kernel::kBf16Dot) {
    TORCH_INTERNAL_ASSERT(bf16_dot_available());
    // Each block packed on its own (any width; Note [bf16 dot-product GEMM on CPU]).
    int64_t size = 0;
    for (size_t u = 0; u + 1 < column_begin_.size(); ++u) {
      packed_begin_.push_back(size);
      size += bf16_dot_packed_size(k_, column_begin_[u + 1] - column_begin_[u]);
    }
    packed_ = scratch_empty({size}, at::kBFloat16);
    for (size_t u = 0; u + 1 < column_begin_.size(); ++u) {
      bf16_dot_pack(k_, column_begin_[u + 1] - column_begin_[u], b16.const_data_ptr<c10::BFloat16>() + column_begin_[u],
                    n_total, packed_.data_ptr<c10::BFloat16>() + packed_begin_[u]);
    }
    return;
  }
  TORCH_INTERNAL_ASSERT(available() && k_ % 2 == 0);
#if defined(CPUBLAS_BRGEMM_BF16BF16F32)
  packed_ = scratch_empty({k_ * n_total}, at::kBFloat16);
  // oneDNN packs (and multiplies) B in panels of kPanel columns.
  for (int64_t column = 0; column < n_total; column += kPanel) {
    at::native::cpublas::pack(k_, kPanel, /*ld_in=*/n_total, /*ld_out=*/kPanel, at::kBFloat16, at::kBFloat16,
                              b16.const_data_ptr<c10::BFloat16>() + column,
                              packed_.data_ptr<c10::BFloat16>() + k_ * column);
  }
#endif
}

void BlockedOperandBf16::multiply(int64_t block, int64_t m, const c10::BFloat16* a, int64_t lda, float* c,
                                  int64_t ldc) const {
  const int64_t n = column_begin_[block + 1] - column_begin_[block];
  if (m == 0 || n == 0) return;
  if (kernel_ == Kernel::kBf16Dot) {
    bf16_dot_gemm(m, n, k_, a, lda, packed_.const_data_ptr<c10::BFloat16>() + packed_begin_[block], c, ldc);
    return;
  }
#if defined(CPUBLAS_BRGEMM_BF16BF16F32)
  for (int64_t panel = 0; panel < n; panel += kPanel) {
    at::native::cpublas::brgemm(m, kPanel, k_, lda, /*ld_b=*/kPanel, ldc, /*add_C=*/false, a,
                                packed_.const_data_ptr<c10::BFloat16>() + k_ * (column_begin_[block] + panel),
                                c + panel,
                                /*is_vnni=*/true);
  }
#endif
}

void BlockedOperandBf16::release_thread_state() {
#if defined(CPUBLAS_BRGEMM_BF16BF16F32)
  static const bool amx = available();
  if (amx) at::native::cpublas::brgemm_release(/*is_vnni=*/true);
#endif
}

template class BlockedOperand<float>;
template class BlockedOperand<double>;

}  // namespace cpu
}  // namespace fused_lstm
