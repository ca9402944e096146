// SPDX-License-Identifier: Apache-2.0
// The helper's mount work, all inside its private mount namespace: propagation, procfs for a
// new PID namespace, the caller's sandbox dir with a size-capped tmpfs on it, and the links.
#pragma once

#include <sys/types.h>

#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "common/protocol.h"
#include "common/status.h"
#include "common/unique_fd.h"

namespace sbx::mounts {

// Makes "/" recursively private (or slave), so nothing mounted here reaches the host.
Status make_mounts_private(bool slave);

// Detaches, in this (private) mount namespace, every cgroup, cgroup2 and mqueue mount: the
// VMM has the caller's uid, which owns its delegated cgroups (their cgroup.kill, cgroup.procs
// and limits) and can open the host IPC namespace's message queues through an mqueue mount.
// /sys/fs/cgroup goes in one detach (one RCU grace period for the whole tree), anything
// elsewhere one by one; a mount still there afterwards (one stacked under another) is
// detached too, or the launch fails.
// With `only_below`, only the mounts at or below one of those directories (a jail's entries:
// the rest of the tree is detached on the way into the jail, and the binds are recursive).
// Must run after make_mounts_private: a detach must not propagate to the host.
Status detach_cgroup_and_mqueue_mounts(const std::vector<std::string>* only_below = nullptr);

// Mounts a fresh procfs of the calling process's PID namespace on /proc (nosuid, nodev,
// noexec); `pids_only` (a jail's): subset=pid where the kernel has it. Called by the
// namespace's pid 1: a procfs shows the PID namespace of the process that mounts it.
Status mount_proc(bool pids_only);

// A new tmpfs with `options` (fsconfig key=value), detached, nosuid, nodev and noexec; its
// mount fd. Failures are at `step`.
Result<UniqueFd> make_tmpfs(Step step,
                            std::initializer_list<std::pair<const char*, std::string>> options);

// The sandbox dir: a direct child of a sandbox root, reached with no symlink anywhere.
class SandboxDir {
 public:
  // Opens `root` (no symlinks) and creates or reuses `root/name`. An existing entry must be a
  // directory owned by `uid`. Runs with the caller's fsuid, so a new dir is the caller's.
  static Result<SandboxDir> make(const std::string& root, const std::string& name, uid_t uid);

  // A jail's sandbox dir: nothing on the host. Its tmpfs stays detached, and the jail attaches
  // that very mount at the sandbox dir's path inside it (jail::enter); no process outside
  // the jail could see anything at the host path anyway.
  static SandboxDir detached() { return SandboxDir(); }

  SandboxDir(SandboxDir&&) = default;
  SandboxDir& operator=(SandboxDir&&) = default;
  // Runs only when the launch fails (a successful exec never returns): detaches the tmpfs
  // and removes the dir if this launch created it. Past the capability drop both fail
  // quietly; the dir is then the caller's to remove (docs/protocol.md).
  ~SandboxDir();

  // Mounts a tmpfs (nosuid, nodev, noexec, mode 0700, uid/gid, size cap) on the dir through its fd,
  // so a path swap cannot move the mount elsewhere (detached(): leaves it detached). Keeps the
  // mount's fd.
  Status mount_tmpfs(uint64_t size_mb, uid_t uid, gid_t gid);

  // symlinkat(target, tmpfs, name) for each link.
  Status create_links(const std::vector<protocol::Link>& links);

  int mount_fd() const { return mount_fd_.get(); }

  // Moves the fds this object holds above every passed-fd target number (fds::
  // lift_above_targets), so its cleanup can never act on an fd the caller placed.
  Status lift_fds();

 private:
  SandboxDir() = default;
  UniqueFd root_fd_;
  UniqueFd dir_fd_;
  UniqueFd mount_fd_;
  std::string name_;
  bool created_ = false;
};

}  // namespace sbx::mounts
