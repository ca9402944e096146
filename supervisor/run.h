// SPDX-License-Identifier: Apache-2.0
// `sbx-supervisor run`: one sandbox from launch to reaped, with readiness, the stop ladder on
// SIGTERM/SIGINT, not_ready or a `stop` request, exactly one `exited` event, and nothing left
// behind; with a state dir, its files and control socket kept up to date.
#pragma once

#include <optional>
#include <string>

#include "supervisor/cgroup.h"
#include "supervisor/spec.h"
#include "supervisor/state_dir.h"

namespace sbx::supervisor {

enum class GroupSignalMode {
  kAuto,  // pidfd_send_signal(PIDFD_SIGNAL_PROCESS_GROUP) where the kernel has it
  kKill,  // kill(-pgid): the path for kernels before 6.9
};

struct RunOptions {
  std::string helper_path;
  int events_fd = 1;
  GroupSignalMode signal_mode = GroupSignalMode::kAuto;
  CgroupKillMode cgroup_kill_mode = CgroupKillMode::kAuto;
  // Spawn the helper straight into the sandbox's cgroup (clone3 CLONE_INTO_CGROUP), or spawn
  // it and then move it (the path for kernels before 5.7; tested with --cgroup-enter move).
  bool cgroup_spawn_into = true;
  // --state-dir: DIR/<id>/, claimed (its lock held) by the caller; nullptr without one.
  StateDir* state_dir = nullptr;
  std::string spec_path;  // for state.json
  // --detach: the events fd is the waiting caller's pipe, closed once `started` is out.
  bool detached = false;
};

// Preconditions: single-threaded; SIGTERM and SIGINT not yet blocked. Returns the exit status
// of `sbx-supervisor run` (see Outcome::exit_status).
int run_sandbox(const Spec& spec, const RunOptions& options);

}  // namespace sbx::supervisor
