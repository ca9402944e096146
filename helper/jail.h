// SPDX-License-Identifier: Apache-2.0
// The jail: a VMM root that holds only what the request gave it, at the same absolute paths as
// on the host. A fresh tmpfs (nosuid, nodev, noexec) receives a bind of each entry, cloned from
// the fd that was opened and checked (open_tree + move_mount, never a path looked up again),
// /dev with the basic nodes and the requested devices (binds: no mknod), a fresh /proc; it is
// made read-only, then entered the runc way: pivot_root(".", ".") and umount2(".", MNT_DETACH),
// so no path leads back to the old root.
#pragma once

#include <sys/mount.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/unique_fd.h"

namespace sbx::jail {

struct Entry {
  std::string path;     // absolute; where the bind appears inside the jail (as on the host)
  int fd;               // O_PATH fd of what is bound there (a directory or a file)
  uint64_t attributes;  // MOUNT_ATTR_* set on the bind (RDONLY, NOSUID, NODEV, NOEXEC)
};

// Bind attributes per kind of entry.
inline constexpr uint64_t kReadOnly = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
inline constexpr uint64_t kReadWrite = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
inline constexpr uint64_t kImageReadOnly = kReadOnly | MOUNT_ATTR_NOEXEC;
// Device nodes are neither executed nor set-id: their binds keep the source mount's flags.
inline constexpr uint64_t kDevice = 0;

// The basic device nodes every VMM may use, bound from the host's /dev into every jail (and
// given to an unjailed VMM's Landlock layer).
inline constexpr const char* kBasicDevices[] = {"null", "zero", "full", "random", "urandom"};

// Builds the jail from the sandbox dir (`sandbox.fd`: its detached tmpfs, attached itself at
// `sandbox.path`) and `entries` (bound from clones of their fds; no path may lie inside
// another: refused, step build_jail, EINVAL) plus /dev/{null,zero,full,random,urandom} (an
// entry naming one of them is that node, bound once) and an empty /proc; recreates the host's
// top-level merged-/usr links (/lib -> usr/lib and the like) whose targets a read-only entry
// covers, so a dynamically linked VMM finds its loader; makes the root read-only and pivots
// into it. `read_only_paths` are the entries given read-only (for those links). Afterwards
// `sandbox.fd` is the sandbox dir inside the jail. Preconditions: in a private mount
// namespace (propagation private or slave), CAP_SYS_ADMIN held, single-threaded.
Status enter(const Entry& sandbox, const std::vector<Entry>& entries,
             const std::vector<std::string>& read_only_paths);

}  // namespace sbx::jail
