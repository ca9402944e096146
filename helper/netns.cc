// SPDX-License-Identifier: Apache-2.0
#include "helper/netns.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "helper/paths.h"

namespace sbx::netns {

Result<UniqueFd> open_named(const std::string& name) {
  UniqueFd dir(paths::open_no_symlinks(AT_FDCWD, "/run/netns", O_PATH | O_DIRECTORY, false));
  if (!dir) return Status(Step::kJoinNetns, errno, "open /run/netns");
  UniqueFd fd(paths::open_no_symlinks(dir.get(), name, O_RDONLY, true));
  if (!fd) return Status(Step::kJoinNetns, errno, "open /run/netns/" + name);
  struct statfs sfs;
  if (fstatfs(fd.get(), &sfs) != 0) return Status(Step::kJoinNetns, errno, "fstatfs netns");
  if (static_cast<unsigned long>(sfs.f_type) != NSFS_MAGIC) {
    return Status(Step::kJoinNetns, EINVAL, "/run/netns/" + name + " is not a namespace file");
  }
  return fd;
}

Status join(int netns_fd) {
  if (setns(netns_fd, CLONE_NEWNET) != 0) return Status(Step::kJoinNetns, errno, "setns");
  return {};
}

Status remount_sys() {
  unsigned long flags = MS_NOSUID | MS_NODEV | MS_NOEXEC;
  struct statvfs sv;
  if (statvfs("/sys", &sv) == 0 && (sv.f_flag & ST_RDONLY)) flags |= MS_RDONLY;
  // A missing /sys mount is fine: there is then nothing stale to hide.
  if (umount2("/sys", MNT_DETACH | UMOUNT_NOFOLLOW) != 0 && errno != EINVAL && errno != ENOENT) {
    return Status(Step::kRemountSys, errno, "umount /sys");
  }
  if (mount("sysfs", "/sys", "sysfs", flags, nullptr) != 0) {
    return Status(Step::kRemountSys, errno, "mount sysfs on /sys");
  }
  return {};
}

Status bind_etc_files(const std::string& name) {
  std::string dir_path = "/etc/netns/" + name;
  struct stat st;
  if (lstat(dir_path.c_str(), &st) != 0 && errno == ENOENT) return {};
  auto dir = paths::open_root_owned(dir_path, O_RDONLY | O_DIRECTORY, Step::kBindEtcNetns);
  if (!dir.ok()) return dir.status();
  DIR* d = fdopendir(dir.value().release());
  if (d == nullptr) return Status(Step::kBindEtcNetns, errno, "opendir " + dir_path);
  Status result;
  while (dirent* e = readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    std::string src = dir_path + "/" + e->d_name;
    std::string dst = std::string("/etc/") + e->d_name;
    if (lstat(dst.c_str(), &st) != 0) continue;  // as `ip netns exec`: only existing files
    if (mount(src.c_str(), dst.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      result = Status(Step::kBindEtcNetns, errno, "bind " + src + " on " + dst);
      break;
    }
  }
  closedir(d);
  return result;
}

}  // namespace sbx::netns
