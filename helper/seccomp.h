// SPDX-License-Identifier: Apache-2.0
// The VMM's syscall filter: everything is allowed except what would let it change its mount or
// namespace view or reach into another process (EPERM), prctl(PR_SET_PDEATHSIG) (EPERM), and
// clone3 (ENOSYS, so libc falls back to clone, whose namespace flags the filter can see and
// refuse).
#pragma once

#include <span>
#include <string_view>

#include "common/status.h"

namespace sbx::seccomp {

// The syscalls refused with EPERM, by name.
std::span<const std::string_view> denied_syscalls();

// The SHA-256 of the BPF program, in lower-case hex (the audit record names it).
std::string_view filter_digest();

// Installs the filter on the calling thread. Needs no_new_privs (or CAP_SYS_ADMIN).
Status install_vmm_filter();

}  // namespace sbx::seccomp
