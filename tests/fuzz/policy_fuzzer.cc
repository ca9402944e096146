// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the policy parser on arbitrary text. Whatever it accepts must format to
// text that parses to the same policy.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "helper/policy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto policy = sbx::policy::parse(text, "fuzz.conf");
  if (!policy.ok()) return 0;
  std::string formatted = sbx::policy::format(policy.value());
  auto again = sbx::policy::parse(formatted, "formatted.conf");
  if (!again.ok() || sbx::policy::format(again.value()) != formatted) std::abort();
  (void)sbx::policy::netns_allowed(policy.value(), "sbx-vm-1", 1000);
  return 0;
}
