// SPDX-License-Identifier: Apache-2.0
// Checks a decoded launch request against the policy and the caller's identity, before the
// helper touches any namespace or mount. Nothing here changes state.
#pragma once

#include <sys/types.h>

#include <string>

#include "common/protocol.h"
#include "common/status.h"
#include "helper/policy.h"

namespace sbx::validate {

struct Caller {
  uid_t uid;
  gid_t gid;
};

// Where the sandbox dir goes: `root` is the policy's sandbox root, `name` the one component.
struct SandboxPlace {
  std::string root;
  std::string name;
};

// Every lexical and policy rule: id, VMM allowlist, env names, sandbox dir placement, netns
// name and glob, link names, link targets (opened beneath an image root with no symlinks,
// regular files), passed fd count, and uid 0 unless the policy allows it.
Result<SandboxPlace> check_request(const protocol::LaunchRequest& request,
                                   const policy::Policy& policy, const Caller& caller,
                                   size_t received_fds);

}  // namespace sbx::validate
