// SPDX-License-Identifier: Apache-2.0
#include "common/kernel_features.h"

#include <linux/close_range.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cerrno>

namespace sbx::kernel {
namespace {

// Each probe makes the call with arguments the kernel refuses before it acts (invalid flags, a
// zero size): a kernel that has the call answers EINVAL, EBADF or EPERM, one that lacks it
// ENOSYS, or for a new flag of an older call EINVAL.
bool known(long ret) {
  return ret >= 0 || errno != ENOSYS;
}

const std::array<Feature, 7> kFeatures = {{
    {"fsopen, fsmount, move_mount, open_tree (the mount API)", "5.2",
     [] { return known(syscall(SYS_fsopen, nullptr, ~0UL)); }},
    {"pidfd_open", "5.3", [] { return known(syscall(SYS_pidfd_open, 0L, ~0UL)); }},
    {"openat2", "5.6", [] { return known(syscall(SYS_openat2, -1L, nullptr, nullptr, 0UL)); }},
    {"faccessat2", "5.8", [] { return known(syscall(SYS_faccessat2, -1L, nullptr, 0L, ~0UL)); }},
    {"close_range", "5.9",
     [] { return known(syscall(SYS_close_range, 0xffffffffUL, 0xffffffffUL, 0UL)); }},
    // Closes nothing: no fd is at the top of the range. EINVAL: the flag is unknown.
    {"close_range(CLOSE_RANGE_CLOEXEC)", "5.11",
     [] {
       return syscall(SYS_close_range, 0xffffffffUL, 0xffffffffUL,
                      static_cast<unsigned long>(CLOSE_RANGE_CLOEXEC)) == 0;
     }},
    {"mount_setattr", "5.12",
     [] { return known(syscall(SYS_mount_setattr, -1L, nullptr, ~0UL, nullptr, 0UL)); }},
}};

}  // namespace

std::span<const Feature> needed_features() {
  return kFeatures;
}

std::optional<Feature> first_missing() {
  for (const Feature& f : kFeatures) {
    if (!f.present()) return f;
  }
  return std::nullopt;
}

}  // namespace sbx::kernel
