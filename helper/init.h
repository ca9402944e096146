// SPDX-License-Identifier: Apache-2.0
// The forwarding init of a PID-namespace launch: pid 1 of the VMM's namespace, running the
// helper's own code (no exec, no capabilities, not dumpable, confined like the VMM). It forks
// the VMM, forwards the stop signals to it, reaps every process of the namespace, and when the
// VMM exits reports its own wait status to the supervisor and exits; the kernel then kills
// whatever is left in the namespace. A pid 1 that is the VMM itself would ignore a SIGTERM it
// has no handler for, and the supervisor would see the init's status instead of the VMM's.
#pragma once

#include <string>

#include "common/status.h"

namespace sbx::init {

// Forks the VMM. Returns in the child only, with the signal mask restored: the result is the
// close-on-exec fd on which exec_failed reports a failed exec. In the parent it never returns:
// it serves as the init until the VMM exits. What the init sends is encoded before the fork:
// nothing is allocated after it. `vmm` names the VMM in the ERROR of a failed exec.
// Preconditions: pid 1 of the new PID namespace, single-threaded, every confinement layer
// applied, the passed fds at their targets, fd 3 the control socket.
// Fails (step fork_vmm) only when the pipe or the fork cannot be made.
Result<int> fork_vmm(int control_fd, const std::string& vmm);

// In the VMM child, after a failed exec: tells the init the errno and exit code, then exits.
[[noreturn]] void exec_failed(int report_fd, int err, int exit_code);

}  // namespace sbx::init
