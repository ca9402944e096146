// SPDX-License-Identifier: Apache-2.0
#include "supervisor/stop_ladder.h"

#include <algorithm>

namespace sbx::supervisor {

StopLadder::StopLadder(int64_t start_ms, uint32_t budget_ms, bool has_graceful_request,
                       uint32_t kill_grace_ms)
    : start_ms_(start_ms),
      budget_ms_(budget_ms),
      graceful_(has_graceful_request),
      kill_grace_ms_(kill_grace_ms) {
  if (!graceful_) next_ = static_cast<int>(StopAction::kTerminate);
}

int64_t StopLadder::at(int step) const {
  switch (static_cast<StopAction>(step)) {
    case StopAction::kGracefulRequest:
      return start_ms_;
    case StopAction::kTerminate:
      return graceful_ ? start_ms_ + budget_ms_ / 2 : start_ms_;
    case StopAction::kKill:
      return start_ms_ + budget_ms_;
    case StopAction::kGiveUp:
      return start_ms_ + budget_ms_ + kill_grace_ms_;
  }
  return start_ms_;
}

std::optional<StopAction> StopLadder::due(int64_t now_ms) {
  if (next_ > static_cast<int>(StopAction::kGiveUp)) return std::nullopt;
  if (now_ms < at(next_)) return std::nullopt;
  return static_cast<StopAction>(next_++);
}

int64_t StopLadder::wait_ms(int64_t now_ms) const {
  if (next_ > static_cast<int>(StopAction::kGiveUp)) return -1;
  return std::max<int64_t>(0, at(next_) - now_ms);
}

}  // namespace sbx::supervisor
