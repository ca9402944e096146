// SPDX-License-Identifier: Apache-2.0
// The kernel features a launch cannot do without, each with the Linux version that brought it,
// probed without side effects. The helper checks them before anything else, so that on an
// older kernel a launch fails naming the feature and the version rather than with a bare
// ENOSYS halfway through; `sbx-supervisor doctor` reports the same list.
#pragma once

#include <optional>
#include <span>
#include <string_view>

namespace sbx::kernel {

// The oldest kernel with every needed feature (mount_setattr, the newest of them).
inline constexpr std::string_view kMinimumVersion = "5.12";

struct Feature {
  std::string_view name;     // e.g. "close_range(CLOSE_RANGE_CLOEXEC)"
  std::string_view version;  // the Linux version that brought it, e.g. "5.11"
  bool (*present)();         // a probe that changes nothing
};

// Every needed feature, oldest first.
std::span<const Feature> needed_features();

// The first needed feature this kernel lacks, if any.
std::optional<Feature> first_missing();

}  // namespace sbx::kernel
