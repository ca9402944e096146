// SPDX-License-Identifier: Apache-2.0
// The supervisor's one clock: CLOCK_MONOTONIC in milliseconds, for deadlines and event times.
#pragma once

#include <time.h>

#include <cstdint>

namespace sbx::supervisor {

inline int64_t now_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

}  // namespace sbx::supervisor
