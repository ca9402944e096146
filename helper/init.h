// SPDX-License-Identifier: Apache-2.0
// The forwarding init of a PID-namespace launch: pid 1 of the VMM's namespace, running the
// helper's own code (no exec, no capabilities, not dumpable, confined like the VMM). It starts
// the VMM, forwards the stop signals to it, reaps every process of the namespace, and when the
// VMM exits reports its own wait status to the supervisor and exits; the kernel then kills
// whatever is left in the namespace. A pid 1 that is the VMM itself would ignore a SIGTERM it
// has no handler for, and the supervisor would see the init's status instead of the VMM's.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "helper/exec.h"

namespace sbx::init {

// Starts the VMM with vfork + execveat (the child only empties the signal mask and makes the
// call: no page of this process is copied, which costs a fault each on a slow-faulting host)
// and serves as the init until the VMM exits; never returns after that. What the init sends
// is encoded before the vfork: nothing is allocated after it. `vmm` names the VMM in the ERROR
// of a failed exec (then the init exits 126, 127 or 125, as the helper would).
// Preconditions: pid 1 of the new PID namespace, single-threaded, every confinement layer
// applied, the passed fds at their targets, `control_fd` the control socket; any signal mask
// (the forwarded signals are blocked here and waited for; others stay as they are).
// Returns only when the VMM cannot be started at all (step fork_vmm).
// `first` are sent (in order, no fds) once the exec happened or failed, ahead of VMM_STARTED or
// ERROR: the pid report and the confinement report, off the VMM's way.
Status run(int control_fd, const exec::ExecPlan& plan, const std::string& vmm,
           std::span<const std::vector<uint8_t>> first);

}  // namespace sbx::init
