// SPDX-License-Identifier: Apache-2.0
#include "helper/caps.h"

#include <linux/capability.h>
#include <linux/securebits.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace sbx::caps {
namespace {

bool read_caps(__user_cap_data_struct (&data)[2]) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  return syscall(SYS_capget, &header, data) == 0;
}

}  // namespace

bool has_effective(int cap) {
  __user_cap_data_struct data[2] = {};
  if (!read_caps(data)) return false;
  return (data[cap / 32].effective >> (cap % 32)) & 1;
}

Status drop_all() {
  // Root (or anyone with CAP_SETPCAP) could regain capabilities through exec as uid 0: lock
  // that out with securebits, then empty the bounding set, while CAP_SETPCAP is still held.
  bool can_setpcap = has_effective(CAP_SETPCAP);
  if (can_setpcap) {
    int bits = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
               SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE |
               SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    if (prctl(PR_SET_SECUREBITS, bits, 0, 0, 0) != 0) {
      return Status(Step::kDropCapabilities, errno, "set securebits");
    }
    // Every capability the running kernel knows, not only those this build's headers name:
    // PR_CAPBSET_DROP answers EINVAL past the last one.
    for (int cap = 0;; ++cap) {
      if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0) continue;
      if (errno == EINVAL && cap > 0) break;
      return Status(Step::kDropCapabilities, errno,
                    "drop capability " + std::to_string(cap) + " from the bounding set");
    }
  }
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) {
    return Status(Step::kDropCapabilities, errno, "clear ambient capabilities");
  }
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  const __user_cap_data_struct none[2] = {};
  if (syscall(SYS_capset, &header, none) != 0) {
    return Status(Step::kDropCapabilities, errno, "capset: empty effective/permitted/inheritable");
  }
  // Trust, but verify: a silent partial drop must never reach exec.
  __user_cap_data_struct data[2] = {};
  if (!read_caps(data)) return Status(Step::kDropCapabilities, errno, "capget");
  for (const auto& d : data) {
    if (d.effective != 0 || d.permitted != 0 || d.inheritable != 0) {
      return Status(Step::kDropCapabilities, EPERM, "capabilities remain after the drop");
    }
  }
  if (can_setpcap) {
    for (int cap = 0; cap <= CAP_LAST_CAP; ++cap) {
      if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1) {
        return Status(Step::kDropCapabilities, EPERM, "bounding set not empty after the drop");
      }
    }
  }
  return {};
}

Status set_no_new_privs() {
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return Status(Step::kNoNewPrivs, errno, "PR_SET_NO_NEW_PRIVS");
  }
  return {};
}

}  // namespace sbx::caps
