// The VMM binary: opened once (O_PATH) before any mount work and checked, then executed from
// that same fd, so the file that was checked is the file that runs.
#pragma once

#include <string>

#include "common/protocol.h"
#include "common/status.h"
#include "common/unique_fd.h"

namespace sbx::exec {

// Opens `path` with no symlinks, every component root-owned and not group/other-writable;
// the file must be regular and executable by the caller.
Result<UniqueFd> open_vmm(const std::string& path);

// execveat(vmm_fd, "", [vmm, args...], env, AT_EMPTY_PATH). Returns only on failure.
Status exec_vmm(int vmm_fd, const protocol::LaunchRequest& request);

}  // namespace sbx::exec
