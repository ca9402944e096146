// SPDX-License-Identifier: Apache-2.0
#include "helper/paths.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "common/names.h"

namespace sbx::paths {

int open_no_symlinks(int dirfd, std::string_view path, int flags, bool beneath) {
  // No O_NOFOLLOW here: with O_PATH it would hand back an fd to a trailing symlink instead of
  // failing; RESOLVE_NO_SYMLINKS alone makes a symlink anywhere, trailing included, ELOOP.
  std::string p(path);
  open_how how{};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | (beneath ? RESOLVE_BENEATH : 0);
  return static_cast<int>(syscall(SYS_openat2, dirfd, p.c_str(), &how, sizeof(how)));
}

namespace {

Status check_trusted(int fd, const std::string& what, Step step) {
  struct stat st;
  if (fstat(fd, &st) != 0) return Status(step, errno, "fstat " + what);
  if (st.st_uid != 0) return Status(step, EPERM, what + " is not owned by root");
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    return Status(step, EPERM, what + " is writable by group or other");
  }
  return {};
}

}  // namespace

Result<UniqueFd> open_root_owned(const std::string& path, int flags, Step step) {
  if (std::string why = check_absolute_path(path); !why.empty() || path == "/") {
    return Status(step, EINVAL, path + ": " + (why.empty() ? "is the root directory" : why));
  }
  UniqueFd dir(open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return Status(step, errno, "open /");
  if (Status st = check_trusted(dir.get(), "/", step); !st.ok()) return st;
  size_t pos = 1;
  while (true) {
    size_t next = path.find('/', pos);
    bool last = next == std::string::npos;
    std::string comp = path.substr(pos, last ? std::string::npos : next - pos);
    std::string so_far = path.substr(0, last ? path.size() : next);
    int comp_flags = last ? flags : (O_PATH | O_DIRECTORY);
    UniqueFd fd(open_no_symlinks(dir.get(), comp, comp_flags, true));
    if (!fd) {
      return Status(step, errno, "open " + so_far + (errno == ELOOP ? " (a symlink)" : ""));
    }
    if (Status st = check_trusted(fd.get(), so_far, step); !st.ok()) return st;
    if (last) return fd;
    dir = std::move(fd);
    pos = next + 1;
  }
}

}  // namespace sbx::paths
