// SPDX-License-Identifier: Apache-2.0
// Network namespaces, the way `ip netns exec` uses them: join a named netns from /run/netns,
// then give the private mount namespace a /sys and /etc that match it.
#pragma once

#include <string>

#include "common/status.h"
#include "common/unique_fd.h"

namespace sbx::netns {

// Opens /run/netns/NAME with no symlink anywhere and checks that it is an nsfs file.
Result<UniqueFd> open_named(const std::string& name);

// setns(fd, CLONE_NEWNET). The mount namespace is not touched.
Status join(int netns_fd);

// Must run in the private mount namespace: replaces /sys with a sysfs of the current netns
// (read-only if the old one was), as `ip netns exec` does.
Status remount_sys();

// Must run in the private mount namespace: binds each /etc/netns/NAME/ENTRY over /etc/ENTRY
// when that exists. A missing /etc/netns/NAME is not an error.
Status bind_etc_files(const std::string& name);

}  // namespace sbx::netns
