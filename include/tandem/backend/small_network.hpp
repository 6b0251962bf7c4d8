// SPDX-License-Identifier: Apache-2.0
// A training step of a whole network of small stages in one pass: the body both backends run for
// op::SmallNetwork, forward through every stage, the loss, and backward, one CUDA block (or a
// host loop) for all of it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "tandem/backend/activation_math.hpp"
#include "tandem/backend/loss_math.hpp"
#include "tandem/backend/ops.hpp"
#include "tandem/backend/optimizer_math.hpp"
#include "tandem/backend/small_stage.hpp"

namespace tandem::backend::small {

// Why: with every stage fused (small_stage.hpp), the seed model's step on one GPU is still a chain
// of about eight launches (zeroing, two forwards, the loss, two backwards, two updates), each
// waiting for the last, and the work in each is a few microseconds of one block. When all stages
// live on one device, nothing crosses a boundary: one block can carry a chunk of rows forward
// through every stage, take the loss's gradient of it in shared memory, and carry that back, and
// then apply the optimizer's updates. The step becomes one launch.
//
// The arithmetic is small_stage.hpp's, layer by layer, the loss's loss_math.hpp's (as the host's
// CrossEntropy and SquaredError operations; only the order of the loss's sum differs), and the
// updates' optimizer_math.hpp's.

// small_stage.hpp's limits for every layer of the network (at most small_network_layers), and
// the updates within their array.
template <class T, class Where> void require_network(const op::SmallNetwork<T> &net, const Where &where) {
  require_small("SmallNetwork", where, net.layers.data(), net.count, net.layers.size());
  if (net.update_count > net.updates.size())
    detail::fail("SmallNetwork on ", where, ": ", net.update_count, " updates, more than its ", net.updates.size());
}

// Rows one pass takes: as many as the widest layer leaves room for in a ping-pong buffer (the
// seed model, 20 wide: 102 rows of float, so a batch of 64 is one pass).
template <class T> TANDEM_HOST_DEVICE inline std::size_t network_chunk_rows(const op::SmallNetwork<T> &net) {
  std::size_t widest = 1;
  for (std::size_t j = 0; j < net.count; ++j) {
    widest = net.layers[j].in > widest ? net.layers[j].in : widest;
    widest = net.layers[j].out > widest ? net.layers[j].out : widest;
  }
  return buffer_values<T> / widest;
}

// The loss of rows [first, first + n), whose `width` outputs are in s.a: leaves their gradient
// (scale included) in s.a and returns the sum of their losses, unscaled, in double as the loss
// operations add them. A bad label (outside [0, width)) or a target that is not finite sets
// *invalid; a bad label's row adds NaN and gets a zero gradient, as the host's CrossEntropy does.
template <class T, class Block>
TANDEM_HOST_DEVICE double loss_chunk(const op::SmallLoss<T> &loss, std::size_t width, std::size_t first, std::size_t n,
                                     Scratch<T> &s, Block &block) {
  const T *out = s.a;
  T *d = s.b;
  double total = 0;
  if (loss.kind == op::LossKind::cross_entropy) {
    total = block.sum(n, [&](std::size_t r) -> double {
      const std::int32_t label = loss.labels[first + r];
      if (loss.invalid && (label < 0 || static_cast<std::size_t>(label) >= width)) *loss.invalid = 1;
      return cross_entropy_row(out + r * width, width, label, loss.scale, d + r * width);
    });
  } else {
    const T two_scale = T(2) * loss.scale;
    const T *t = loss.targets + first * width;
    total = block.sum(n * width, [&](std::size_t i) -> double {
      if (loss.invalid && !finite(t[i])) *loss.invalid = 1;
      return squared_error_at(out[i], t[i], two_scale, d + i);
    });
  }
  s.a = d;
  s.b = const_cast<T *>(out);
  return total;
}

// One op::Update over its group, as the optimizer's own operation computes it.
template <class T, class Block> TANDEM_HOST_DEVICE void apply_update(const op::Update<T> &u, Block &block) {
  if (u.kind == op::UpdateKind::sgd) {
    const op::SgdStep<T> &s = u.sgd;
    if (s.skip && *s.skip) return; // (the same word for every thread: they all return)
    block.each(s.n, [&](std::size_t i) { sgd_update(s, i); });
  } else if (u.kind == op::UpdateKind::adam) {
    const op::AdamStep<T> &a = u.adam;
    if (a.skip && *a.skip) return;
    const op::AdamCount c = op::adam_scalars(a.lr, a.beta1, a.beta2, a.count ? a.count->steps + 1 : a.step);
    const AdamScalars<T> k = adam_scalars_of(a, c);
    block.each(a.n, [&](std::size_t i) { adam_update(a, k, i); });
    // After the barrier that every thread's read of the count came before.
    if (a.count) block.single([&] { *a.count = c; });
  }
}

// op::SmallNetwork: chunk by chunk, forward through every layer, the loss, backward through every
// layer; then the updates. One block must run all chunks in turn: they add to the same gradients
// and loss.
template <class T, class Block>
TANDEM_HOST_DEVICE void network_step(const op::SmallNetwork<T> &net, Scratch<T> s, Block &block) {
  const std::size_t chunk = network_chunk_rows(net);
  const std::size_t in = net.layers[0].in, out = net.layers[net.count - 1].out;
  // Before any thread can find a bad label (every later write follows a barrier).
  if (net.first && net.loss.invalid) block.single([&] { *net.loss.invalid = 0; });
  double total = 0;
  for (std::size_t first = 0; first < net.rows; first += chunk) {
    const std::size_t n = net.rows - first < chunk ? net.rows - first : chunk;
    const T *x = net.layers[0].x + first * in;
    T *a = s.a;
    block.each(n * in, [&](std::size_t i) { a[i] = x[i]; });
    forward_layers(&net.layers[0], net.count, first, n, s, block);
    total += loss_chunk(net.loss, out, first, n, s, block);
    backward_layers(&net.layers[0], net.count, first, n, net.first && first == 0, false, s, block);
  }
  if (net.loss.loss)
    block.single([&] {
      // scale * sum rounded once, as the loss operations do
      const T v = static_cast<T>(static_cast<double>(net.loss.scale) * total);
      *net.loss.loss = net.first ? v : *net.loss.loss + v;
    });
  for (std::size_t u = 0; u < net.update_count; ++u) apply_update(net.updates[u], block);
}

} // namespace tandem::backend::small
