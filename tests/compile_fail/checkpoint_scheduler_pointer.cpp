// expect: TANDEM_SCHEDULER_TYPE: save_checkpoint\(dir, net, opt, scheduler\) takes the LR schedule itself
// SPDX-License-Identifier: Apache-2.0
// A pointer to the LR schedule where save_checkpoint takes the schedule: one error that says what to
// pass. Under nvcc, this case and its twin also check that <tandem/checkpoint.hpp> compiles there.
#include <tandem/checkpoint.hpp>
#include <tandem/tandem.hpp>

using namespace tandem;

struct Net : Pipeline<Stage<Device<0>, Linear<4, 8>, ReLU>, Stage<Device<1>, Linear<8, 3>>> {
  using Pipeline::Pipeline;
};

int main() {
  Context ctx({.devices = "host"});
  Net net(ctx, 1);
  optim::Adam opt(net);
  optim::CosineAnnealingLR sched(opt, {.T_max = 10});
#ifdef TANDEM_COMPILE_FAIL
  save_checkpoint("checkpoint", net, opt, &sched);
#else
  save_checkpoint("checkpoint", net, opt, sched);
  load_checkpoint("checkpoint", net, opt, sched);
#endif
}
