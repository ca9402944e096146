// SPDX-License-Identifier: Apache-2.0
// The VMM's syscall filter: everything is allowed except what would let it change its mount or
// namespace view (EPERM), and clone3 (ENOSYS, so libc falls back to clone, whose namespace
// flags the filter can see and refuse).
#pragma once

#include <span>
#include <string_view>

#include "common/status.h"

namespace sbx::seccomp {

// The syscalls refused with EPERM, by name.
std::span<const std::string_view> denied_syscalls();

// Installs the filter on the calling thread. Needs no_new_privs (or CAP_SYS_ADMIN).
Status install_vmm_filter();

}  // namespace sbx::seccomp
