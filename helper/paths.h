// SPDX-License-Identifier: Apache-2.0
// Path resolution the helper can trust: no symlinks anywhere, ownership and mode checked on
// every component. Everything here works on fds; the caller never gets a check-then-use window.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"
#include "common/unique_fd.h"

namespace sbx::paths {

// openat2(dirfd, path, flags, RESOLVE_NO_SYMLINKS [| RESOLVE_BENEATH]) with O_CLOEXEC added.
// Returns -1 with errno set.
int open_no_symlinks(int dirfd, std::string_view path, int flags, bool beneath);

// Opens an absolute path whose every component (the final one included) is root-owned and
// not group/other-writable, with no symlink anywhere. `flags` applies to the final open.
Result<UniqueFd> open_root_owned(const std::string& path, int flags, Step step);

}  // namespace sbx::paths
