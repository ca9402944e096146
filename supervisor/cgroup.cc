// SPDX-License-Identifier: Apache-2.0
#include "supervisor/cgroup.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <sstream>

#include "supervisor/clock.h"
#include "supervisor/fd_io.h"

namespace sbx::supervisor {
namespace {

std::string errno_text(int err) {
  return std::strerror(err);
}

// The whole content of `name` under `dir_fd`, or nullopt with errno set.
std::optional<std::string> read_at(int dir_fd, const char* name) {
  UniqueFd fd(openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return std::nullopt;
  return read_all(fd.get(), SIZE_MAX);
}

// Writes `value` to the existing file `name` under `dir_fd` in one write(2): cgroupfs takes
// each write as one command and reports its refusal as the write's error. 0 or an errno.
int write_at(int dir_fd, const char* name, const std::string& value) {
  UniqueFd fd(openat(dir_fd, name, O_WRONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return errno;
  ssize_t n;
  do {
    n = write(fd.get(), value.data(), value.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0) return errno;
  return static_cast<size_t>(n) == value.size() ? 0 : EIO;
}

// The value of `key` in a flat-keyed file ("key value" lines: cpu.stat, memory.events).
std::optional<uint64_t> keyed_value(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string k;
  uint64_t v;
  while (in >> k >> v) {
    if (k == key) return v;
  }
  return std::nullopt;
}

std::optional<uint64_t> single_value(int dir_fd, const char* name) {
  auto text = read_at(dir_fd, name);
  if (!text) return std::nullopt;
  std::istringstream in(*text);
  uint64_t v;
  if (in >> v) return v;
  return std::nullopt;
}

std::vector<std::string> words(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> out;
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

std::vector<pid_t> pids_in(const std::string& procs) {
  std::istringstream in(procs);
  std::vector<pid_t> out;
  pid_t pid;
  while (in >> pid) out.push_back(pid);
  return out;
}

CgroupError error(int err, std::string detail) {
  return CgroupError{err, std::move(detail) + ": " + errno_text(err)};
}

}  // namespace

std::string proc_cgroup_of(pid_t pid) {
  auto text = read_at(AT_FDCWD, ("/proc/" + std::to_string(pid) + "/cgroup").c_str());
  if (!text) return {};
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("0::")) return line.substr(3);
  }
  return {};
}

std::vector<CgroupLimitFile> cgroup_limit_files(const CgroupSpec& spec) {
  std::vector<CgroupLimitFile> out;
  auto add = [&](const char* controller, const char* file, const std::optional<std::string>& v) {
    if (v) out.push_back({controller, file, *v});
  };
  auto add_u32 = [&](const char* controller, const char* file, const std::optional<uint32_t>& v,
                     const char* prefix) {
    if (v) out.push_back({controller, file, prefix + std::to_string(*v)});
  };
  add("memory", "memory.max", spec.memory_max);
  add("memory", "memory.high", spec.memory_high);
  add("memory", "memory.swap.max", spec.memory_swap_max);
  add("cpu", "cpu.max", spec.cpu_max);
  add_u32("cpu", "cpu.weight", spec.cpu_weight, "");
  add("pids", "pids.max", spec.pids_max);
  add("cpuset", "cpuset.cpus", spec.cpuset_cpus);
  add("cpuset", "cpuset.mems", spec.cpuset_mems);
  // The first line of io.weight is the default weight, set by "default N".
  add_u32("io", "io.weight", spec.io_weight, "default ");
  return out;
}

std::vector<std::string> cgroup_controllers_needed(const CgroupSpec& spec) {
  std::vector<std::string> out;
  for (const auto& f : cgroup_limit_files(spec)) {
    if (!contains(out, f.controller)) out.push_back(f.controller);
  }
  return out;
}

std::optional<CgroupError> enable_cgroup_controllers(int parent_fd, const std::string& parent_path,
                                                     const std::vector<std::string>& controllers) {
  if (controllers.empty()) return std::nullopt;
  const std::string file = parent_path + "/cgroup.subtree_control";
  auto enabled = read_at(parent_fd, "cgroup.subtree_control");
  if (!enabled) return error(errno, "read " + file);
  std::vector<std::string> on = words(*enabled);
  std::string command;
  for (const auto& c : controllers) {
    if (contains(on, c)) continue;
    command += (command.empty() ? "+" : " +") + c;
  }
  if (command.empty()) return std::nullopt;
  if (int err = write_at(parent_fd, "cgroup.subtree_control", command); err != 0) {
    return error(err, "write '" + command + "' to " + file);
  }
  return std::nullopt;
}

std::optional<CgroupError> write_cgroup_limits(int cgroup_fd, const std::string& cgroup_path,
                                               const CgroupSpec& spec) {
  for (const auto& f : cgroup_limit_files(spec)) {
    if (int err = write_at(cgroup_fd, f.file.c_str(), f.value); err != 0) {
      return error(err, "write '" + f.value + "' to " + cgroup_path + "/" + f.file);
    }
  }
  return std::nullopt;
}

CgroupUsage read_cgroup_usage(int cgroup_fd) {
  CgroupUsage u;
  if (auto stat = read_at(cgroup_fd, "cpu.stat")) u.cpu_usec = keyed_value(*stat, "usage_usec");
  u.memory_peak_bytes = single_value(cgroup_fd, "memory.peak");
  if (auto events = read_at(cgroup_fd, "memory.events")) {
    u.oom_kills = keyed_value(*events, "oom_kill");
  }
  u.pids_peak = single_value(cgroup_fd, "pids.peak");
  return u;
}

std::optional<CgroupError> check_cgroup_parent(const std::string& parent, bool require_cgroup2,
                                               UniqueFd* opened) {
  UniqueFd parent_fd(open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!parent_fd) return error(errno, "cgroup.parent: open " + parent);
  struct statfs fs;
  if (fstatfs(parent_fd.get(), &fs) != 0) return error(errno, "cgroup.parent: statfs " + parent);
  if (require_cgroup2 && fs.f_type != CGROUP2_SUPER_MAGIC) {
    std::ostringstream why;
    why << "cgroup.parent: " << parent << " is not on a cgroup2 mount (filesystem type 0x"
        << std::hex << fs.f_type << "; cgroup v1 is not supported)";
    return CgroupError{EINVAL, why.str()};
  }
  // Delegation: the caller may create the sandbox's directory here (and, when limits need
  // controllers, enable them). Checked with the effective ids, as the kernel will.
  if (faccessat(AT_FDCWD, parent.c_str(), W_OK | X_OK, AT_EACCESS) != 0) {
    return error(
        errno, "cgroup.parent: " + parent + " is not writable by this user (not delegated to it)");
  }
  // The no-internal-process rule: a cgroup with processes of its own cannot give its children
  // controllers, and its processes would compete with the sandboxes outside any limit.
  auto procs = read_at(parent_fd.get(), "cgroup.procs");
  if (!procs) return error(errno, "cgroup.parent: read " + parent + "/cgroup.procs");
  if (std::vector<pid_t> held = pids_in(*procs); !held.empty()) {
    return CgroupError{EBUSY, "cgroup.parent: " + parent + " holds processes of its own (pid " +
                                  std::to_string(held.front()) +
                                  "): a parent must hold none; move them to a leaf cgroup"};
  }
  if (opened != nullptr) *opened = std::move(parent_fd);
  return std::nullopt;
}

std::variant<SandboxCgroup, CgroupError> SandboxCgroup::create(const CgroupSpec& spec,
                                                               const std::string& id,
                                                               Options options) {
  const std::string& parent = spec.parent;
  if (parent.empty()) {
    return CgroupError{EINVAL, "cgroup.parent: none given (in the spec or --cgroup-parent)"};
  }
  UniqueFd parent_fd;
  if (auto e = check_cgroup_parent(parent, options.require_cgroup2, &parent_fd)) return *e;
  const std::vector<std::string> needed = cgroup_controllers_needed(spec);
  if (!needed.empty()) {
    auto available_text = read_at(parent_fd.get(), "cgroup.controllers");
    if (!available_text) {
      return error(errno, "cgroup.parent: read " + parent + "/cgroup.controllers");
    }
    std::vector<std::string> available = words(*available_text);
    for (const auto& f : cgroup_limit_files(spec)) {
      if (contains(available, f.controller)) continue;
      std::string have = *available_text;
      while (!have.empty() && have.back() == '\n') have.pop_back();
      std::string field = f.file;  // memory.swap.max is the spec's memory_swap_max
      std::replace(field.begin(), field.end(), '.', '_');
      return CgroupError{
          EOPNOTSUPP,
          "cgroup." + field + ": the " + f.controller + " controller is not available in " +
              parent + "/cgroup.controllers (available: " + (have.empty() ? "none" : have) + ")"};
    }
    if (auto e = enable_cgroup_controllers(parent_fd.get(), parent, needed)) return *e;
  }
  const std::string path = parent + "/" + id;
  if (mkdirat(parent_fd.get(), id.c_str(), 0755) != 0) return error(errno, "mkdir " + path);
  UniqueFd dir(openat(parent_fd.get(), id.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) {
    CgroupError e = error(errno, "open " + path);
    unlinkat(parent_fd.get(), id.c_str(), AT_REMOVEDIR);
    return e;
  }
  if (auto e = write_cgroup_limits(dir.get(), path, spec)) {
    dir.reset();
    unlinkat(parent_fd.get(), id.c_str(), AT_REMOVEDIR);
    return *e;
  }
  return SandboxCgroup(path, id, std::move(parent_fd), std::move(dir), options);
}

std::optional<CgroupError> SandboxCgroup::enter(pid_t pid) {
  if (int err = write_at(dir_.get(), "cgroup.procs", std::to_string(pid)); err != 0) {
    std::string detail = "write pid " + std::to_string(pid) + " to " + path_ + "/cgroup.procs";
    // The kernel checks the cgroup.procs of the common ancestor of the source and target.
    if (err == EACCES || err == EPERM) {
      detail +=
          " (the supervisor's own cgroup and the parent must share an ancestor delegated"
          " to this user: run the supervisor in a leaf of the delegated subtree)";
    }
    return error(err, detail);
  }
  return std::nullopt;
}

size_t SandboxCgroup::kill_listed_pids() {
  auto procs = read_at(dir_.get(), "cgroup.procs");
  if (!procs) return 0;
  std::vector<pid_t> pids = pids_in(*procs);
  // Pin every listed process, then read the list again: a pid still listed after its pidfd
  // was opened names the pinned process, in this cgroup (one that exited and whose pid was
  // reused before the pin is not listed again unless the new process is in this cgroup too).
  std::vector<std::pair<pid_t, UniqueFd>> pinned;
  for (pid_t pid : pids) {
    UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
    if (pidfd) pinned.emplace_back(pid, std::move(pidfd));
  }
  auto again = read_at(dir_.get(), "cgroup.procs");
  if (!again) return 0;
  const std::vector<pid_t> listed = pids_in(*again);
  for (const auto& [pid, pidfd] : pinned) {
    if (std::find(listed.begin(), listed.end(), pid) == listed.end()) continue;
    syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0);
  }
  return listed.size();
}

const char* SandboxCgroup::kill_all(int timeout_ms) {
  if (options_.kill_mode == CgroupKillMode::kAuto &&
      write_at(dir_.get(), "cgroup.kill", "1") == 0) {
    return "cgroup.kill";
  }
  // Frozen, nothing in the cgroup can fork between the read and the kills; SIGKILL still
  // reaches frozen tasks. cgroup.freeze exists from 5.2 (the floor is 5.10).
  const bool frozen = write_at(dir_.get(), "cgroup.freeze", "1") == 0;
  const int64_t deadline = now_ms() + timeout_ms;
  while (kill_listed_pids() > 0 && now_ms() < deadline) usleep(1000);
  if (frozen) write_at(dir_.get(), "cgroup.freeze", "0");
  return "each pid in cgroup.procs";
}

bool SandboxCgroup::wait_unpopulated(int timeout_ms) {
  const int64_t deadline = now_ms() + timeout_ms;
  while (true) {
    auto events = read_at(dir_.get(), "cgroup.events");
    if (events && keyed_value(*events, "populated") == 0u) return true;
    if (now_ms() >= deadline) return false;
    usleep(1000);
  }
}

std::optional<CgroupError> SandboxCgroup::remove(int timeout_ms) {
  const int64_t deadline = now_ms() + timeout_ms;
  while (unlinkat(parent_.get(), name_.c_str(), AT_REMOVEDIR) != 0) {
    const int err = errno;
    if (err == ENOENT) return std::nullopt;
    if (err != EBUSY || now_ms() >= deadline) return error(err, "rmdir " + path_);
    usleep(1000);
  }
  return std::nullopt;
}

}  // namespace sbx::supervisor
