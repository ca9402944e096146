// SPDX-License-Identifier: Apache-2.0
// The stop ladder's timing, as a pure state machine so it can be tested without processes:
// graceful request, then SIGTERM+SIGCONT to the group, SIGKILL once the budget is spent, and
// "lost" if the VMM is still not reaped a bounded time after SIGKILL.
#pragma once

#include <cstdint>
#include <optional>

namespace sbx::supervisor {

enum class StopAction {
  kGracefulRequest,  // the VMM kind's API call (none for generic)
  kTerminate,        // SIGTERM then SIGCONT to the process group
  kKill,             // SIGKILL to the process group and the PID-namespace init
  kGiveUp,           // still not reaped after SIGKILL: outcome lost
};

class StopLadder {
 public:
  // `budget_ms` is stop_timeout_ms; with a graceful request the first half of the budget is
  // its to use, else SIGTERM goes at once. `kill_grace_ms` bounds the wait after SIGKILL.
  StopLadder(int64_t start_ms, uint32_t budget_ms, bool has_graceful_request,
             uint32_t kill_grace_ms = 1000);

  // The next action due at or before `now_ms`, once each, in order; nullopt if none is due.
  std::optional<StopAction> due(int64_t now_ms);

  // Milliseconds until the next action is due (0 if one is due now, -1 after kGiveUp).
  int64_t wait_ms(int64_t now_ms) const;

  // The graceful request was refused before anything was sent (the socket is not the
  // sandbox's): SIGTERM is due at once rather than halfway through the budget.
  void skip_to_terminate() { graceful_ = false; }

  bool killed() const { return next_ > static_cast<int>(StopAction::kKill); }

 private:
  int64_t at(int step) const;
  int64_t start_ms_;
  uint32_t budget_ms_;
  bool graceful_;
  uint32_t kill_grace_ms_;
  int next_ = 0;  // index of the next StopAction
};

}  // namespace sbx::supervisor
