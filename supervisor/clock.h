// SPDX-License-Identifier: Apache-2.0
// The supervisor's clocks: CLOCK_MONOTONIC in milliseconds, for deadlines and event times; and
// the wall clock, for a sandbox's start time in the state dir (read by other processes).
#pragma once

#include <time.h>

#include <cstdint>

namespace sbx::supervisor {

inline int64_t now_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

inline int64_t unix_time_ms() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

}  // namespace sbx::supervisor
