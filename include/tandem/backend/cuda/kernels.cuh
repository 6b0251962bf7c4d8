// SPDX-License-Identifier: Apache-2.0
// cuda kernels: the operations of backend/ops.hpp on device memory, with cuBLAS and CUDA kernels.
#pragma once

#if !defined(__CUDACC__)
#error "tandem/backend/cuda/kernels.cuh holds CUDA kernels: compile this translation unit with nvcc (a .cu file)"
#endif

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "tandem/backend/activation_math.hpp"
#include "tandem/backend/cuda/check.hpp"
#include "tandem/backend/cuda/lt.hpp"
#include "tandem/backend/loss_math.hpp"
#include "tandem/backend/ops.hpp"
#include "tandem/backend/optimizer_math.hpp"
#include "tandem/backend/small_network.hpp"
#include "tandem/backend/small_stage.hpp"
#include "tandem/error.hpp"
#include "tandem/precision.hpp"

// Elementwise work and reductions are small hand-written kernels rather than Thrust/CUB calls:
// each one here fuses what would be several Thrust passes (an optimizer step updates three or
// four arrays at once, a loss writes its gradient while it reduces), and a translation unit
// that includes Thrust's algorithms takes seconds longer to compile (measured: 8 s against under
// 1 s with nvcc 13), which every .cu file including this header would pay. Launches go on the
// executor's stream, nothing synchronises: the stream-ordered equivalent of
// thrust::cuda::par_nosync.on(stream).
namespace tandem::backend::cuda::kernels {

// What a launch needs: the executor's stream, the cuBLAS handle bound to it, where a failure
// happened, and the executor's scratch for per-block partial sums (a reduction finishes in a
// fixed order in a second kernel instead of with atomics, so a loss has the same bits every run).
struct Side;
struct Launch {
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  Site site{};
  double *partials = nullptr;            // max_blocks of them
  Lt *lt = nullptr;                      // fused Linear epilogues; null: plain cuBLAS and kernels
  Precision precision = Precision::fp32; // of float products (tf32: the handle's math mode)
  const Side *side = nullptr;            // a second stream for products that may run beside these
};

// A second stream of the executor's GPU, with a cuBLAS handle and a cuBLASLt of its own (each
// has a workspace that two streams running at once would overwrite under each other). A Linear
// layer's weight gradient runs there beside its input gradient: both read dy and neither
// writes what the other reads. Each use forks from the main stream and joins it again before
// run() returns, so to everything else the executor still has one stream, in stream order, and
// a CUDA graph captures the pair as two branches.
struct Side {
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  Lt *lt = nullptr;
  cudaEvent_t fork = nullptr, join = nullptr; // ordering only (no timing)
  unsigned sms = 0;                           // the GPU's multiprocessors

  // Whether a backward pass's input gradient dx (rows, in) leaves SMs idle for the weight
  // gradient: cuBLAS tiles a float product in blocks of about 128 x 128, one block per SM, so a
  // product of fewer blocks than SMs runs in one partial wave, and a second product beside it
  // takes SMs that would idle (the 256-wide MLP's 1024 x 256 is 16 of an H100's 132). One that
  // fills the GPU gains nothing from company, and the fork and join cost two event records.
  bool gains(std::size_t rows, std::size_t in) const {
    const std::size_t tile = 128, blocks = ((rows + tile - 1) / tile) * ((in + tile - 1) / tile);
    return blocks < sms;
  }
};

inline constexpr unsigned threads = 256;
inline constexpr unsigned warps = threads / 32;
// Grid-stride loops cap the grid: 1024 blocks of 256 threads fill an H100 (132 SMs x 2048 threads).
inline constexpr unsigned max_blocks = 1024;

inline unsigned blocks_for(std::size_t n, std::size_t per_block = threads) {
  const std::size_t b = (n + per_block - 1) / per_block;
  return static_cast<unsigned>(std::clamp<std::size_t>(b, 1, max_blocks));
}

inline void check_launch(const char *kernel, const Launch &l) { check(cudaGetLastError(), kernel, l.site); }

// Device math in T: explicit float and double overloads, so no call silently runs in double.
namespace math {
__device__ inline float exp(float x) { return ::expf(x); }
__device__ inline double exp(double x) { return ::exp(x); }
__device__ inline float log(float x) { return ::logf(x); }
__device__ inline double log(double x) { return ::log(x); }
__device__ inline float sqrt(float x) { return ::sqrtf(x); }
__device__ inline double sqrt(double x) { return ::sqrt(x); }

template <class T> __device__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}
template <class T> __device__ T warp_max(T v) {
  for (int offset = 16; offset > 0; offset /= 2) {
    const T other = __shfl_xor_sync(0xffffffffu, v, offset);
    v = other > v ? other : v;
  }
  return v;
}
// Sum over a block of `threads` threads, in a fixed order; every thread gets the total. Every
// thread must call it (it meets the others twice), and may call it again at once.
__device__ inline double block_sum(double v) {
  __shared__ double per_warp[warps];
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) per_warp[threadIdx.x / 32] = v;
  __syncthreads();
  double total = 0;
  for (unsigned w = 0; w < warps; ++w) total += per_warp[w];
  __syncthreads(); // every thread has read per_warp before a next call writes it
  return total;
}
} // namespace math

// --- elementwise ---------------------------------------------------------------------------------

template <class F> __global__ void each(std::size_t n, F f) {
  const std::size_t stride = std::size_t(gridDim.x) * blockDim.x;
  for (std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) f(i);
}

template <class F> void launch_each(std::size_t n, const F &f, const char *name, const Launch &l) {
  if (n == 0) return;
  each<<<blocks_for(n), threads, 0, l.stream>>>(n, f);
  check_launch(name, l);
}

template <class T> struct Assign {
  T value;
  T *dst;
  __device__ void operator()(std::size_t i) const { dst[i] = value; }
};

// dst (rows, cols) = row (1, cols) broadcast over the rows.
template <class T> struct BroadcastRow {
  const T *row;
  std::size_t cols;
  T *dst;
  __device__ void operator()(std::size_t i) const { dst[i] = row[i % cols]; }
};

// c (rows, cols; leading dimension ld) *= beta.
template <class T> struct ScaleStrided {
  std::size_t cols, ld;
  T beta;
  T *c;
  __device__ void operator()(std::size_t i) const { c[(i / cols) * ld + i % cols] *= beta; }
};

// The formulas are activation_math.hpp's, as on the host and in the fused small stages.
template <class T> struct ActivationForwardFn {
  Activation kind;
  const T *x;
  T *y;
  __device__ void operator()(std::size_t i) const { y[i] = activate(kind, x[i]); }
};

template <class T> struct ActivationBackwardFn {
  Activation kind;
  const T *x, *y, *dy;
  T *dx;
  __device__ void operator()(std::size_t i) const {
    dx[i] = with_activation(kind, [&]<Activation K>() { return activate_backward_at<K>(x, y, dy, i); });
  }
};

// A ReLU's backward taken into the next Linear's (LinearBackward::relu_before), in place on that
// Linear's input gradient: kept where the ReLU's output x is positive.
template <class T> struct ReluBefore {
  const T *x;
  T *dx;
  __device__ void operator()(std::size_t i) const { dx[i] = activate_backward<Activation::relu>(x[i], x[i], dx[i]); }
};

// torch.optim.SGD, the host backend's formulas.
template <class T> struct SgdFn {
  op::SgdStep<T> s;
  __device__ void operator()(std::size_t i) const {
    if (s.skip && *s.skip) return;
    sgd_update(s, i);
  }
};

// torch.optim.Adam / AdamW, with the step's scalars computed once on the host (or, where a.count
// is set, read from the device's count, which adam_count has just written).
template <class T> struct AdamFn {
  op::AdamStep<T> a;
  AdamScalars<T> k;
  __device__ void operator()(std::size_t i) const {
    if (a.skip && *a.skip) return;
    AdamScalars<T> scalars = k;
    if (a.count) {
      scalars.step_size = static_cast<T>(a.count->step_size);
      scalars.bias2_sqrt = static_cast<T>(a.count->bias2_sqrt);
    }
    adam_update(a, scalars, i);
  }
};

// --- reductions ----------------------------------------------------------------------------------

// out (cols) += column sums of m (rows, cols). A block takes 32 columns; its 16 thread rows
// stride down the matrix (coalesced reads along a row), then add up in shared memory.
template <class T>
__global__ void column_sum_add(std::size_t rows, std::size_t cols, const T *m, T *out, bool accumulate) {
  __shared__ T partial[16][33]; // 33: no bank conflicts on the column-wise read below
  const std::size_t col = std::size_t(blockIdx.x) * 32 + threadIdx.x;
  T sum = 0;
  if (col < cols)
    for (std::size_t r = threadIdx.y; r < rows; r += 16) sum += m[r * cols + col];
  partial[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    T total = 0;
    for (int j = 0; j < 16; ++j) total += partial[j][threadIdx.x];
    out[col] = accumulate ? out[col] + total : total;
  }
}

// Softmax cross-entropy, one warp per row: max, sum of exponentials, gradient. Lane 0 of each
// warp keeps its rows' losses; each block leaves one partial sum for add_partials.
template <class T>
__global__ void cross_entropy(std::size_t rows, std::size_t classes, const T *logits, const std::int32_t *labels,
                              T scale, T *dlogits, double *partials, std::int32_t *invalid, T *loss_out,
                              double loss_scale) {
  const unsigned lane = threadIdx.x % 32;
  double loss = 0;
  const std::size_t stride = std::size_t(gridDim.x) * warps;
  for (std::size_t r = std::size_t(blockIdx.x) * warps + threadIdx.x / 32; r < rows; r += stride) {
    const T *row = logits + r * classes;
    T max = row[0];
    for (std::size_t j = lane; j < classes; j += 32) max = row[j] > max ? row[j] : max;
    max = math::warp_max(max);
    T sum = 0;
    for (std::size_t j = lane; j < classes; j += 32) sum += math::exp(row[j] - max);
    const T log_sum = math::log(math::warp_sum(sum));
    const std::int32_t label = labels[r];
    // One out of range poisons the loss (NaN) rather than reading outside the row, and says so
    // in *invalid, which the optimizer kernels read before they change anything.
    const bool valid = label >= 0 && static_cast<std::size_t>(label) < classes;
    if (!valid && invalid && lane == 0) *invalid = 1;
    if (dlogits) { // zero for a bad label, as cross_entropy_row (host, whole-network step) writes
      T *d = dlogits + r * classes;
      for (std::size_t j = lane; j < classes; j += 32)
        d[j] = valid ? scale * (math::exp(row[j] - max - log_sum) - (j == std::size_t(label) ? T(1) : T(0))) : T(0);
    }
    if (lane == 0) loss += valid ? static_cast<double>(log_sum - (row[label] - max)) : ::nan("");
  }
  if (!partials && !loss_out) return;
  loss = math::block_sum(lane == 0 ? loss : 0.0);
  if (threadIdx.x != 0) return;
  // A grid of one block adds its sum itself, as add_partials would (same double, same rounding).
  if (loss_out) *loss_out += static_cast<T>(loss_scale * loss);
  else partials[blockIdx.x] = loss;
}

template <class T>
__global__ void squared_error(std::size_t n, const T *pred, const T *target, T two_scale, T *dpred, double *partials,
                              std::int32_t *invalid) {
  double sum = 0;
  const std::size_t stride = std::size_t(gridDim.x) * blockDim.x;
  for (std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    if (invalid && !isfinite(target[i])) *invalid = 1;
    sum += squared_error_at(pred[i], target[i], two_scale, dpred ? dpred + i : nullptr);
  }
  if (!partials) return;
  sum = math::block_sum(sum);
  if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

// *loss += scale * (sum of `count` partials), added up in a fixed order by one block.
template <class T> __global__ void add_partials(unsigned count, const double *partials, double scale, T *loss) {
  double sum = 0;
  for (unsigned i = threadIdx.x; i < count; i += blockDim.x) sum += partials[i];
  sum = math::block_sum(sum);
  if (threadIdx.x == 0) *loss += static_cast<T>(scale * sum);
}

// --- small stages (backend/small_stage.hpp) ----------------------------------------------------

// A block's threads stride over [0, n), then meet, so the next step reads what this one wrote.
// single: thread 0 runs f, then all meet. sum: each thread adds its stride in double, then
// math::block_sum adds those in a fixed order; every thread gets the total.
struct DeviceBlock {
  template <class F> __device__ void each(std::size_t n, F &&f) {
    for (std::size_t i = threadIdx.x; i < n; i += blockDim.x) f(i);
    __syncthreads();
  }
  template <class F> __device__ void single(F &&f) {
    if (threadIdx.x == 0) f();
    __syncthreads();
  }
  template <class F> __device__ double sum(std::size_t n, F &&f) {
    double v = 0;
    for (std::size_t i = threadIdx.x; i < n; i += blockDim.x) v += f(i);
    return math::block_sum(v);
  }
};

// Forward: a block per chunk of rows (no sums across rows). Backward: one block for all rows,
// since every chunk adds to the same weight gradients; op::small_rows bounds its loop.
template <class T> __global__ void small_forward(op::SmallForward<T> f) {
  __shared__ T a[small::buffer_values<T>], b[small::buffer_values<T>], w[small::weight_values<T>];
  DeviceBlock block;
  const std::size_t first = std::size_t(blockIdx.x) * small::chunk_rows<T>;
  const std::size_t n = f.rows - first < small::chunk_rows<T> ? f.rows - first : small::chunk_rows<T>;
  small::forward_chunk(f, first, n, small::Scratch<T>{a, b, nullptr, w}, block);
}
template <class T> __global__ void small_backward(op::SmallBackward<T> g) {
  __shared__ T a[small::buffer_values<T>], b[small::buffer_values<T>], x[small::buffer_values<T>],
      w[small::weight_values<T>];
  DeviceBlock block;
  for (std::size_t first = 0; first < g.rows; first += small::chunk_rows<T>) {
    const std::size_t n = g.rows - first < small::chunk_rows<T> ? g.rows - first : small::chunk_rows<T>;
    small::backward_chunk(g, first, n, small::Scratch<T>{a, b, x, w}, block);
  }
}
// The whole step of a network of small stages (small_network.hpp): one block, since every chunk
// adds to the same gradients and loss. __grid_constant__: the layers are read where the launch
// put them, not copied to each thread's local memory first (the op is over a kilobyte).
template <class T> __global__ void small_network(const __grid_constant__ op::SmallNetwork<T> net) {
  __shared__ T a[small::buffer_values<T>], b[small::buffer_values<T>], x[small::buffer_values<T>],
      w[small::weight_values<T>];
  DeviceBlock block;
  small::network_step(net, small::Scratch<T>{a, b, x, w}, block);
}

// --- the operations ------------------------------------------------------------------------------

inline int as_int(std::size_t v, const char *what, const Launch &l) {
  if (v > static_cast<std::size_t>(INT_MAX))
    detail::fail("cuBLAS on ", l.site, ": ", what, " = ", v, " exceeds its 32-bit limit ", INT_MAX);
  return static_cast<int>(v);
}

// fp32 and tf32 (the handle's math mode rounds to TF32) are cublasSgemm; bf16 is cublasGemmEx on the
// same float32 data with a compute type that rounds the inputs to bfloat16 on tensor cores.
inline cublasStatus_t gemm(cublasHandle_t h, Precision p, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                           int k, const float *alpha, const float *a, int lda, const float *b, int ldb,
                           const float *beta, float *c, int ldc) {
  if (p == Precision::bf16)
    return cublasGemmEx(h, ta, tb, m, n, k, alpha, a, CUDA_R_32F, lda, b, CUDA_R_32F, ldb, beta, c, CUDA_R_32F, ldc,
                        CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_GEMM_DEFAULT);
  return cublasSgemm(h, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
inline cublasStatus_t gemm(cublasHandle_t h, Precision, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const double *alpha, const double *a, int lda, const double *b, int ldb, const double *beta,
                           double *c, int ldc) {
  return cublasDgemm(h, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <class T> void run(const op::Gemm<T> &g, const Launch &l) {
  if (g.m == 0 || g.n == 0) return;
  if (g.k == 0) { // an empty product: C = beta * C, with beta == 0 clearing rather than scaling NaNs
    if (g.beta == T(0))
      check(cudaMemset2DAsync(g.c, g.ldc * sizeof(T), 0, g.n * sizeof(T), g.m, l.stream), "cudaMemset2DAsync", l.site);
    else if (g.beta != T(1)) launch_each(g.m * g.n, ScaleStrided<T>{g.n, g.ldc, g.beta, g.c}, "ScaleStrided", l);
    return;
  }
  // cuBLAS is column-major, and a row-major matrix read as column-major is its transpose. So the
  // row-major C = op(A) op(B) is computed as the column-major C^T = op(B)^T op(A)^T: B first,
  // each operand keeping its own transpose flag, and m and n swapped.
  const auto op_of = [](bool t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; };
  check(gemm(l.blas, l.precision, op_of(g.trans_b), op_of(g.trans_a), as_int(g.n, "n", l), as_int(g.m, "m", l),
             as_int(g.k, "k", l), &g.alpha, g.b, as_int(g.ldb, "ldb", l), g.a, as_int(g.lda, "lda", l), &g.beta, g.c,
             as_int(g.ldc, "ldc", l)),
        !std::is_same_v<T, float>        ? "cublasDgemm"
        : l.precision == Precision::bf16 ? "cublasGemmEx"
                                         : "cublasSgemm",
        l.site);
}

template <class T> void run(const op::LinearForward<T> &f, const Launch &l) {
  // One cuBLASLt call with the bias (and a following ReLU, whose epilogue keeps NaN as torch.relu
  // does: measured on an H200; or GELU's tanh form) in its epilogue where it can (float).
  if constexpr (std::is_same_v<T, float>)
    if (l.lt && l.lt->linear_forward(l.stream, f, f.activation)) return;
  // PyTorch's addmm order: z starts as the broadcast bias and the product adds to it (beta = 1),
  // so the bias joins inside cuBLAS's epilogue with a single rounding.
  T *const z = f.pre_activation ? f.pre_activation : f.y;
  if (f.bias) launch_each(f.batch * f.out, BroadcastRow<T>{f.bias, f.out, z}, "BroadcastRow", l);
  run(op::Gemm<T>{.trans_a = false,
                  .trans_b = true,
                  .m = f.batch, // y (batch, out) = x (batch, in) * weight^T (in, out)
                  .n = f.out,
                  .k = f.in,
                  .alpha = T(1),
                  .a = f.x,
                  .lda = f.in,
                  .b = f.weight,
                  .ldb = f.in,
                  .beta = f.bias ? T(1) : T(0),
                  .c = z,
                  .ldc = f.out},
      l);
  if (f.activation != Activation::identity || z != f.y) // (in place or not: each element reads only itself)
    launch_each(f.batch * f.out, ActivationForwardFn<T>{f.activation, z, f.y}, "ActivationForward", l);
}

// out (cols) = (or +=, with `accumulate`) the column sums of m (rows, cols): a bias gradient.
template <class T>
void column_sums(std::size_t rows, std::size_t cols, const T *m, T *out, bool accumulate, const Launch &l) {
  if (cols == 0) return;
  column_sum_add<<<static_cast<unsigned>((cols + 31) / 32), dim3(32, 16), 0, l.stream>>>(rows, cols, m, out,
                                                                                         accumulate);
  check_launch("column_sum_add", l);
}

// dx (batch, in) = dy (batch, out) * weight (out, in).
// With relu_before, dx is then the gradient at the input of the ReLU before (whose output x is),
// and dbias_before (+)= its column sums: in cuBLASLt's epilogue where the mask is there
// (DRELU_BGRAD), by kernels where not.
template <class T> void input_gradient(const op::LinearBackward<T> &b, const Launch &l) {
  Lt::InputGradient done;
  if constexpr (std::is_same_v<T, float>)
    if (l.lt) done = l.lt->input_gradient(l.stream, b);
  if (!done.product)
    run(op::Gemm<T>{.m = b.batch,
                    .n = b.in,
                    .k = b.out,
                    .a = b.dy,
                    .lda = b.out,
                    .b = b.weight,
                    .ldb = b.in,
                    .beta = T(0),
                    .c = b.dx,
                    .ldc = b.in},
        l);
  if (!b.relu_before) return;
  if (!done.relu) launch_each(b.batch * b.in, ReluBefore<T>{b.x, b.dx}, "ReluBefore", l);
  if (b.dbias_before && !done.bias) column_sums(b.batch, b.in, b.dx, b.dbias_before, b.accumulate, l);
}

// dweight (out, in) (+)= dy^T (out, batch) * x (batch, in), and dbias (+)= dy's column sums.
template <class T> void weight_gradient(const op::LinearBackward<T> &b, const Launch &l) {
  // The weight and bias gradients in one cuBLASLt call where it can (float, set rather than
  // added to: a step's first micro-batch).
  if constexpr (std::is_same_v<T, float>)
    if (l.lt && l.lt->weight_gradient(l.stream, b)) return;
  run(op::Gemm<T>{.trans_a = true,
                  .m = b.out,
                  .n = b.in,
                  .k = b.batch,
                  .a = b.dy,
                  .lda = b.out,
                  .b = b.x,
                  .ldb = b.in,
                  .beta = b.accumulate ? T(1) : T(0),
                  .c = b.dweight,
                  .ldc = b.in},
      l);
  if (b.dbias) column_sums(b.batch, b.out, b.dy, b.dbias, b.accumulate, l);
}

// Forks the side stream from the main one; join() joins it back, and so does the destructor
// where a failure came first: a stream left forked would leave a capture unjoined
// (cudaStreamEndCapture fails) and later work unordered after the side's.
class SideFork {
public:
  SideFork(const Side &side, const Launch &l) : side_(side), l_(l) {
    check(cudaEventRecord(side.fork, l.stream), "cudaEventRecord (fork)", l.site);
    check(cudaStreamWaitEvent(side.stream, side.fork, 0), "cudaStreamWaitEvent (fork)", l.site);
  }
  SideFork(const SideFork &) = delete;
  SideFork &operator=(const SideFork &) = delete;
  ~SideFork() {
    if (joined_) return;
    (void)cudaEventRecord(side_.join, side_.stream);
    (void)cudaStreamWaitEvent(l_.stream, side_.join, 0);
  }
  // Joined only once both calls succeed: a failed one leaves the destructor to try again.
  void join() {
    check(cudaEventRecord(side_.join, side_.stream), "cudaEventRecord (join)", l_.site);
    check(cudaStreamWaitEvent(l_.stream, side_.join, 0), "cudaStreamWaitEvent (join)", l_.site);
    joined_ = true;
  }

private:
  const Side &side_;
  const Launch &l_;
  bool joined_ = false;
};

template <class T> void run(const op::LinearBackward<T> &b, const Launch &l) {
  if (b.dx && l.side && l.side->gains(b.batch, b.in)) {
    Launch beside = l;
    beside.stream = l.side->stream;
    beside.blas = l.side->blas;
    beside.lt = l.side->lt;
    beside.side = nullptr;
    beside.partials = nullptr; // the main stream's reduction buffer: nothing beside may use it
    SideFork fork(*l.side, l);
    weight_gradient(b, beside);
    input_gradient(b, l);
    fork.join();
    return;
  }
  if (b.dx) input_gradient(b, l);
  weight_gradient(b, l);
}

template <class T> void run(const op::ActivationForward<T> &f, const Launch &l) {
  launch_each(f.n, ActivationForwardFn<T>{f.kind, f.x, f.y}, "ActivationForward", l);
}

template <class T> void run(const op::ActivationBackward<T> &b, const Launch &l) {
  launch_each(b.n, ActivationBackwardFn<T>{b.kind, b.x, b.y, b.dy, b.dx}, "ActivationBackward", l);
}

template <class T> void run(const op::Fill<T> &f, const Launch &l) {
  if (f.n == 0) return;
  if (f.value == T(0) && !std::signbit(f.value)) // +0.0 is all zero bits
    check(cudaMemsetAsync(f.dst, 0, f.n * sizeof(T), l.stream), "cudaMemsetAsync", l.site);
  else launch_each(f.n, Assign<T>{f.value, f.dst}, "Fill", l);
}

template <class T> void run(const op::CrossEntropy<T> &c, const Launch &l) {
  // A call that only checks the labels (no loss, no gradient) still sets *invalid, as the host's does.
  if (c.rows == 0 || c.classes == 0 || (!c.loss && !c.dlogits && !c.invalid)) return;
  // Up to 256 rows, one block (32 rows a warp) finishes the loss itself: one launch, not two.
  const unsigned blocks = c.rows <= 256 ? 1u : blocks_for(c.rows, warps);
  const bool one_block = blocks == 1;
  cross_entropy<<<blocks, threads, 0, l.stream>>>(c.rows, c.classes, c.logits, c.labels, c.scale, c.dlogits,
                                                  c.loss && !one_block ? l.partials : nullptr, c.invalid,
                                                  one_block ? c.loss : nullptr, static_cast<double>(c.scale));
  check_launch("cross_entropy", l);
  if (c.loss && !one_block) {
    add_partials<<<1, threads, 0, l.stream>>>(blocks, l.partials, static_cast<double>(c.scale), c.loss);
    check_launch("add_partials", l);
  }
}

template <class T> void run(const op::SquaredError<T> &s, const Launch &l) {
  if (s.n == 0 || (!s.loss && !s.dpred && !s.invalid)) return;
  const unsigned blocks = blocks_for(s.n);
  squared_error<<<blocks, threads, 0, l.stream>>>(s.n, s.pred, s.target, T(2) * s.scale, s.dpred,
                                                  s.loss ? l.partials : nullptr, s.invalid);
  check_launch("squared_error", l);
  if (s.loss) {
    add_partials<<<1, threads, 0, l.stream>>>(blocks, l.partials, static_cast<double>(s.scale), s.loss);
    check_launch("add_partials", l);
  }
}

template <class T> void run(const op::SgdStep<T> &s, const Launch &l) { launch_each(s.n, SgdFn<T>{s}, "SgdStep", l); }

template <class T> void run(const op::SmallForward<T> &f, const Launch &l) {
  small::require_small("SmallForward", l.site, f.layers.data(), f.count, f.layers.size());
  if (f.rows == 0 || f.count == 0) return;
  const auto blocks = static_cast<unsigned>((f.rows + small::chunk_rows<T> - 1) / small::chunk_rows<T>);
  small_forward<<<blocks, threads, 0, l.stream>>>(f);
  check_launch("small_forward", l);
}

template <class T> void run(const op::SmallBackward<T> &g, const Launch &l) {
  small::require_small("SmallBackward", l.site, g.layers.data(), g.count, g.layers.size());
  if (g.rows == 0 || g.count == 0) return;
  if (g.rows > op::small_rows)
    detail::fail("SmallBackward on ", l.site, ": ", g.rows, " rows, more than op::small_rows = ", op::small_rows);
  small_backward<<<1, threads, 0, l.stream>>>(g);
  check_launch("small_backward", l);
}

template <class T> void run(const op::SmallNetwork<T> &n, const Launch &l) {
  small::require_network(n, l.site);
  if (n.rows == 0 || n.count == 0) return;
  if (n.rows > op::small_rows)
    detail::fail("SmallNetwork on ", l.site, ": ", n.rows, " rows, more than op::small_rows = ", op::small_rows);
  small_network<<<1, threads, 0, l.stream>>>(n);
  check_launch("small_network", l);
}

// One thread: the step's number and scalars from the count in device memory, ahead of the update.
template <class T> __global__ void adam_count(op::AdamStep<T> a) {
  if (a.skip && *a.skip) return;
  *a.count = op::adam_scalars(a.lr, a.beta1, a.beta2, a.count->steps + 1);
}

template <class T> void run(const op::AdamStep<T> &a, const Launch &l) {
  // The scalars in double and rounded to T once, as the host backend (and PyTorch) computes them.
  // With a count in device memory they are computed there, so that a captured step replays with
  // the next step's numbers.
  op::AdamCount host_scalars; // unused where the count is on the device
  if (a.count) {
    adam_count<<<1, 1, 0, l.stream>>>(a);
    check_launch("AdamCount", l);
  } else {
    host_scalars = op::adam_scalars(a.lr, a.beta1, a.beta2, a.step);
  }
  launch_each(a.n, AdamFn<T>{a, adam_scalars_of(a, host_scalars)}, "AdamStep", l);
}

} // namespace tandem::backend::cuda::kernels
