// SPDX-License-Identifier: Apache-2.0
#include "helper/jail.h"

#include <fcntl.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string_view>
#include <utility>
#include <vector>

#include "common/names.h"
#include "helper/mounts.h"
#include "helper/paths.h"

namespace sbx::jail {
namespace {

Status fail(Step step, int err, std::string detail) {
  return Status(step, err, std::move(detail));
}

// The directories made in the jail so far, by their path relative to the root, so each is
// made and opened once however many entries lie beneath it.
class JailDirs {
 public:
  explicit JailDirs(int root) : root_(root) {}

  // Opens (creating each missing directory, mode 0755) `rel`, a relative directory path
  // inside the jail root, never leaving the root's own tmpfs: RESOLVE_NO_XDEV refuses to walk
  // into a bind, so nothing is ever created on a host filesystem. The fd stays owned here.
  Result<int> open(std::string_view rel) {
    if (rel.empty()) return root_;
    for (const auto& [path, fd] : made_) {
      if (path == rel) return fd.get();
    }
    const size_t slash = rel.rfind('/');
    auto parent = open(slash == std::string_view::npos ? std::string_view() : rel.substr(0, slash));
    if (!parent.ok()) return parent.status();
    std::string comp(slash == std::string_view::npos ? rel : rel.substr(slash + 1));
    if (mkdirat(parent.value(), comp.c_str(), 0755) != 0 && errno != EEXIST) {
      return fail(Step::kBuildJail, errno, "mkdir " + std::string(rel) + " in the jail");
    }
    open_how how{};
    how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
    UniqueFd fd(
        static_cast<int>(syscall(SYS_openat2, parent.value(), comp.c_str(), &how, sizeof(how))));
    if (!fd) return fail(Step::kBuildJail, errno, "open " + std::string(rel) + " in the jail");
    made_.emplace_back(std::string(rel), std::move(fd));
    return made_.back().second.get();
  }

 private:
  int root_;
  std::vector<std::pair<std::string, UniqueFd>> made_;
};

// Attaches `clone` (a detached clone of a mount tree, a directory when `is_dir`) at `path`
// inside the jail, on an empty directory or file made for it first, with `attributes` set on
// every mount of the tree.
Status attach_at(JailDirs& dirs, const std::string& path, int clone, bool is_dir,
                 uint64_t attributes) {
  std::string_view parent_rel = path_dirname(path) == "/" ? "" : path_dirname(path).substr(1);
  std::string name(path_basename(path));
  auto parent = dirs.open(parent_rel);
  if (!parent.ok()) return parent.status();
  if (is_dir ? mkdirat(parent.value(), name.c_str(), 0755)
             : mknodat(parent.value(), name.c_str(), S_IFREG | 0600, 0)) {
    return fail(Step::kBuildJail, errno, "make the mountpoint " + path + " in the jail");
  }
  mount_attr attr{};
  attr.attr_set = attributes;
  if (attributes != 0 && syscall(SYS_mount_setattr, clone, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr,
                                 sizeof(attr)) != 0) {
    return fail(Step::kBuildJail, errno, "mount_setattr on the bind of " + path);
  }
  if (move_mount(clone, "", parent.value(), name.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0) {
    return fail(Step::kBuildJail, errno, "move_mount the bind of " + path);
  }
  return {};
}

// Binds `source_fd` (a directory when `is_dir`) at `path` inside the jail: a recursive clone
// of exactly the checked fd, attached as above with `attributes` on every mount of it. So the
// jail shows what the private namespace shows at the path, mounts below it included: a
// non-recursive clone would show the directories those mounts cover, which the kernel lets a
// privileged cloner see.
Status bind_at(JailDirs& dirs, const std::string& path, int source_fd, bool is_dir,
               uint64_t attributes) {
  UniqueFd clone(static_cast<int>(
      syscall(SYS_open_tree, source_fd, "",
              OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE)));
  if (!clone) return fail(Step::kBuildJail, errno, "open_tree (clone) " + path);
  return attach_at(dirs, path, clone.get(), is_dir, attributes);
}

}  // namespace

namespace {

// /dev/null, zero, full, random or urandom: bound into every jail already.
bool is_basic_device(std::string_view path) {
  for (const char* name : kBasicDevices) {
    if (path == std::string("/dev/") + name) return true;
  }
  return false;
}

Status bind_basic_devices(JailDirs& dirs) {
  UniqueFd dev(paths::open_no_symlinks(AT_FDCWD, "/dev", O_PATH | O_DIRECTORY, false));
  if (!dev) return fail(Step::kBuildJail, errno, "open /dev");
  for (const char* name : kBasicDevices) {
    // One call clones the node's mount: the name is one fixed component of the /dev opened
    // above, and a symlink there is not followed (it is then refused: not a char device).
    UniqueFd clone(
        static_cast<int>(syscall(SYS_open_tree, dev.get(), name,
                                 OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_SYMLINK_NOFOLLOW)));
    struct stat st;
    if (!clone || fstat(clone.get(), &st) != 0 || !S_ISCHR(st.st_mode)) {
      return fail(Step::kBuildJail, clone ? ENODEV : errno,
                  std::string("/dev/") + name + " is not a character device");
    }
    if (Status s = attach_at(dirs, std::string("/dev/") + name, clone.get(), false, kDevice);
        !s.ok()) {
      return s;
    }
  }
  return {};
}

// Merged-/usr hosts make /lib, /lib64, /bin ... symlinks into /usr; a VMM's PT_INTERP names
// /lib64/ld-linux-x86-64.so.2. Each such root-owned link of the host whose target a read-only
// entry covers is recreated in the jail, with the same relative target.
Status recreate_usr_links(int root, const std::vector<std::string>& read_only_paths) {
  if (read_only_paths.empty()) return {};
  UniqueFd host_root(open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!host_root) return fail(Step::kBuildJail, errno, "open /");
  for (const char* name : {"bin", "sbin", "lib", "lib32", "lib64", "libx32"}) {
    const std::string covered = "/usr/" + std::string(name);
    std::string_view rest;
    if (std::none_of(read_only_paths.begin(), read_only_paths.end(),
                     [&](const std::string& p) { return path_relative_to(p, covered, &rest); })) {
      continue;
    }
    char target[64];
    ssize_t n = readlinkat(host_root.get(), name, target, sizeof(target) - 1);
    if (n <= 0) continue;  // not a symlink, or absent
    std::string t(target, static_cast<size_t>(n));
    if (t != std::string("usr/") + name) continue;
    if (symlinkat(t.c_str(), root, name) != 0 && errno != EEXIST) {
      return fail(Step::kBuildJail, errno, std::string("symlink /") + name + " in the jail");
    }
  }
  return {};
}

}  // namespace

Status enter(const Entry& sandbox, const std::vector<Entry>& entries,
             const std::vector<std::string>& read_only_paths) {
  // Nested paths would need a mountpoint inside another bind, that is on a host filesystem:
  // refused, with both paths named.
  std::vector<std::string_view> paths{sandbox.path};
  for (const Entry& e : entries) paths.push_back(e.path);
  for (std::string_view a : paths) {
    for (std::string_view b : paths) {
      std::string_view rest;
      if (a.data() != b.data() && path_relative_to(a, b, &rest)) {
        return fail(Step::kBuildJail, EINVAL,
                    std::string(b) +
                        (rest.empty() ? " is given twice" : " lies inside " + std::string(a)) +
                        ": a jail binds each path once");
      }
    }
    if (std::string_view rest; path_relative_to("/proc", a, &rest) ||
                               path_relative_to(a, "/dev", &rest) ||
                               path_relative_to(a, "/proc", &rest)) {
      return fail(Step::kBuildJail, EINVAL,
                  std::string(a) + " overlaps the jail's own /dev or /proc");
    }
  }
  // The new root: a small tmpfs, attached over /tmp of this private mount namespace (any
  // directory would do: the old tree is detached below and the host never sees it).
  auto made = mounts::make_tmpfs(Step::kBuildJail, {{"size", "1m"}, {"mode", "0755"}});
  if (!made.ok()) return made.status();
  UniqueFd root = made.take();
  UniqueFd over(paths::open_no_symlinks(AT_FDCWD, "/tmp", O_PATH | O_DIRECTORY, false));
  if (!over) return fail(Step::kBuildJail, errno, "open /tmp to attach the jail's root");
  if (move_mount(root.get(), "", over.get(), "",
                 MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) != 0) {
    return fail(Step::kBuildJail, errno, "move_mount the jail's root");
  }
  JailDirs dirs(root.get());
  if (Status s = bind_basic_devices(dirs); !s.ok()) return s;
  if (Status s = attach_at(dirs, sandbox.path, sandbox.fd, true, 0); !s.ok()) return s;
  for (const Entry& e : entries) {
    if (is_basic_device(e.path)) continue;
    struct stat st;
    if (fstat(e.fd, &st) != 0) return fail(Step::kBuildJail, errno, "fstat " + e.path);
    if (Status s = bind_at(dirs, e.path, e.fd, S_ISDIR(st.st_mode), e.attributes); !s.ok()) {
      return s;
    }
  }
  // /proc is mounted by the namespace's pid 1 (mount_proc), once in the jail: a procfs shows
  // the PID namespace of the process that mounts it.
  if (mkdirat(root.get(), "proc", 0555) != 0) {
    return fail(Step::kBuildJail, errno, "mkdir /proc in the jail");
  }
  if (Status s = recreate_usr_links(root.get(), read_only_paths); !s.ok()) return s;
  mount_attr ro{};
  ro.attr_set = MOUNT_ATTR_RDONLY;
  if (syscall(SYS_mount_setattr, root.get(), "", AT_EMPTY_PATH, &ro, sizeof(ro)) != 0) {
    return fail(Step::kBuildJail, errno, "make the jail's root read-only");
  }
  // pivot_root(".", "."): the old root ends up stacked under the new one at "/", and the
  // detach takes it away with no directory left to reach it through.
  if (fchdir(root.get()) != 0) return fail(Step::kPivotRoot, errno, "fchdir to the jail's root");
  if (syscall(SYS_pivot_root, ".", ".") != 0) return fail(Step::kPivotRoot, errno, "pivot_root");
  if (umount2(".", MNT_DETACH) != 0) return fail(Step::kPivotRoot, errno, "detach the old root");
  if (chdir("/") != 0) return fail(Step::kPivotRoot, errno, "chdir /");
  return {};
}

}  // namespace sbx::jail
