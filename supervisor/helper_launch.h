// SPDX-License-Identifier: Apache-2.0
// Starting sbx-nsexec: a SOCK_SEQPACKET socketpair, the helper spawned with posix_spawn with
// its end at fd 3 and nothing else beyond 0-2, one LAUNCH, then read to ERROR or EOF.
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>

#include "common/protocol.h"
#include "common/unique_fd.h"
#include "supervisor/spec.h"

namespace sbx::supervisor {

// A failure of the launch before the VMM runs: a helper step, or the supervisor's own
// ("spawn_helper", "control_socket").
struct SetupFailure {
  std::string step;
  int err = 0;
  std::string detail;
  int helper_exit = 125;  // the helper's exit status when it reported the failure
};

struct Launched {
  pid_t vmm_pid = -1;         // == pgid; the helper's pid, or the PID-namespace init's
  UniqueFd pidfd;             // pidfd of vmm_pid, opened before the child can be reaped
  uint32_t landlock_abi = 0;  // the Landlock layer the helper applied (0: none)
  // The VMM's own pid as this process sees it: vmm_pid, or the namespace init's child.
  pid_t reported_pid = -1;
  // PID-namespace launches: the control socket, on which the init sends the VMM's own wait
  // status (VMM_EXIT) before it exits.
  UniqueFd control;
  std::optional<SetupFailure> failure;
};

// Runs with the helper's pid once it is spawned and before LAUNCH is sent (the helper is then
// waiting for its request and has forked nothing): e.g. to place it in the sandbox's cgroup.
// A failure it returns ends the launch; the helper is killed and reaped, never sent LAUNCH.
using BeforeLaunch = std::function<std::optional<SetupFailure>(pid_t helper_pid)>;

// The VMM's wait status from a PID-namespace init's VMM_EXIT, if it arrives within
// `timeout_ms` (the init sends it before it exits, so after the init is reaped it is queued).
std::optional<int> read_vmm_exit(int control, int timeout_ms);

// Preconditions: the caller is a child subreaper (PID-namespace launches hand it the VMM) and
// has SIGCHLD at its default disposition. `reply_timeout_ms` bounds the wait for EOF. With
// `stdout_is_events` an inheriting VMM writes its stdout to the supervisor's stderr.
// With `cgroup_fd` (a cgroup v2 directory) the helper is spawned straight into that cgroup
// with clone3(CLONE_INTO_CGROUP), so it never migrates: a migration into a cgroup waits for
// an RCU grace period (about 12 ms measured here). Where clone3 cannot do that (ENOSYS,
// EINVAL) the helper is spawned as usual and `before_launch` places it.
Launched launch_helper(const std::string& helper_path, const protocol::LaunchRequest& request,
                       Stdio stdio, bool stdout_is_events, int reply_timeout_ms,
                       const BeforeLaunch& before_launch = {}, int cgroup_fd = -1);

}  // namespace sbx::supervisor
