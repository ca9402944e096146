// SPDX-License-Identifier: Apache-2.0
#include "helper/mounts.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "helper/fds.h"
#include "helper/paths.h"

namespace sbx::mounts {

Status make_mounts_private(bool slave) {
  if (mount(nullptr, "/", nullptr, MS_REC | (slave ? MS_SLAVE : MS_PRIVATE), nullptr) != 0) {
    return Status(Step::kMakeMountsPrivate, errno, slave ? "make / rslave" : "make / rprivate");
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
