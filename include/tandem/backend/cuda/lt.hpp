// SPDX-License-Identifier: Apache-2.0
// cuda::Lt: a Linear layer's forward product with its bias (and ReLU) fused into one cuBLASLt call,
// its weight gradient with the bias gradient, and (when tuning) its input gradient; optionally
// with the fastest of cuBLASLt's candidate algorithms, timed on the GPU.
#pragma once

#include <algorithm>
#include <array>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "tandem/backend/cuda/check.hpp"
#include "tandem/backend/cuda/event.hpp"
#include "tandem/backend/cuda/lt_epilogue.hpp"
#include "tandem/backend/cuda/lt_key.hpp"
#include "tandem/backend/ops.hpp"
#include "tandem/error.hpp"
#include "tandem/precision.hpp"

namespace tandem::backend::cuda {

// The cuBLAS compute type of a float product of precision `p`: float32 throughout, or float32
// data whose products' inputs tensor cores round to TF32 or bfloat16 (float32 accumulation).
inline cublasComputeType_t compute_type(Precision p) {
  switch (p) {
  case Precision::tf32: return CUBLAS_COMPUTE_32F_FAST_TF32;
  case Precision::bf16: return CUBLAS_COMPUTE_32F_FAST_16BF;
  case Precision::fp32: break;
  }
  return CUBLAS_COMPUTE_32F;
}

// One per stream (an executor's own, and its side stream's): every call shares one workspace,
// which two streams running at once would overwrite under each other.
//
// linear_forward() and weight_gradient() return false, having enqueued nothing, where cuBLASLt
// cannot do the product (the caller then takes its plain cuBLAS path), and throw tandem::Error
// where a call fails. The first call for a shape (and pointer alignments) asks the heuristic for an
// algorithm, which is kept, the answer "none" included: later calls query nothing and allocate
// nothing, so they may be captured into a CUDA graph. A first call made while the stream is
// capturing returns false.
//
// Tuning (opt-in, ContextOptions::tune_products): the heuristic's first answer is its estimate,
// and for products too small to fill the GPU it is often not the fastest (tile shape, split-K).
// With tuning, the first call for a shape of at most tune_max_macs multiply-adds runs every
// candidate the heuristic offers on the call's own data and keeps the fastest: a host
// synchronisation, once per shape. The choice is shared by every Lt of the process (on that
// GPU, precision and shape), so twin networks in one process still compute the same bits; a
// timing may choose differently in another process, so runs are reproducible there only up to
// the products' rounding, as with PyTorch's cudnn.benchmark.
class Lt {
public:
  // Hopper's usual choice: enough for split-K reductions of large products.
  static constexpr std::size_t workspace_bytes = std::size_t(32) << 20;
  // Larger products fill the GPU, where the heuristic's estimate holds, and each timed run would
  // cost milliseconds: 2^30 is a 1024-wide product of batch 1024 (about 40 us in fp32 on an H100).
  static constexpr double tune_max_macs = 1073741824.0;
  static constexpr int tune_runs = 5; // timed per candidate, after one untimed run
  // Products kept planned (each key: shape, epilogue, alignments). A training step meets about
  // three a Linear and row count, so this is well above what one step uses: a step that needed more
  // would plan anew at every call, and a captured one fall back to plain cuBLAS. What it bounds is
  // inference over ever new batch sizes. Past it, the least recently used plan goes: a descriptor
  // is read only during its own cublasLtMatmul call, so nothing issued (or captured) still needs
  // it, and a tuned shape finds its choice again in choices().
  static constexpr std::size_t default_max_plans = 4096;

  Lt(const Site &site, Precision precision, bool tune = false, std::size_t max_plans = default_max_plans)
      : site_(site), precision_(precision), tune_(tune), max_plans_(max_plans < 1 ? 1 : max_plans) {
    DeviceGuard guard(site_.device, site_);
    check(cublasLtCreate(&handle_), "cublasLtCreate", site_);
  }
  Lt(const Lt &) = delete;
  Lt &operator=(const Lt &) = delete;
  ~Lt() { release(); }

  // y (batch, out) = act(x (batch, in) * weight^T + bias), all row-major, weight (out, in) as in
  // PyTorch, bias (out) or null; act is identity, relu or gelu_tanh (anything else returns false).
  // With relu and f.relu_mask, the RELU_AUX epilogues also write the ReLU's bit mask there, for the
  // next Linear's input_gradient (DRELU); where they cannot, the product goes without (and that
  // input_gradient then leaves the ReLU to its caller). With gelu_tanh and f.pre_activation, the
  // GELU_AUX epilogues keep the product before the GELU there (its backward reads it); cuBLASLt's
  // GELU is the tanh form (PyTorch's _addmm_activation relies on it too).
  bool linear_forward(cudaStream_t stream, const op::LinearForward<float> &f, Activation act) {
    if (f.relu_mask) forget_mask(f.relu_mask); // until this call writes it
    if (!f.x || !f.weight || !f.y) return false;
    if (act == Activation::gelu_tanh) return gelu_forward(stream, f);
    // Only the GELU epilogues keep the product: elsewhere, the caller's plain path does.
    if (f.pre_activation || (act != Activation::identity && act != Activation::relu)) return false;
    const bool relu = act == Activation::relu, bias = f.bias != nullptr;
    if (relu && f.relu_mask &&
        matmul(stream, forward_key(f, bias ? CUBLASLT_EPILOGUE_RELU_AUX_BIAS : CUBLASLT_EPILOGUE_RELU_AUX, f.relu_mask),
               Operands{f.weight, f.x, f.y, f.bias, f.relu_mask})) {
      masks_.push_back(f.relu_mask);
      return true;
    }
    const Key key = forward_key(f,
                                relu ? (bias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU)
                                     : (bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT),
                                nullptr);
    return matmul(stream, key, Operands{f.weight, f.x, f.y, f.bias, nullptr});
  }

  // A Linear layer's weight gradient and bias gradient in one call (the BGRADB epilogue sums dy's
  // rows as the product reads them): dweight (out, in) = dy^T (out, batch) * x (batch, in) and
  // dbias (out) = the column sums of dy (batch, out), all row-major. Both are set, not added to:
  // for a step's first micro-batch (b.accumulate off); later ones take the plain path. Returns
  // false, having enqueued nothing, where it cannot. fp32 only: under TF32 or bf16 the bias
  // gradient must stay a float32 sum of dy (as on the host and in PyTorch), and whether the
  // epilogue sums the rounded operand instead is not documented.
  bool weight_gradient(cudaStream_t stream, const op::LinearBackward<float> &b) {
    if (precision_ != Precision::fp32) return false;
    if (b.accumulate || !b.x || !b.dy || !b.dweight || !b.dbias) return false;
    const Key key{Product::weight_gradient,
                  b.batch,
                  b.in,
                  b.out,
                  CUBLASLT_EPILOGUE_BGRADB,
                  alignment(b.x),
                  alignment(b.dy),
                  alignment(b.dweight),
                  alignment(b.dbias)};
    return matmul(stream, key, {b.x, b.dy, b.dweight, b.dbias, nullptr});
  }

  // What input_gradient did: the product, and with it the ReLU's gradient and the bias gradient
  // of the Linear before (b.relu_before); what it did not, the caller does.
  struct InputGradient {
    bool product = false, relu = false, bias = false;
  };
  // A Linear layer's input gradient dx (batch, in) = dy (batch, out) * weight (out, in), all
  // row-major. With b.relu_before and a mask this Lt's linear_forward wrote at b.relu_mask, the
  // DRELU epilogue applies the ReLU's gradient (and DRELU_BGRAD sets b.dbias_before where the
  // gradients are set, not added: a step's first micro-batch). The plain product, which cuBLAS
  // computes too, is taken here only when tuning (it has no epilogue to gain, only a faster
  // algorithm). Enqueues nothing where it does nothing.
  InputGradient input_gradient(cudaStream_t stream, const op::LinearBackward<float> &b) {
    if (!b.dy || !b.weight || !b.dx) return {};
    Key key{Product::input_gradient, b.batch,         b.in, b.out, CUBLASLT_EPILOGUE_DEFAULT, alignment(b.weight),
            alignment(b.dy),         alignment(b.dx), 0u};
    // Not for a product of depth 1 (a Linear<h, 1> head): NVIDIA's nvmath-python refuses DRELU
    // with k = 1 as unsupported by cuBLASLt, whatever its heuristic may offer.
    if (b.relu_before && b.relu_mask && b.out > 1 && has_mask(b.relu_mask)) {
      const bool bgrad = b.dbias_before && !b.accumulate;
      Key masked = key;
      masked.epilogue = bgrad ? CUBLASLT_EPILOGUE_DRELU_BGRAD : CUBLASLT_EPILOGUE_DRELU;
      masked.align_bias = bgrad ? alignment(b.dbias_before) : 0u;
      masked.align_aux = alignment(b.relu_mask);
      if (matmul(stream, masked, {b.weight, b.dy, b.dx, bgrad ? b.dbias_before : nullptr, b.relu_mask}))
        return {true, true, bgrad};
    }
    if (tune_ && matmul(stream, key, {b.weight, b.dy, b.dx, nullptr, nullptr})) return {true, false, false};
    return {};
  }

  // Device allocations made so far (the workspace, once): a steady state adds none.
  std::size_t allocations() const { return allocations_; }
  // Products planned and kept (at most max_plans()), those found unsupported included.
  std::size_t plans() const { return plans_.size(); }
  std::size_t max_plans() const { return max_plans_; }
  // Plans made so far, those since dropped included: a shape that comes again unplanned was dropped.
  std::size_t planned() const { return planned_; }
  Precision precision() const { return precision_; }
  bool tunes() const { return tune_; }
  // The plans by epilogue, "name supported/planned[, tuned]": which fused paths cuBLASLt took
  // for the shapes met so far (bench_gpu_step prints it next to each workload).
  std::string summary() const {
    std::string out;
    for (const auto e :
         {CUBLASLT_EPILOGUE_DEFAULT, CUBLASLT_EPILOGUE_BIAS, CUBLASLT_EPILOGUE_RELU, CUBLASLT_EPILOGUE_RELU_BIAS,
          CUBLASLT_EPILOGUE_RELU_AUX, CUBLASLT_EPILOGUE_RELU_AUX_BIAS, CUBLASLT_EPILOGUE_GELU,
          CUBLASLT_EPILOGUE_GELU_BIAS, CUBLASLT_EPILOGUE_GELU_AUX, CUBLASLT_EPILOGUE_GELU_AUX_BIAS,
          CUBLASLT_EPILOGUE_DRELU, CUBLASLT_EPILOGUE_DRELU_BGRAD, CUBLASLT_EPILOGUE_BGRADB}) {
      std::size_t planned = 0, supported = 0, tuned = 0;
      for (const auto &[key, p] : plans_)
        if (key.epilogue == e) {
          ++planned;
          supported += p->supported;
          tuned += p->tuned;
        }
      if (!planned) continue;
      out += (out.empty() ? "" : ", ") + std::string(epilogue_name(e)) + " " + std::to_string(supported) + "/" +
             std::to_string(planned) + (tuned ? " (" + std::to_string(tuned) + " tuned)" : "");
    }
    return out.empty() ? "none" : out;
  }
  // Whether the ReLU mask at p was written by this Lt's latest linear_forward given it.
  bool has_mask(const void *p) const { return std::find(masks_.begin(), masks_.end(), p) != masks_.end(); }
  // Every mask it saw: their memory may be about to be freed (Executor::deallocate).
  void forget_masks() noexcept { masks_.clear(); }
  // Plans whose algorithm a timing chose (here or, for the same shape, by another Lt).
  std::size_t tuned() const {
    std::size_t n = 0;
    for (const auto &[key, p] : plans_) n += p->tuned;
    return n;
  }

private:
  using Product = lt::Product;
  using Key = lt::Key;
  using KeyHash = lt::KeyHash;
  // A product's arrays, as make_plan names them; bias and aux (a ReLU mask, GELU's input) where the
  // epilogue uses them.
  struct Operands {
    const float *a, *b;
    float *d;
    const float *bias;
    const void *aux;
  };
  void forget_mask(const void *p) {
    if (auto it = std::find(masks_.begin(), masks_.end(), p); it != masks_.end()) masks_.erase(it);
  }

  struct Plan {
    Key key;
    bool supported = false;
    bool tuned = false;
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr; // C is D (beta = 0, C = D)
    cublasLtMatmulAlgo_t algo{};
    std::uint64_t used = 0; // the Lt's use count at its latest use (least recently used goes first)

    explicit Plan(const Key &k) : key(k) {}
    Plan(const Plan &) = delete;
    Plan &operator=(const Plan &) = delete;
    ~Plan() {
      if (d) (void)cublasLtMatrixLayoutDestroy(d);
      if (b) (void)cublasLtMatrixLayoutDestroy(b);
      if (a) (void)cublasLtMatrixLayoutDestroy(a);
      if (desc) (void)cublasLtMatmulDescDestroy(desc);
    }
  };

  // The heuristic's usable answers, best estimate first. A fixed array, not a vector: nvcc 13's
  // front end fails on a std::vector of cuBLASLt's anonymous algorithm struct (an internal error
  // in construct_at).
  struct Candidates {
    std::array<cublasLtMatmulAlgo_t, 8> algo{};
    std::size_t count = 0;
    void push_back(const cublasLtMatmulAlgo_t &a) { algo[count++] = a; }
    bool empty() const { return count == 0; }
    std::size_t size() const { return count; }
    const cublasLtMatmulAlgo_t &front() const { return algo[0]; }
    const cublasLtMatmulAlgo_t &operator[](std::size_t i) const { return algo[i]; }
    // An algorithm is plain data (its configuration in a few words): equal bytes, the same one.
    bool contains(const cublasLtMatmulAlgo_t &a) const {
      return std::any_of(algo.begin(), algo.begin() + static_cast<std::ptrdiff_t>(count),
                         [&](const cublasLtMatmulAlgo_t &c) { return std::memcmp(&c, &a, sizeof a) == 0; });
    }
  };

  struct Preference {
    cublasLtMatmulPreference_t p = nullptr;
    Preference() = default;
    Preference(const Preference &) = delete;
    Preference &operator=(const Preference &) = delete;
    ~Preference() {
      if (p) (void)cublasLtMatmulPreferenceDestroy(p);
    }
  };

  // The largest power of two (up to the 256 bytes cuBLASLt asks for by default) dividing the address.
  static std::uint32_t alignment(const void *p) {
    const auto address = reinterpret_cast<std::uintptr_t>(p);
    const std::uintptr_t lowest = address & (~address + 1);
    return lowest == 0 || lowest >= 256 ? 256u : static_cast<std::uint32_t>(lowest);
  }

  // D = op(A) op(B) with key's epilogue (bias: its vector, read or written; aux: the ReLU mask,
  // written or read); see make_plan for which matrix is which. False, with nothing enqueued, where
  // cuBLASLt cannot.
  bool matmul(cudaStream_t stream, const Key &key, const Operands &o) {
    // Empty products and the k == 0 case (y = bias) stay with the plain path, which handles them.
    if (key.batch == 0 || key.in == 0 || key.out == 0) return false;
    const auto limit = static_cast<std::size_t>(INT_MAX);
    if (key.batch > limit || key.in > limit || key.out > limit) return false;
    if (key.align_a < sizeof(float) || key.align_b < sizeof(float) || key.align_d < sizeof(float) ||
        (uses_bias(key.epilogue) && key.align_bias < sizeof(float)) || (uses_aux(key.epilogue) && key.align_aux < 16))
      return false;

    DeviceGuard guard(site_.device, site_); // the heuristic and the launch use the current device
    Plan *plan = find(key);
    if (!plan) {
      // Planning may allocate the workspace (cudaMalloc is not allowed while a stream captures).
      cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
      check(cudaStreamIsCapturing(stream, &capture), "cudaStreamIsCapturing", site_);
      if (capture != cudaStreamCaptureStatusNone) return false;
      ensure_workspace();
      plan = make_plan(key, stream, o);
    }
    if (!plan->supported) return false;

    // The descriptor keeps the pointers that the last call set; each call sets its own. A
    // host-only call: the launch below reads them, nothing later does.
    set_pointers(*plan, o);
    const cublasStatus_t status = launch(*plan, plan->algo, stream, o);
    // These two are refusals found before anything is launched: remember them and fall back.
    if (status == CUBLAS_STATUS_NOT_SUPPORTED || status == CUBLAS_STATUS_ARCH_MISMATCH) {
      plan->supported = false;
      return false;
    }
    check(status, "cublasLtMatmul", site_);
    return true;
  }

  // linear_forward's GELU (tanh form) in the epilogue, z = x * weight^T + bias kept at
  // f.pre_activation where given (GELU_AUX_BIAS). cuBLASLt takes that aux only with a leading
  // dimension divisible by 8: z is packed, so `out` must be.
  bool gelu_forward(cudaStream_t stream, const op::LinearForward<float> &f) {
    const bool bias = f.bias != nullptr, keep = f.pre_activation != nullptr;
    if (keep && f.out % 8 != 0) return false;
    const auto epilogue = keep ? (bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX)
                               : (bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU);
    return matmul(stream, forward_key(f, epilogue, f.pre_activation),
                  Operands{f.weight, f.x, f.y, f.bias, f.pre_activation});
  }
  // A forward product's key: weight as A, x as B, y as D (make_plan), and the aux where used.
  static Key forward_key(const op::LinearForward<float> &f, cublasLtEpilogue_t epilogue, const void *aux) {
    return {Product::linear_forward,
            f.batch,
            f.in,
            f.out,
            epilogue,
            alignment(f.weight),
            alignment(f.x),
            alignment(f.y),
            f.bias ? alignment(f.bias) : 0u,
            aux ? alignment(aux) : 0u};
  }

  Plan *find(const Key &key) {
    const auto it = plans_.find(key);
    if (it == plans_.end()) return nullptr;
    it->second->used = ++uses_;
    return it->second.get();
  }

  // Allocated on first use, never grown: plans made afterwards ask for no more than it holds.
  // Without memory for it, cuBLASLt runs with none (the heuristic then offers algorithms that need
  // none) rather than failing the step.
  void ensure_workspace() {
    if (workspace_ready_) return;
    void *p = nullptr;
    const cudaError_t status = cudaMalloc(&p, workspace_bytes);
    if (status == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      workspace_size_ = 0;
    } else {
      check(status, "cudaMalloc (cuBLASLt workspace)", site_);
      workspace_ = p;
      workspace_size_ = workspace_bytes;
      ++allocations_;
    }
    workspace_ready_ = true;
  }

  // A refusal while planning makes an unsupported plan; any other failure throws.
  bool accepted(cublasStatus_t status, const char *call) const {
    if (status == CUBLAS_STATUS_SUCCESS) return true;
    if (status == CUBLAS_STATUS_NOT_SUPPORTED || status == CUBLAS_STATUS_ARCH_MISMATCH ||
        status == CUBLAS_STATUS_INVALID_VALUE)
      return false;
    check(status, call, site_);
    return false;
  }

  // cuBLASLt is column-major, and a row-major (r, c) matrix is, in the same memory, the column-major
  // (c, r) matrix: its transpose. So, with every matrix column-major:
  // linear_forward:
  //   y (batch, out) row-major  = Y^T (out, batch), ld out    -> D, m = out, n = batch
  //   x (batch, in) row-major   = X^T (in, batch), ld in      -> B as stored, op N: (k = in, n = batch)
  //   w (out, in) row-major     = W^T (in, out), ld in        -> A as stored, op T gives W (m = out, k = in)
  // and Y = X W^T is the same as Y^T = W X^T = op(A) op(B). D's rows are the output features, and
  // the bias epilogue adds a vector of D's row count (m = out) to every column: bias[o] to each
  // y[r][o], as Linear needs, with no transposed copy.
  // weight_gradient:
  //   dw (out, in) row-major    = dW^T (in, out), ld in       -> D, m = in, n = out
  //   x (batch, in) row-major   = X^T (in, batch), ld in      -> A as stored, op N: (m = in, k = batch)
  //   dy (batch, out) row-major = dY^T (out, batch), ld out   -> B as stored, op T gives dY (k = batch, n = out)
  // and dW = dY^T X is the same as dW^T = X^T dY = op(A) op(B). BGRADB sums op(B) over k, one value
  // per column of D (n = out): dbias[o] = the sum over rows of dy[r][o].
  // input_gradient:
  //   dx (batch, in) row-major  = dX^T (in, batch), ld in     -> D, m = in, n = batch
  //   w (out, in) row-major     = W^T (in, out), ld in        -> A as stored, op N: (m = in, k = out)
  //   dy (batch, out) row-major = dY^T (out, batch), ld out   -> B as stored, op N: (k = out, n = batch)
  // and dX = dY W is the same as dX^T = W^T dY^T = op(A) op(B).
  Plan *make_plan(const Key &key, cudaStream_t stream, const Operands &o) {
    auto plan = std::make_unique<Plan>(key);
    Plan &p = *plan;
    const bool forward = key.product == Product::linear_forward, dw = key.product == Product::weight_gradient;
    const auto batch = static_cast<std::uint64_t>(key.batch), in = static_cast<std::uint64_t>(key.in),
               out = static_cast<std::uint64_t>(key.out);
    const std::uint64_t m = forward ? out : in, n = dw ? out : batch;
    // A and B as stored: (rows, columns, leading dimension = rows).
    const std::uint64_t a_rows = in, a_cols = dw ? batch : out;
    const std::uint64_t b_rows = forward ? in : out, b_cols = batch;
    const cublasComputeType_t compute = compute_type(precision_);
    const std::int32_t trans_a = forward ? CUBLAS_OP_T : CUBLAS_OP_N, trans_b = dw ? CUBLAS_OP_T : CUBLAS_OP_N;
    const auto epilogue = static_cast<std::uint32_t>(key.epilogue);
    const void *bias_pointer = o.bias, *aux_pointer = o.aux;
    // The aux's leading dimension in elements: a mask's in bits, D's rows padded to 128
    // (relu_mask_bytes); GELU's input is laid out as D (gelu_forward checks the 8 it needs).
    const auto aux_ld = static_cast<std::int64_t>(uses_mask(key.epilogue) ? (m + 127) / 128 * 128 : m);
    const std::uint64_t max_workspace = workspace_size_;
    Preference pref;
    std::array<cublasLtMatmulHeuristicResult_t, 8> results{};
    int found = 0;

    const bool ready =
        accepted(cublasLtMatmulDescCreate(&p.desc, compute, CUDA_R_32F), "cublasLtMatmulDescCreate") &&
        accepted(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)),
                 "cublasLtMatmulDescSetAttribute (transa)") &&
        accepted(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)),
                 "cublasLtMatmulDescSetAttribute (transb)") &&
        accepted(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)),
                 "cublasLtMatmulDescSetAttribute (epilogue)") &&
        // The heuristic reads the bias pointer's alignment from the descriptor.
        (!uses_bias(key.epilogue) || accepted(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                                             &bias_pointer, sizeof(bias_pointer)),
                                              "cublasLtMatmulDescSetAttribute (bias pointer)")) &&
        (!uses_aux(key.epilogue) ||
         (accepted(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux_pointer,
                                                  sizeof(aux_pointer)),
                   "cublasLtMatmulDescSetAttribute (aux pointer)") &&
          accepted(
              cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof(aux_ld)),
              "cublasLtMatmulDescSetAttribute (aux ld)"))) &&
        accepted(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_32F, a_rows, a_cols, static_cast<std::int64_t>(a_rows)),
                 "cublasLtMatrixLayoutCreate (A)") &&
        accepted(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_32F, b_rows, b_cols, static_cast<std::int64_t>(b_rows)),
                 "cublasLtMatrixLayoutCreate (B)") &&
        accepted(cublasLtMatrixLayoutCreate(&p.d, CUDA_R_32F, m, n, static_cast<std::int64_t>(m)),
                 "cublasLtMatrixLayoutCreate (D)") &&
        accepted(cublasLtMatmulPreferenceCreate(&pref.p), "cublasLtMatmulPreferenceCreate") &&
        accepted(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_workspace,
                                                      sizeof(max_workspace)),
                 "cublasLtMatmulPreferenceSetAttribute (workspace)") &&
        accepted(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &key.align_a,
                                                      sizeof(key.align_a)),
                 "cublasLtMatmulPreferenceSetAttribute (alignment of A)") &&
        accepted(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &key.align_b,
                                                      sizeof(key.align_b)),
                 "cublasLtMatmulPreferenceSetAttribute (alignment of B)") &&
        accepted(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &key.align_d,
                                                      sizeof(key.align_d)),
                 "cublasLtMatmulPreferenceSetAttribute (alignment of C)") &&
        accepted(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &key.align_d,
                                                      sizeof(key.align_d)),
                 "cublasLtMatmulPreferenceSetAttribute (alignment of D)") &&
        accepted(cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.a, p.b, p.d, p.d, pref.p,
                                                static_cast<int>(results.size()), results.data(), &found),
                 "cublasLtMatmulAlgoGetHeuristic");
    // Best estimate first; each result carries its own status.
    Candidates candidates;
    if (ready)
      for (int i = 0; i < found && i < static_cast<int>(results.size()); ++i)
        if (results[i].state == CUBLAS_STATUS_SUCCESS && results[i].workspaceSize <= workspace_size_)
          candidates.push_back(results[i].algo);
    if (!candidates.empty()) {
      p.algo = candidates.front();
      p.supported = true;
      const double macs = static_cast<double>(batch) * static_cast<double>(in) * static_cast<double>(out);
      if (tune_ && candidates.size() > 1 && macs <= tune_max_macs) p.tuned = tune(p, candidates, stream, o);
    }
    if (plans_.size() >= max_plans_) // (a scan, but only when a new product comes past the bound)
      plans_.erase(std::min_element(plans_.begin(), plans_.end(),
                                    [](const auto &l, const auto &r) { return l.second->used < r.second->used; }));
    plan->used = ++uses_;
    ++planned_;
    return plans_.insert_or_assign(key, std::move(plan)).first->second.get();
  }

  // What a timing chose, for every Lt of the process: a handful of shapes, searched in order.
  struct Choice {
    int device;
    Precision precision;
    Key key;
    cublasLtMatmulAlgo_t algo;
  };
  static std::mutex &choices_mutex() {
    static std::mutex m;
    return m;
  }
  static std::vector<Choice> &choices() {
    static std::vector<Choice> c;
    return c;
  }
  const Choice *find_choice(const Key &key) const { // with choices_mutex() held
    for (const auto &c : choices())
      if (c.device == site_.device && c.precision == precision_ && c.key == key) return &c;
    return nullptr;
  }

  // The plan's descriptor pointed at this call's bias and mask.
  void set_pointers(Plan &p, const Operands &o) {
    if (uses_bias(p.key.epilogue)) {
      const void *bias = o.bias;
      check(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)),
            "cublasLtMatmulDescSetAttribute (bias pointer)", site_);
    }
    if (uses_aux(p.key.epilogue)) {
      const void *aux = o.aux;
      check(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux)),
            "cublasLtMatmulDescSetAttribute (aux pointer)", site_);
    }
  }
  // D = op(A) op(B) with beta = 0 (C is D, never read). Host scalars (the default pointer mode)
  // are read before cublasLtMatmul returns.
  cublasStatus_t launch(const Plan &p, const cublasLtMatmulAlgo_t &algo, cudaStream_t stream, const Operands &o) {
    const float alpha = 1.0f, beta = 0.0f;
    return cublasLtMatmul(handle_, p.desc, &alpha, o.a, p.a, o.b, p.b, &beta, o.d, p.d, o.d, p.d, &algo, workspace_,
                          workspace_size_, stream);
  }

  // Times each candidate on the call's own operands (the call that follows overwrites D, and the
  // bias gradient, with beta = 0; neither is an input) and keeps the fastest in p.algo. Another
  // Lt's earlier choice for the same shape wins without a timing, where this Lt can run it: one
  // whose workspace could not be allocated is offered fewer algorithms, and cuBLASLt fails a
  // launch whose algorithm needs more workspace than it is given. True where a timing chose.
  bool tune(Plan &p, const Candidates &candidates, cudaStream_t stream, const Operands &o) {
    {
      std::lock_guard<std::mutex> lock(choices_mutex());
      if (const Choice *c = find_choice(p.key); c && candidates.contains(c->algo)) {
        p.algo = c->algo;
        return true;
      }
    }
    set_pointers(p, o);
    Event start(site_), stop(site_);
    int chosen = -1;
    float best = 0;
    for (std::size_t i = 0; i < candidates.size(); ++i) {
      if (launch(p, candidates[i], stream, o) != CUBLAS_STATUS_SUCCESS)
        continue; // refused at launch: no candidate after all
      start.record(stream);
      bool ran = true;
      for (int r = 0; r < tune_runs && ran; ++r) ran = launch(p, candidates[i], stream, o) == CUBLAS_STATUS_SUCCESS;
      stop.record(stream);
      check(cudaEventSynchronize(stop.get()), "cudaEventSynchronize", site_);
      float ms = 0;
      check(cudaEventElapsedTime(&ms, start.get(), stop.get()), "cudaEventElapsedTime", site_);
      if (ran && (chosen < 0 || ms < best)) {
        best = ms;
        chosen = static_cast<int>(i);
      }
    }
    if (chosen < 0) return false; // none ran: keep the estimate, which matmul() will try
    p.algo = candidates[static_cast<std::size_t>(chosen)];
    std::lock_guard<std::mutex> lock(choices_mutex());
    if (const Choice *c = find_choice(p.key)) { // a concurrent tuner's, being first, for all that can run it
      if (candidates.contains(c->algo)) p.algo = c->algo;
    } else {
      choices().push_back(Choice{site_.device, precision_, p.key, p.algo});
    }
    return true;
  }

  void release() noexcept {
    int previous = 0;
    (void)cudaGetDevice(&previous);
    (void)cudaSetDevice(site_.device);
    plans_.clear();
    // cudaFree waits for the device, so work still queued that uses the workspace finishes first.
    if (workspace_) (void)cudaFree(workspace_);
    if (handle_) (void)cublasLtDestroy(handle_);
    workspace_ = nullptr;
    handle_ = nullptr;
    (void)cudaSetDevice(previous);
  }

  Site site_;
  Precision precision_ = Precision::fp32;
  bool tune_ = false;
  cublasLtHandle_t handle_ = nullptr;
  void *workspace_ = nullptr;
  std::size_t workspace_size_ = 0;
  bool workspace_ready_ = false;
  std::size_t allocations_ = 0;
  std::size_t max_plans_ = default_max_plans;
  std::unordered_map<Key, std::unique_ptr<Plan>, KeyHash> plans_; // at most max_plans_
  std::uint64_t uses_ = 0;
  std::size_t planned_ = 0;
  std::vector<const void *> masks_; // ReLU masks the latest linear_forward given each wrote
};

} // namespace tandem::backend::cuda
