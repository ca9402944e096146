// SPDX-License-Identifier: Apache-2.0
// How much longer than on the host the tests' waits may take: SBX_TEST_TIME_SCALE, a whole
// number from 1 to 100 (1 when unset). scripts/kernel-test.sh sets it under emulation, where a
// guest's vCPU can stand still for tens of seconds while the host runs something else. No test
// asserts on speed, so the factor changes only how long a real failure takes to be reported.
//
// How many of their rounds the long loops run (races of a thousand launches, two hundred
// sandboxes, grids of fd numbers): one in SBX_TEST_LOOP_DIVISOR, a whole number from 1 to 100
// (1 when unset, so every round). scripts/kernel-test.sh sets it under emulation, where a
// launch is ten to twenty times slower; the host runs every round in every suite run.
#pragma once

#include <cerrno>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace sbx::it {

// The environment variable `name` as a whole number from 1 to 100, 1 when unset; throws
// naming it on any other value.
inline int factor_from_env(const char* name) {
  const char* text = getenv(name);
  if (text == nullptr || *text == '\0') return 1;
  char* end = nullptr;
  errno = 0;
  long n = strtol(text, &end, 10);
  if (errno != 0 || *end != '\0' || n < 1 || n > 100) {
    throw std::runtime_error(std::string(name) + ": not a whole number from 1 to 100: " + text);
  }
  return static_cast<int>(n);
}

// The factor of the waits.
inline int time_scale() {
  static const int scale = factor_from_env("SBX_TEST_TIME_SCALE");
  return scale;
}

// One round in this many of the long loops is run.
inline int loop_divisor() {
  static const int divisor = factor_from_env("SBX_TEST_LOOP_DIVISOR");
  return divisor;
}

// How many of a loop's `rounds` run: all on the host, never fewer than one.
inline int rounds_of(int rounds) {
  const int n = rounds / loop_divisor();
  return n > 0 ? n : 1;
}

// Whether round `i` (from 0) of a loop that cannot be shortened by its end, such as a grid,
// is run: every divisor-th one.
inline bool round_runs(int i) {
  return i % loop_divisor() == 0;
}

// A wait of `ms` milliseconds, stretched by the factor.
inline int patience_ms(int ms) {
  return ms * time_scale();
}

}  // namespace sbx::it
