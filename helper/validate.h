// SPDX-License-Identifier: Apache-2.0
// Checks a decoded launch request against the policy and the caller's identity, before the
// helper touches any namespace or mount. Nothing here changes state.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "common/protocol.h"
#include "common/status.h"
#include "common/unique_fd.h"
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
// regular files; with `files`, left to open_files, which opens them), passed fd count, and
// uid 0 unless the policy allows it.
Result<SandboxPlace> check_request(const protocol::LaunchRequest& request,
                                   const policy::Policy& policy, const Caller& caller,
                                   size_t received_fds);

// One `files` entry (or image) as the request names it and as it was opened and checked.
struct OpenedPath {
  std::string path;
  UniqueFd fd;  // O_PATH
};

// The request's `files`, each opened (O_PATH, no symlinks) and checked, in request order, so
// the rules and binds made from them later name exactly what was checked here.
struct OpenedFiles {
  std::vector<OpenedPath> devices;     // character devices beneath /dev that the policy lists
  std::vector<OpenedPath> read_only;   // in or beneath a policy read_only entry, root-owned
  std::vector<OpenedPath> read_write;  // caller-owned dirs directly under a sandbox root
  // Checked like a read_write entry; empty when it is one of them (opened once, there).
  std::optional<OpenedPath> api_socket_dir;
  std::vector<OpenedPath> images_ro;  // link targets other than rootfs.ext4
  std::vector<OpenedPath> images_rw;  // the rootfs.ext4 link's target
};

// Opens and checks everything the request's `files` names (nothing when it has none). Refusals
// are at validate_request and name the entry: not in the policy (EPERM), not a character
// device (ENODEV), outside /dev or not a direct child of a sandbox root (EPERM), a sandbox
// root itself (EPERM), a symlink on the way (ELOOP), not root-owned or group/other-writable
// (EPERM), not owned by the caller (EPERM), not a directory (ENOTDIR). Call after check_request.
Result<OpenedFiles> open_files(const protocol::LaunchRequest& request, const policy::Policy& policy,
                               const Caller& caller);

}  // namespace sbx::validate
