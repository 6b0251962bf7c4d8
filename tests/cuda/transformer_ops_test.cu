// SPDX-License-Identifier: Apache-2.0
// The transformer's operations (backend/ops/<name>.hpp) on the CUDA backend against their host
// bodies, on random data, in float and double. Gathers, permutations, elementwise work and the
// gradient sums kept in the host's row order must match bit for bit; a reduction in another order
// within a stated tolerance. Templated helpers, plain TEST_CASEs (doctest #800 under nvcc).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "support.hpp"
#include "tandem/backend/cuda/executor.hpp"
#include "tandem/backend/ops/add.hpp"
#include "tandem/backend/ops/batched_gemm.hpp"
#include "tandem/backend/ops/causal_softmax.hpp"
#include "tandem/backend/ops/column_sum.hpp"
#include "tandem/backend/ops/dropout.hpp"
#include "tandem/backend/ops/embedding.hpp"
#include "tandem/backend/ops/heads.hpp"
#include "tandem/backend/ops/layer_norm.hpp"
#include "tandem/backend/ops/positional_embedding.hpp"

namespace {

using namespace tandem;
namespace op = backend::op;
using test::check_close;
using test::DeviceArray;
using test::run_on;
using test::uniform;

template <class Op> void on_host(const Op &o) { backend::host::Kernel<Op>::run(o); }

template <class T> std::string name_of(const char *op) {
  return std::string(op) + (sizeof(T) == 4 ? "<float>" : "<double>");
}

// A row reduction in T on the GPU (warp lanes, then shuffles) against the host's in row order
// (LayerNorm's in double): float differs in rounding only. 1e-5 holds the worst case of a CPU
// emulation of the GPU's float order on these shapes (7e-6, LayerNorm's y) with a little room.
template <class T> constexpr double row_tolerance = sizeof(T) == 4 ? 1e-5 : 1e-12;

// Bit for bit: the same operations in the same order on both backends.
template <class T> void check_same(const std::vector<T> &got, const std::vector<T> &want, const std::string &what) {
  REQUIRE_MESSAGE(got.size() == want.size(), what);
  const auto [g, w] = std::mismatch(got.begin(), got.end(), want.begin());
  CHECK_MESSAGE(g == got.end(), what << ": first difference at " << (g - got.begin()) << " (got "
                                     << (g == got.end() ? T(0) : *g) << ", want " << (g == got.end() ? T(0) : *w)
                                     << ")");
}

// Attention's shapes: per (sequence, head) products of (seq_len, head_dim) blocks, padded
// leading dimensions, strides larger than a block, and the empty-depth path (k 0: C = beta C).
template <class T>
void batched_gemm_case(backend::Executor &ex, bool ta, bool tb, T beta, std::size_t k, std::size_t count) {
  const std::size_t m = 37, n = 29, pad = 3, gap = 5;
  const std::size_t a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
  const std::size_t lda = a_cols + pad, ldb = b_cols + pad, ldc = n + pad;
  const std::size_t sa = a_rows * lda + gap, sb = b_rows * ldb + gap, sc = m * ldc + gap;
  auto a = uniform<T>(count * sa + 1, 1), b = uniform<T>(count * sb + 1, 2), c = uniform<T>(count * sc, 3);
  DeviceArray<T> da(ex, a), db(ex, b), dc(ex, c);
  op::BatchedGemm<T> g{op::Gemm<T>{ta, tb, m, n, k, T(0.75), a.data(), lda, b.data(), ldb, beta, c.data(), ldc}, count,
                       sa, sb, sc};
  on_host(g);
  g.gemm.a = da.get(), g.gemm.b = db.get(), g.gemm.c = dc.get();
  run_on(ex, g);
  check_close(dc.to_host(), c, test::tolerance<T>,
              name_of<T>("BatchedGemm") + " trans_a " + std::to_string(ta) + " trans_b " + std::to_string(tb) +
                  " beta " + std::to_string(double(beta)) + " k " + std::to_string(k) + " count " +
                  std::to_string(count));
}

template <class T> void layer_norm_case(backend::Executor &ex, std::size_t width, bool dx, bool accumulate) {
  const std::size_t rows = 74;
  auto x = uniform<T>(rows * width, 10, -2, 3), w = uniform<T>(width, 11), b = uniform<T>(width, 12);
  auto dy = uniform<T>(rows * width, 13), dw = uniform<T>(width, 14), db = uniform<T>(width, 15);
  std::vector<T> y(rows * width), mean(rows), rstd(rows), dxs(rows * width);
  DeviceArray<T> d_x(ex, x), d_w(ex, w), d_b(ex, b), d_dy(ex, dy), d_dw(ex, dw), d_db(ex, db), d_y(ex, y),
      d_mean(ex, mean), d_rstd(ex, rstd), d_dx(ex, dxs);
  const std::string what = name_of<T>("LayerNorm") + " width " + std::to_string(width) + " ";

  on_host(op::LayerNormForward<T>{rows, width, x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data()});
  run_on(ex,
         op::LayerNormForward<T>{rows, width, d_x.get(), d_w.get(), d_b.get(), d_y.get(), d_mean.get(), d_rstd.get()});
  check_close(d_y.to_host(), y, row_tolerance<T>, what + "y");
  check_close(d_mean.to_host(), mean, row_tolerance<T>, what + "mean");
  check_close(d_rstd.to_host(), rstd, row_tolerance<T>, what + "rstd");

  // Both backends from the host's statistics, so the backward is compared on its own.
  DeviceArray<T> h_mean(ex, mean), h_rstd(ex, rstd);
  on_host(op::LayerNormBackward<T>{rows, width, x.data(), w.data(), dy.data(), mean.data(), rstd.data(),
                                   dx ? dxs.data() : nullptr, dw.data(), db.data(), accumulate});
  run_on(ex, op::LayerNormBackward<T>{rows, width, d_x.get(), d_w.get(), d_dy.get(), h_mean.get(), h_rstd.get(),
                                      dx ? d_dx.get() : nullptr, d_dw.get(), d_db.get(), accumulate});
  const std::string grads = what + "accumulate " + std::to_string(accumulate) + " ";
  if (dx) check_close(d_dx.to_host(), dxs, row_tolerance<T>, grads + "dx");
  // Column sums in double on both, rounded once: only the order of the double sums differs.
  check_close(d_dw.to_host(), dw, row_tolerance<T>, grads + "dweight");
  check_close(d_db.to_host(), db, row_tolerance<T>, grads + "dbias");
}

// Rows of two whole sequences, seq_len past a warp's 32 lanes; in place and not.
template <class T> void causal_softmax_case(backend::Executor &ex, std::size_t seq_len, bool in_place) {
  const std::size_t rows = 2 * seq_len, n = rows * seq_len;
  auto x = uniform<T>(n, 20, -4, 4), dy = uniform<T>(n, 21);
  std::vector<T> y(n, T(7)), dx(n, T(7));
  DeviceArray<T> d_x(ex, x), d_y(ex, y), d_dy(ex, dy), d_dx(ex, dx);
  const std::string what =
      name_of<T>("CausalSoftmax") + " seq_len " + std::to_string(seq_len) + (in_place ? " in place " : " ");
  on_host(op::CausalSoftmax<T>{rows, seq_len, x.data(), y.data()});
  run_on(ex, op::CausalSoftmax<T>{rows, seq_len, d_x.get(), in_place ? d_x.get() : d_y.get()});
  const auto got = in_place ? d_x.to_host() : d_y.to_host();
  check_close(got, y, row_tolerance<T>, what + "forward");
  for (std::size_t r = 0; r < rows; ++r) // the masked places are exact zeros
    for (std::size_t j = r % seq_len + 1; j < seq_len; ++j) REQUIRE_MESSAGE(got[r * seq_len + j] == T(0), what);

  // The backward from the host's y, so it is compared on its own.
  DeviceArray<T> h_y(ex, y);
  on_host(op::CausalSoftmaxBackward<T>{rows, seq_len, y.data(), dy.data(), dx.data()});
  run_on(ex, op::CausalSoftmaxBackward<T>{rows, seq_len, h_y.get(), d_dy.get(), in_place ? d_dy.get() : d_dx.get()});
  check_close(in_place ? d_dy.to_host() : d_dx.to_host(), dx, row_tolerance<T>, what + "backward");
}

// Ids that repeat (their gradient rows add up, in row order) and a vocabulary some rows of which
// no id names (set to zero without `accumulate`, kept with it).
template <class T> void embedding_case(backend::Executor &ex, bool accumulate) {
  const std::size_t rows = 300, vocab = 50, width = 70;
  auto ids = test::labels(rows, vocab - 10, 30); // ids in [0, 40): rows 40..49 unnamed
  auto weight = uniform<T>(vocab * width, 31), dy = uniform<T>(rows * width, 32), dw = uniform<T>(vocab * width, 33);
  std::vector<T> y(rows * width);
  DeviceArray<std::int32_t> d_ids(ex, ids);
  DeviceArray<T> d_weight(ex, weight), d_dy(ex, dy), d_dw(ex, dw), d_y(ex, y);
  const std::string what = name_of<T>("Embedding") + " accumulate " + std::to_string(accumulate) + " ";
  on_host(op::EmbeddingForward<T>{rows, vocab, width, ids.data(), weight.data(), y.data()});
  run_on(ex, op::EmbeddingForward<T>{rows, vocab, width, d_ids.get(), d_weight.get(), d_y.get()});
  check_same(d_y.to_host(), y, what + "forward");
  on_host(op::EmbeddingBackward<T>{rows, vocab, width, ids.data(), dy.data(), dw.data(), accumulate});
  run_on(ex, op::EmbeddingBackward<T>{rows, vocab, width, d_ids.get(), d_dy.get(), d_dw.get(), accumulate});
  check_same(d_dw.to_host(), dw, what + "backward");
}

template <class T> void positional_case(backend::Executor &ex, bool accumulate, bool dx_mode) {
  const std::size_t seq_len = 13, rows = 5 * seq_len, width = 70, n = rows * width;
  auto x = uniform<T>(n, 40), weight = uniform<T>(seq_len * width, 41), dy = uniform<T>(n, 42);
  auto dw = uniform<T>(seq_len * width, 43);
  std::vector<T> y(n), dx(n, T(7));
  DeviceArray<T> d_x(ex, x), d_weight(ex, weight), d_y(ex, y), d_dy(ex, dy), d_dw(ex, dw), d_dx(ex, dx);
  const std::string what = name_of<T>("Positional") + " accumulate " + std::to_string(accumulate) + " ";
  on_host(op::PositionalForward<T>{rows, seq_len, width, x.data(), weight.data(), y.data()});
  run_on(ex, op::PositionalForward<T>{rows, seq_len, width, d_x.get(), d_weight.get(), d_y.get()});
  check_same(d_y.to_host(), y, what + "forward");
  run_on(ex, op::PositionalForward<T>{rows, seq_len, width, d_x.get(), d_weight.get(), d_x.get()});
  check_same(d_x.to_host(), y, what + "forward in place");

  on_host(
      op::PositionalBackward<T>{rows, seq_len, width, dy.data(), dx_mode ? dx.data() : nullptr, dw.data(), accumulate});
  run_on(ex, op::PositionalBackward<T>{rows, seq_len, width, d_dy.get(), dx_mode ? d_dx.get() : nullptr, d_dw.get(),
                                       accumulate});
  check_same(d_dw.to_host(), dw, what + "dweight");
  check_same(d_dx.to_host(), dx, what + (dx_mode ? "dx (a copy of dy)" : "dx (untouched)"));
}

template <class T> void heads_case(backend::Executor &ex, std::size_t parts) {
  const std::size_t seqs = 2, seq_len = 5, heads = 3, head_dim = 4, n = parts * seqs * seq_len * heads * head_dim;
  auto x = uniform<T>(n, 50);
  std::vector<T> blocks(n), rows(n);
  DeviceArray<T> d_x(ex, x), d_blocks(ex, blocks), d_rows(ex, rows);
  const std::string what = name_of<T>("Heads") + " parts " + std::to_string(parts) + " ";
  on_host(op::SplitHeads<T>{seqs, seq_len, heads, head_dim, parts, x.data(), blocks.data()});
  run_on(ex, op::SplitHeads<T>{seqs, seq_len, heads, head_dim, parts, d_x.get(), d_blocks.get()});
  check_same(d_blocks.to_host(), blocks, what + "split");
  on_host(op::MergeHeads<T>{seqs, seq_len, heads, head_dim, parts, blocks.data(), rows.data()});
  run_on(ex, op::MergeHeads<T>{seqs, seq_len, heads, head_dim, parts, d_blocks.get(), d_rows.get()});
  check_same(d_rows.to_host(), rows, what + "merge");
  check_same(rows, x, what + "merge after split (host)");
}

// Add with y a separate array and y aliasing each input; Dropout with the host's mask, in place
// too, at an offset `first` as a later micro-batch has.
template <class T> void elementwise_case(backend::Executor &ex) {
  const std::size_t n = 10007;
  auto a = uniform<T>(n, 60), b = uniform<T>(n, 61);
  std::vector<T> y(n);
  on_host(op::Add<T>{n, a.data(), b.data(), y.data()});
  {
    DeviceArray<T> d_a(ex, a), d_b(ex, b), d_y(ex, std::vector<T>(n));
    run_on(ex, op::Add<T>{n, d_a.get(), d_b.get(), d_y.get()});
    check_same(d_y.to_host(), y, name_of<T>("Add"));
    run_on(ex, op::Add<T>{n, d_a.get(), d_b.get(), d_a.get()});
    check_same(d_a.to_host(), y, name_of<T>("Add") + " into a");
    run_on(ex, op::Add<T>{n, d_a.get(), d_b.get(), d_b.get()}); // b = (a + b) + b
    on_host(op::Add<T>{n, y.data(), b.data(), b.data()});
    check_same(d_b.to_host(), b, name_of<T>("Add") + " into b");
  }
  const float p = 0.3f;
  const T scale = T(1) / (T(1) - T(p));
  op::Dropout<T> d{.n = n, .key = 0x1234'5678'9abcull, .first = 4321, .p = p, .scale = scale};
  std::vector<T> kept(n);
  d.x = a.data(), d.y = kept.data();
  on_host(d);
  DeviceArray<T> d_x(ex, a), d_y(ex, std::vector<T>(n));
  d.x = d_x.get(), d.y = d_y.get();
  run_on(ex, d);
  check_same(d_y.to_host(), kept, name_of<T>("Dropout"));
  d.y = d_x.get();
  run_on(ex, d);
  check_same(d_x.to_host(), kept, name_of<T>("Dropout") + " in place");
  const auto dropped = std::count(kept.begin(), kept.end(), T(0));
  CHECK(dropped > static_cast<std::ptrdiff_t>(n / 5)); // about 0.3 n: the mask is not trivial
  CHECK(dropped < static_cast<std::ptrdiff_t>(n * 2 / 5));
}

template <class T> void column_sum_case(backend::Executor &ex, std::size_t rows, bool accumulate) {
  const std::size_t cols = 70;
  auto x = uniform<T>(rows * cols, 70), y = uniform<T>(cols, 71);
  DeviceArray<T> d_x(ex, x), d_y(ex, y);
  on_host(op::ColumnSum<T>{rows, cols, x.data(), y.data(), accumulate});
  run_on(ex, op::ColumnSum<T>{rows, cols, d_x.get(), d_y.get(), accumulate});
  // Rows split 16 ways on the GPU against row order on the host: in float an emulation of the
  // GPU's order differs by up to 5e-5 at 5000 rows, within the GPU tests' product tolerance.
  check_close(d_y.to_host(), y, test::tolerance<T>,
              name_of<T>("ColumnSum") + " rows " + std::to_string(rows) + " accumulate " + std::to_string(accumulate));
}

// Causal self-attention's core as a transformer layer chains it: q, k, v split into heads,
// scores = q k^T / sqrt(head_dim), causal softmax, context = p v, heads merged back; on both
// backends from the same projected input.
template <class T> void attention_chain_case(backend::Executor &ex) {
  const std::size_t seqs = 2, seq_len = 37, heads = 3, head_dim = 8, rows = seqs * seq_len;
  const std::size_t block = seqs * heads * seq_len * head_dim, count = seqs * heads, width = heads * head_dim;
  const auto qkv = uniform<T>(rows * 3 * width, 80);
  struct Arrays {
    T *qkv, *split, *scores, *context, *out;
  };
  const auto chain = [&](backend::Executor *on, Arrays a) {
    const auto run = [&](const auto &o) {
      if (on) run_on(*on, o);
      else on_host(o);
    };
    run(op::SplitHeads<T>{seqs, seq_len, heads, head_dim, 3, a.qkv, a.split});
    const T *q = a.split, *k = a.split + block, *v = a.split + 2 * block;
    op::Gemm<T> scores{
        .trans_b = true, .m = seq_len, .n = seq_len, .k = head_dim, .alpha = T(1) / T(std::sqrt(double(head_dim)))};
    scores.a = q, scores.lda = head_dim, scores.b = k, scores.ldb = head_dim, scores.beta = T(0);
    scores.c = a.scores, scores.ldc = seq_len;
    const std::size_t per_matrix = seq_len * head_dim, per_scores = seq_len * seq_len;
    run(op::BatchedGemm<T>{scores, count, per_matrix, per_matrix, per_scores});
    run(op::CausalSoftmax<T>{count * seq_len, seq_len, a.scores, a.scores});
    op::Gemm<T> context{.m = seq_len, .n = head_dim, .k = seq_len, .alpha = T(1)};
    context.a = a.scores, context.lda = seq_len, context.b = v, context.ldb = head_dim, context.beta = T(0);
    context.c = a.context, context.ldc = head_dim;
    run(op::BatchedGemm<T>{context, count, per_scores, per_matrix, per_matrix});
    run(op::MergeHeads<T>{seqs, seq_len, heads, head_dim, 1, a.context, a.out});
  };
  std::vector<T> split(3 * block), scores(count * seq_len * seq_len), context(block), out(rows * width);
  auto host_qkv = qkv;
  chain(nullptr, {host_qkv.data(), split.data(), scores.data(), context.data(), out.data()});
  DeviceArray<T> d_qkv(ex, qkv), d_split(ex, split), d_scores(ex, scores), d_context(ex, context), d_out(ex, out);
  chain(&ex, {d_qkv.get(), d_split.get(), d_scores.get(), d_context.get(), d_out.get()});
  check_close(d_out.to_host(), out, test::tolerance<T>, name_of<T>("attention chain"));
}

} // namespace

TEST_SUITE("gpu") {
  TEST_CASE("transformer ops: BatchedGemm matches the host bodies") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        batched_gemm_case<float>(ex, ta, tb, 0.f, 16, 6);
        batched_gemm_case<float>(ex, ta, tb, 0.5f, 16, 6);
        batched_gemm_case<double>(ex, ta, tb, 0.5, 16, 6);
      }
    batched_gemm_case<float>(ex, false, true, 0.f, 16, 1);
    batched_gemm_case<float>(ex, false, false, 0.f, 0, 4);
    batched_gemm_case<double>(ex, false, false, 0.5, 0, 4);
  }

  TEST_CASE("transformer ops: LayerNorm forward and backward match the host bodies") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    for (const std::size_t width : {std::size_t{100}, std::size_t{1000}})
      for (const bool dx : {true, false})
        for (const bool accumulate : {true, false}) {
          layer_norm_case<float>(ex, width, dx, accumulate);
          layer_norm_case<double>(ex, width, dx, accumulate);
        }
  }

  TEST_CASE("transformer ops: CausalSoftmax forward and backward match the host bodies") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    for (const std::size_t seq_len : {std::size_t{1}, std::size_t{37}, std::size_t{100}})
      for (const bool in_place : {false, true}) {
        causal_softmax_case<float>(ex, seq_len, in_place);
        causal_softmax_case<double>(ex, seq_len, in_place);
      }
  }

  TEST_CASE("transformer ops: embeddings, positions and heads match the host bodies bit for bit") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    for (const bool accumulate : {true, false}) {
      embedding_case<float>(ex, accumulate);
      embedding_case<double>(ex, accumulate);
      for (const bool dx : {true, false}) {
        positional_case<float>(ex, accumulate, dx);
        positional_case<double>(ex, accumulate, dx);
      }
    }
    for (const std::size_t parts : {std::size_t{1}, std::size_t{3}}) {
      heads_case<float>(ex, parts);
      heads_case<double>(ex, parts);
    }
  }

  TEST_CASE("transformer ops: Add, Dropout and ColumnSum match the host bodies") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    elementwise_case<float>(ex);
    elementwise_case<double>(ex);
    for (const std::size_t rows : {std::size_t{0}, std::size_t{150}, std::size_t{5000}})
      for (const bool accumulate : {true, false}) {
        column_sum_case<float>(ex, rows, accumulate);
        column_sum_case<double>(ex, rows, accumulate);
      }
  }

  TEST_CASE("transformer ops: causal attention's chain (heads, products, softmax) matches the host") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    attention_chain_case<float>(ex);
    attention_chain_case<double>(ex);
  }
}
