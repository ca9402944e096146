// SPDX-License-Identifier: Apache-2.0
// The VMM binary: opened once (O_PATH) before any mount work and checked, then executed from
// that same fd, so the file that was checked is the file that runs.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/protocol.h"
#include "common/status.h"
#include "common/unique_fd.h"

namespace sbx::exec {

// The opened VMM and the identity of the file that was checked.
struct Vmm {
  UniqueFd fd;
  dev_t dev = 0;
  ino_t ino = 0;
};

// Opens `path` with no symlinks, every component root-owned and not group/other-writable;
// the file must be regular and executable by the caller.
Result<Vmm> open_vmm(const std::string& path);

// What execveat needs, built in advance (so a vfork child only makes the call).
struct ExecPlan {
  int fd = -1;
  std::vector<char*> argv;  // [vmm, args...], null-terminated; points into the request
  std::vector<char*> envp;  // the request's env, null-terminated
};

// Re-checks that vmm.fd still names the file open_vmm checked (device and inode): the fd
// number sits in the helper's table next to fds the caller chose, so the check is made on
// the fd itself right before it is executed. Then builds the argv and envp.
Result<ExecPlan> prepare_exec(const Vmm& vmm, const protocol::LaunchRequest& request);

// execveat(plan.fd, "", argv, envp, AT_EMPTY_PATH); returns (with errno set) only on failure.
// Async-signal-safe: no allocation.
void exec_prepared(const ExecPlan& plan);

// prepare_exec, then exec_prepared. Returns only on failure.
Status exec_vmm(const Vmm& vmm, const protocol::LaunchRequest& request);

// The helper's exit status for a failure: 127 when the VMM does not exist, 126 when it cannot
// be executed, 125 otherwise.
int exit_code_for(const Status& st);

}  // namespace sbx::exec
