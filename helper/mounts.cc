// SPDX-License-Identifier: Apache-2.0
#include "helper/mounts.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string_view>

#include "common/names.h"
#include "helper/fds.h"
#include "helper/paths.h"

namespace sbx::mounts {

Status make_mounts_private(bool slave) {
  if (mount(nullptr, "/", nullptr, MS_REC | (slave ? MS_SLAVE : MS_PRIVATE), nullptr) != 0) {
    return Status(Step::kMakeMountsPrivate, errno, slave ? "make / rslave" : "make / rprivate");
  }
  return {};
}

namespace {

// The mount points of the cgroup, cgroup2 and mqueue mounts in /proc/self/mountinfo, in its
// order (a mount after its parent); with `only_below`, those at or below one of its paths. A line
// reads "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS", the
// mount point with \ooo escapes.
Result<std::vector<std::string>> cgroup_and_mqueue_mountpoints(
    const std::vector<std::string>* only_below) {
  UniqueFd fd(open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC));
  if (!fd) return Status(Step::kMakeMountsPrivate, errno, "open /proc/self/mountinfo");
  std::string text;
  char buf[8192];
  for (;;) {
    ssize_t n = read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status(Step::kMakeMountsPrivate, errno, "read /proc/self/mountinfo");
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  std::vector<std::string> found;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + start, end - start);
    start = end + 1;
    size_t sep = line.find(" - ");
    if (sep == std::string_view::npos) continue;
    std::string_view after = line.substr(sep + 3);
    std::string_view fstype = after.substr(0, after.find(' '));
    if (fstype != "cgroup" && fstype != "cgroup2" && fstype != "mqueue") continue;
    // The fifth field.
    size_t from = 0;
    for (int field = 0; field < 4 && from != std::string_view::npos; ++field) {
      from = line.find(' ', from);
      if (from != std::string_view::npos) ++from;
    }
    if (from == std::string_view::npos || from >= sep) continue;
    std::string_view escaped = line.substr(from, line.find(' ', from) - from);
    std::string path;
    for (size_t i = 0; i < escaped.size(); ++i) {
      if (escaped[i] == '\\' && i + 3 < escaped.size()) {
        path += static_cast<char>(((escaped[i + 1] - '0') << 6) | ((escaped[i + 2] - '0') << 3) |
                                  (escaped[i + 3] - '0'));
        i += 3;
      } else {
        path += escaped[i];
      }
    }
    std::string_view below;
    if (only_below != nullptr &&
        std::none_of(only_below->begin(), only_below->end(),
                     [&](const std::string& dir) { return path_relative_to(dir, path, &below); })) {
      continue;
    }
    found.push_back(std::move(path));
  }
  return found;
}

}  // namespace

namespace {

// Whether `path` is the root of a mount: 1, 0, or -1 when the kernel cannot say
// (STATX_ATTR_MOUNT_ROOT is Linux 5.8).
int is_mount_root(const char* path) {
  struct statx stx {};
  if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT, 0, &stx) != 0) {
    return errno == ENOENT ? 0 : -1;
  }
  if (!(stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT)) return -1;
  return (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) ? 1 : 0;
}

}  // namespace

Status detach_cgroup_and_mqueue_mounts(const std::vector<std::string>* only_below) {
  // Reading the mount table costs about 70 us here (the open, and a path per mount): it is
  // read once, and again only where a cheaper check cannot vouch for the result.
  constexpr const char* kCgroupRoot = "/sys/fs/cgroup";
  auto found = cgroup_and_mqueue_mountpoints(only_below);
  if (!found.ok()) return found.status();
  bool below_root = false;
  std::vector<std::string> elsewhere;
  for (auto& path : found.value()) {
    std::string_view rest;
    if (only_below == nullptr && path_relative_to(kCgroupRoot, path, &rest)) {
      below_root = true;
    } else {
      elsewhere.push_back(std::move(path));
    }
  }
  bool read_again = !elsewhere.empty();
  if (below_root) {
    // The whole tree in one detach. Until nothing is mounted at /sys/fs/cgroup any more: a
    // mount stacked under the one detached would show its own tree again. Nothing can be
    // mounted below /sys/fs/cgroup but through a mount there: sysfs keeps that directory empty.
    for (int i = 0;; ++i) {
      if (umount2(kCgroupRoot, MNT_DETACH | UMOUNT_NOFOLLOW) != 0) {
        return Status(Step::kMakeMountsPrivate, errno, "detach /sys/fs/cgroup");
      }
      const int mounted = is_mount_root(kCgroupRoot);
      if (mounted == 0) break;
      if (mounted < 0) {
        read_again = true;
        break;
      }
      if (i == 8) {
        return Status(Step::kMakeMountsPrivate, EBUSY, "/sys/fs/cgroup is still a mount point");
      }
    }
  }
  // Children after their parents in the table: detach from the end. A child detached with
  // its parent already is gone (EINVAL: no longer a mount point).
  for (auto it = elsewhere.rbegin(); it != elsewhere.rend(); ++it) {
    if (umount2(it->c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0 && errno != EINVAL &&
        errno != ENOENT) {
      return Status(Step::kMakeMountsPrivate, errno, "detach " + *it);
    }
  }
  if (!read_again) return {};
  auto left = cgroup_and_mqueue_mountpoints(only_below);
  if (!left.ok()) return left.status();
  if (!left.value().empty()) {
    return Status(Step::kMakeMountsPrivate, EBUSY,
                  left.value().front() + " is still mounted after its detach");
  }
  return {};
}

Status mount_proc(bool pids_only) {
  UniqueFd fs(fsopen("proc", FSOPEN_CLOEXEC));
  if (!fs) return Status(Step::kMountProc, errno, "fsopen proc");
  // Older kernels do not know subset=pid: the procfs then shows its usual files too.
  if (pids_only) (void)fsconfig(fs.get(), FSCONFIG_SET_STRING, "subset", "pid", 0);
  if (fsconfig(fs.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0) {
    return Status(Step::kMountProc, errno, "create procfs");
  }
  UniqueFd mnt(
      fsmount(fs.get(), FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC));
  if (!mnt) return Status(Step::kMountProc, errno, "fsmount procfs");
  if (move_mount(mnt.get(), "", AT_FDCWD, "/proc", MOVE_MOUNT_F_EMPTY_PATH) != 0) {
    return Status(Step::kMountProc, errno, "move_mount procfs onto /proc");
  }
  return {};
}

Result<SandboxDir> SandboxDir::make(const std::string& root, const std::string& name, uid_t uid) {
  SandboxDir dir;
  dir.name_ = name;
  dir.root_fd_.reset(paths::open_no_symlinks(AT_FDCWD, root, O_PATH | O_DIRECTORY, false));
  if (!dir.root_fd_) return Status(Step::kMakeSandboxDir, errno, "open sandbox root " + root);
  if (mkdirat(dir.root_fd_.get(), name.c_str(), 0700) == 0) {
    dir.created_ = true;
  } else if (errno != EEXIST) {
    return Status(Step::kMakeSandboxDir, errno, "mkdir " + root + "/" + name);
  }
  dir.dir_fd_.reset(paths::open_no_symlinks(dir.root_fd_.get(), name, O_PATH | O_DIRECTORY, true));
  if (!dir.dir_fd_) {
    int err = errno;
    return Status(Step::kMakeSandboxDir, err,
                  "open " + root + "/" + name + (err == ELOOP ? " (a symlink)" : ""));
  }
  struct stat st;
  if (fstat(dir.dir_fd_.get(), &st) != 0) return Status(Step::kMakeSandboxDir, errno, "fstat");
  if (st.st_uid != uid) {
    return Status(Step::kMakeSandboxDir, EPERM, root + "/" + name + " is not owned by the caller");
  }
  return dir;
}

SandboxDir::~SandboxDir() {
  if (!created_ || !root_fd_) return;
  // Still privileged and in the private namespace: the tmpfs (if any) is ours to detach. The
  // magic link of the mount's own fd names exactly that mount, whatever the path now holds.
  if (mount_fd_) {
    std::string self = "/proc/self/fd/" + std::to_string(mount_fd_.get());
    umount2(self.c_str(), MNT_DETACH);
    mount_fd_.reset();
  }
  dir_fd_.reset();
  unlinkat(root_fd_.get(), name_.c_str(), AT_REMOVEDIR);
}

Result<UniqueFd> make_tmpfs(Step step,
                            std::initializer_list<std::pair<const char*, std::string>> options) {
  UniqueFd fs(fsopen("tmpfs", FSOPEN_CLOEXEC));
  if (!fs) return Status(step, errno, "fsopen tmpfs");
  for (const auto& [key, value] : options) {
    if (fsconfig(fs.get(), FSCONFIG_SET_STRING, key, value.c_str(), 0) != 0) {
      return Status(step, errno, std::string("fsconfig tmpfs ") + key + "=" + value);
    }
  }
  if (fsconfig(fs.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0) {
    return Status(step, errno, "create tmpfs");
  }
  UniqueFd mnt(
      fsmount(fs.get(), FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC));
  if (!mnt) return Status(step, errno, "fsmount tmpfs");
  return mnt;
}

Status SandboxDir::mount_tmpfs(uint64_t size_mb, uid_t uid, gid_t gid) {
  auto made = make_tmpfs(Step::kMountTmpfs, {{"size", std::to_string(size_mb) + "m"},
                                             {"mode", "0700"},
                                             {"uid", std::to_string(uid)},
                                             {"gid", std::to_string(gid)}});
  if (!made.ok()) return made.status();
  UniqueFd mnt = made.take();
  if (dir_fd_ && move_mount(mnt.get(), "", dir_fd_.get(), "",
                            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) != 0) {
    return Status(Step::kMountTmpfs, errno, "move_mount tmpfs onto the sandbox dir");
  }
  mount_fd_ = std::move(mnt);
  return {};
}

Status SandboxDir::lift_fds() {
  for (UniqueFd* fd : {&root_fd_, &dir_fd_, &mount_fd_}) {
    if (!*fd) continue;
    if (Status st = fds::lift_above_targets(*fd); !st.ok()) return st;
  }
  return {};
}

Status SandboxDir::create_links(const std::vector<protocol::Link>& links) {
  for (const auto& link : links) {
    if (symlinkat(link.target.c_str(), mount_fd_.get(), link.name.c_str()) != 0) {
      return Status(Step::kCreateLinks, errno, "symlink " + link.name + " -> " + link.target);
    }
  }
  return {};
}

}  // namespace sbx::mounts
