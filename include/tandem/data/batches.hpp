// SPDX-License-Identifier: Apache-2.0
// data::Batches: mini-batches of host arrays (x, y), in order or shuffled each epoch, as a PyTorch
// DataLoader over a TensorDataset walks them.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <numeric>
#include <random>
#include <ranges>
#include <span>
#include <type_traits>
#include <vector>

#include "tandem/error.hpp"

namespace tandem::data {

// DataLoader's defaults (batch_size 1, no shuffle, the last short batch kept).
struct BatchesOptions {
  std::size_t batch_size = 1;
  bool shuffle = false;
  // The shuffle of epoch e depends on (seed, e) alone: a run can be repeated, and each epoch
  // takes another order.
  std::uint64_t seed = 0;
  bool drop_last = false;
  // Values of y per row: 1 for class labels or one regression target; an MSE network's
  // out_features otherwise.
  std::size_t targets_per_row = 1;
};

// One mini-batch: `x` (rows, features) and `y` (rows, targets_per_row), row-major, ready for
// train_step. Unshuffled, they point into the arrays given; shuffled, into a buffer of the epoch,
// valid until the iterator moves on.
template <class X, class Y> struct Batch {
  std::span<const X> x;
  std::span<const Y> y;
  std::size_t rows() const { return y.size(); }
};

// Rows are told apart by y: n rows have n * targets_per_row targets, and x holds n rows of
// x.size() / n features. The arrays must outlive the Batches and its epochs.
template <class X, class Y> class Batches {
public:
  using Options = BatchesOptions;

  Batches(std::span<const X> x, std::span<const Y> y, Options options) : x_(x), y_(y), options_(options) {
    if (options.batch_size == 0) detail::fail("data::Batches: batch_size is 0 (must be >= 1)");
    if (options.targets_per_row == 0) detail::fail("data::Batches: targets_per_row is 0 (must be >= 1)");
    if (y.size() % options.targets_per_row)
      detail::fail("data::Batches: y holds ", y.size(), " values, not a multiple of targets_per_row ",
                   options.targets_per_row);
    rows_ = y.size() / options.targets_per_row;
    if (rows_ == 0) detail::fail("data::Batches: y is empty");
    if (x.size() % rows_)
      detail::fail("data::Batches: x holds ", x.size(), " values, not a whole number of rows for the ", rows_,
                   " rows of y");
    features_ = x.size() / rows_;
  }
  // From vectors, arrays or spans: Batches batches(x, y, {.batch_size = 64}). A Batches holds views
  // of its arrays, so a temporary that owns its values (a vector returned by a call) does not compile.
  template <class XR, class YR>
  Batches(XR &&x, YR &&y, Options options)
      : Batches(std::span<const X>(std::data(x), std::size(x)), std::span<const Y>(std::data(y), std::size(y)),
                options) {
    static_assert(outlives_batches<XR> && outlives_batches<YR>,
                  "TANDEM_BATCHES_TEMPORARY: data::Batches keeps views of x and y, not copies: pass arrays that "
                  "outlive it (named vectors, or spans of them), not temporaries such as a vector a function returns");
  }

  std::size_t rows() const { return rows_; }
  std::size_t features() const { return features_; }
  // Batches per epoch: the last short one counts unless drop_last.
  std::size_t size() const {
    // (rows + batch_size - 1) / batch_size would wrap for a batch_size near SIZE_MAX.
    const std::size_t whole = rows_ / options_.batch_size;
    return options_.drop_last ? whole : whole + (rows_ % options_.batch_size != 0);
  }
  const Options &options() const { return options_; }

  class Epoch;
  // Epoch `e`'s batches: for (auto [x, y] : batches.epoch(e)). An epoch points into its Batches:
  // a temporary Batches has none.
  Epoch epoch(std::size_t e) const & { return Epoch(*this, e); }
  Epoch epoch(std::size_t e) const && = delete;
  // As iterating a DataLoader does: each call is the next epoch (0, 1, 2, ...).
  Epoch next_epoch() & { return Epoch(*this, epochs_++); }
  Epoch next_epoch() && = delete;

  class Epoch {
  public:
    class iterator {
    public:
      using value_type = Batch<X, Y>;
      using difference_type = std::ptrdiff_t;
      value_type operator*() const { return epoch_->batch(index_); }
      iterator &operator++() {
        ++index_;
        return *this;
      }
      void operator++(int) { ++index_; }
      bool operator==(const iterator &other) const { return index_ == other.index_; }

    private:
      friend class Epoch;
      iterator(Epoch *epoch, std::size_t index) : epoch_(epoch), index_(index) {}
      Epoch *epoch_;
      std::size_t index_;
    };
    iterator begin() { return {this, 0}; }
    iterator end() { return {this, batches_->size()}; }
    std::size_t size() const { return batches_->size(); }
    // The rows of this epoch, in the order its batches take them (empty: in order). A view into
    // the epoch: a temporary epoch's (batches.epoch(e).order()) would dangle, and does not compile.
    std::span<const std::size_t> order() const & { return order_; }
    std::span<const std::size_t> order() const && = delete;

  private:
    friend class Batches;
    Epoch(const Batches &batches, std::size_t e) : batches_(&batches) {
      if (!batches.options_.shuffle) return;
      order_.resize(batches.rows_);
      std::iota(order_.begin(), order_.end(), std::size_t{0});
      // A generator per epoch, seeded from both numbers (seed_seq mixes them), so epochs differ.
      const auto s = batches.options_.seed;
      std::seed_seq seq{std::uint32_t(s), std::uint32_t(s >> 32), std::uint32_t(e), std::uint32_t(e >> 32)};
      std::mt19937_64 gen(seq);
      // Fisher-Yates with the generator drawn directly: the same order on every standard library.
      for (std::size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[gen() % i]);
    }
    Batch<X, Y> batch(std::size_t i) {
      const Batches &b = *batches_;
      const std::size_t first = i * b.options_.batch_size;
      const std::size_t n = std::min(b.options_.batch_size, b.rows_ - first);
      const std::size_t f = b.features_, t = b.options_.targets_per_row;
      if (order_.empty()) return {b.x_.subspan(first * f, n * f), b.y_.subspan(first * t, n * t)};
      x_.resize(n * f);
      y_.resize(n * t);
      for (std::size_t r = 0; r < n; ++r) {
        const std::size_t row = order_[first + r];
        std::copy_n(b.x_.begin() + std::ptrdiff_t(row * f), f, x_.begin() + std::ptrdiff_t(r * f));
        std::copy_n(b.y_.begin() + std::ptrdiff_t(row * t), t, y_.begin() + std::ptrdiff_t(r * t));
      }
      return {x_, y_};
    }

    const Batches *batches_;
    std::vector<std::size_t> order_;
    std::vector<X> x_; // the gathered batch, shuffled epochs only
    std::vector<Y> y_;
  };

private:
  // An lvalue outlives the Batches as the caller keeps it; of temporaries, only views (spans) do,
  // whose values live elsewhere.
  template <class R>
  static constexpr bool outlives_batches = std::is_lvalue_reference_v<R> || std::ranges::borrowed_range<R>;

  std::span<const X> x_;
  std::span<const Y> y_;
  Options options_;
  std::size_t rows_ = 0, features_ = 0;
  std::size_t epochs_ = 0;
};

template <class XR, class YR>
Batches(XR &&, YR &&, BatchesOptions)
    -> Batches<std::remove_cv_t<std::remove_pointer_t<decltype(std::data(std::declval<const XR &>()))>>,
               std::remove_cv_t<std::remove_pointer_t<decltype(std::data(std::declval<const YR &>()))>>>;

} // namespace tandem::data
