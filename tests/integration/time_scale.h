// SPDX-License-Identifier: Apache-2.0
// How much longer than on the host the tests' waits may take: SBX_TEST_TIME_SCALE, a whole
// number from 1 to 100 (1 when unset). scripts/kernel-test.sh sets it under emulation, where a
// guest's vCPU can stand still for tens of seconds while the host runs something else. No test
// asserts on speed, so the factor changes only how long a real failure takes to be reported.
#pragma once

#include <cerrno>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace sbx::it {

// The factor; throws on a value that is not a whole number from 1 to 100.
inline int time_scale() {
  static const int scale = [] {
    const char* text = getenv("SBX_TEST_TIME_SCALE");
    if (text == nullptr || *text == '\0') return 1;
    char* end = nullptr;
    errno = 0;
    long n = strtol(text, &end, 10);
    if (errno != 0 || *end != '\0' || n < 1 || n > 100) {
      throw std::runtime_error(
          std::string("SBX_TEST_TIME_SCALE: not a whole number from 1 to 100: ") + text);
    }
    return static_cast<int>(n);
  }();
  return scale;
}

// A wait of `ms` milliseconds, stretched by the factor.
inline int patience_ms(int ms) {
  return ms * time_scale();
}

}  // namespace sbx::it
