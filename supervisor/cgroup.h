// SPDX-License-Identifier: Apache-2.0
// One sandbox's cgroup v2, <parent>/<id>: checked and created with its limits before anything
// is spawned, the helper placed in it before LAUNCH, everything in it killed on stop, its usage
// read, and the directory removed. cgroupfs access is plain file permission, so this is the
// supervisor's work, not the helper's. cgroup v1 is not supported.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/unique_fd.h"
#include "supervisor/spec.h"

namespace sbx::supervisor {

// A failure with the errno and a detail that names the path (and the controller or value).
struct CgroupError {
  int err = 0;
  std::string detail;
};

// The checks a sandboxes' parent must pass, the same for `run` and `doctor`: it opens, is on
// cgroup2 (when `require_cgroup2`), is writable by this user (delegated), and holds no process
// of its own. Errors start "cgroup.parent: " and name the path; ENOENT or EACCES (open),
// EINVAL (not cgroup2), EACCES (not delegated), EBUSY (processes). On success `*opened` (when
// not null) is the parent's fd.
std::optional<CgroupError> check_cgroup_parent(const std::string& parent, bool require_cgroup2,
                                               UniqueFd* opened);

// One limit as the kernel takes it: `value` written to `file`, which `controller` provides.
struct CgroupLimitFile {
  std::string controller;
  std::string file;
  std::string value;
};

// The spec's limits as kernel files, in the order they are written.
std::vector<CgroupLimitFile> cgroup_limit_files(const CgroupSpec& spec);

// The controllers those limits need, each once, in the order of cgroup_limit_files.
std::vector<std::string> cgroup_controllers_needed(const CgroupSpec& spec);

// Enables `controllers` in `<parent>/cgroup.subtree_control` (one write, "+a +b") unless all are
// already on. `parent_fd` is the parent directory; `parent_path` is only for messages.
std::optional<CgroupError> enable_cgroup_controllers(int parent_fd, const std::string& parent_path,
                                                     const std::vector<std::string>& controllers);

// Writes each limit into its existing file under `cgroup_fd` (never creates one).
std::optional<CgroupError> write_cgroup_limits(int cgroup_fd, const std::string& cgroup_path,
                                               const CgroupSpec& spec);

// What the kernel counted for the cgroup; nullopt where it does not provide the figure (the
// controller is not enabled, or the kernel predates the file).
struct CgroupUsage {
  std::optional<uint64_t> cpu_usec;           // cpu.stat usage_usec
  std::optional<uint64_t> memory_peak_bytes;  // memory.peak
  std::optional<uint64_t> oom_kills;          // memory.events oom_kill
  std::optional<uint64_t> pids_peak;          // pids.peak
};

// Reads the usage files under `cgroup_fd`.
CgroupUsage read_cgroup_usage(int cgroup_fd);

enum class CgroupKillMode {
  kAuto,   // cgroup.kill where the kernel has it (>= 5.14)
  kProcs,  // SIGKILL to every pid in cgroup.procs until it is empty: the older kernels' path
};

class SandboxCgroup {
 public:
  struct Options {
    // Refuse a parent that is not on a cgroup2 mount. Off only in unit tests that lay out a
    // plain directory like cgroupfs.
    bool require_cgroup2 = true;
    CgroupKillMode kill_mode = CgroupKillMode::kAuto;
  };

  // Checks `spec.parent` (on cgroup2, writable by this user, no processes of its own, every
  // controller the limits need available), enables those controllers, creates <parent>/<id>
  // and writes the limits. On any error nothing is left: the new directory is removed (a
  // controller enabled in the parent stays on; a sibling sandbox may be using it).
  static std::variant<SandboxCgroup, CgroupError> create(const CgroupSpec& spec,
                                                         const std::string& id, Options options);

  SandboxCgroup(SandboxCgroup&&) = default;
  SandboxCgroup& operator=(SandboxCgroup&&) = default;

  const std::string& path() const { return path_; }

  // Moves `pid` (the helper, before it is sent LAUNCH) into the cgroup.
  std::optional<CgroupError> enter(pid_t pid);

  // SIGKILL to everything in the cgroup: `cgroup.kill`, or with kProcs (or without the file)
  // every pid in cgroup.procs, repeated until it is empty or `timeout_ms` passes. Returns
  // which of the two it used ("cgroup.kill" or "each pid in cgroup.procs"), for the log.
  const char* kill_all(int timeout_ms);

  // Waits, bounded, for `populated 0` in cgroup.events; whether it came.
  bool wait_unpopulated(int timeout_ms);

  CgroupUsage usage() const { return read_cgroup_usage(dir_.get()); }
  // The cgroup directory's fd, for clone3(CLONE_INTO_CGROUP).
  int dir_fd() const { return dir_.get(); }

  // rmdir, retried while the kernel still reports the cgroup busy, bounded.
  std::optional<CgroupError> remove(int timeout_ms);

 private:
  SandboxCgroup(std::string path, std::string name, UniqueFd parent, UniqueFd dir, Options options)
      : path_(std::move(path)),
        name_(std::move(name)),
        parent_(std::move(parent)),
        dir_(std::move(dir)),
        options_(options) {}

  // One pass of the cgroup.procs path: SIGKILL to each listed pid still in this cgroup.
  // Returns how many pids were listed.
  size_t kill_listed_pids();

  std::string path_;  // <parent>/<id>
  std::string name_;  // <id>
  UniqueFd parent_, dir_;
  Options options_;
};

// The cgroup v2 path of `pid` as its /proc/PID/cgroup names it ("0::/a/b" gives "/a/b"), or
// "" when there is none.
std::string proc_cgroup_of(pid_t pid);

}  // namespace sbx::supervisor
