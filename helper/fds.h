// SPDX-License-Identifier: Apache-2.0
// File descriptors across the helper's life: the state it accepts at entry (only 0-2 and the
// control socket survive), the control socket's identity, and the exact set the VMM inherits.
#pragma once

#include <vector>

#include "common/status.h"
#include "common/unique_fd.h"

namespace sbx::fds {

inline constexpr int kControlFd = 3;

// Makes sure fds 0-2 are open (on /dev/null if the caller closed them), so nothing the helper
// opens later can land on a stdio number.
Status ensure_stdio_open();

// fd 3 must be an AF_UNIX SOCK_SEQPACKET socket. Marks it close-on-exec: EOF on the peer's end
// then means the VMM was executed.
Status check_control_socket(int fd);

// Closes every fd above the control socket. Must run before the helper opens anything.
Status close_inherited_fds();

// Moves an fd the helper holds for itself above every number a caller may name as a passed
// fd's target (protocol::kMaxPassedFdTarget), close-on-exec, so placing the passed fds cannot
// overwrite it. Every fd the helper still needs, or still owns, when prepare_exec_fds runs
// must go through this first.
Status lift_above_targets(UniqueFd& fd);

// Moves the VMM's fd to seccomp::kExecFd, close-on-exec: the one fd the VMM's filter lets
// execveat use. Raises the soft RLIMIT_NOFILE for the move if it must, and restores it; the
// hard limit must be above kExecFd (EMFILE otherwise). set_rlimits in the launch then puts
// the number out of the VMM's reach.
Status place_exec_fd(UniqueFd& fd);

// Places each received fd at its target number (4..255), then marks every other fd from 3 up
// close-on-exec, so the VMM inherits 0-2 and the targets only. A target number that is still
// open when its fd is to be placed is an fd the helper holds: the request is refused (EBUSY)
// rather than that fd overwritten.
Status prepare_exec_fds(std::vector<UniqueFd>& passed, const std::vector<int>& targets);

}  // namespace sbx::fds
