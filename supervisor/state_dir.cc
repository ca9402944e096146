// SPDX-License-Identifier: Apache-2.0
#include "supervisor/state_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/names.h"
#include "supervisor/clock.h"
#include "supervisor/fd_io.h"
#include "supervisor/logging.h"

namespace sbx::supervisor {
namespace json = boost::json;
namespace {

// Bounds on what a reader takes from a file the VMM may have written (outside a jail it has
// the caller's uid): a state or exit file is a few hundred bytes, events a few KiB.
constexpr size_t kMaxJsonFile = 64 * 1024;
constexpr size_t kMaxEventsFile = 4 * 1024 * 1024;
// `ps` takes the lock shared for an instant to see whether it is held; a `run` that meets that
// instant tries again rather than report a holder that is not there.
constexpr int kLockRetryMs = 200;

std::string errno_text(int err) {
  return std::strerror(err);
}

// The regular file `name` under `dir`, opened with no symlink followed and no FIFO waited on.
UniqueFd open_regular(int dir, const char* name, int flags) {
  UniqueFd fd(openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
  if (!fd) return fd;
  struct stat st;
  if (fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    errno = EINVAL;
    return UniqueFd();
  }
  return fd;
}

// At most `limit` bytes of `name`; nullopt when it is absent, not a regular file or larger.
std::optional<std::string> read_bounded(int dir, const char* name, size_t limit) {
  UniqueFd fd = open_regular(dir, name, O_RDONLY);
  if (!fd) return std::nullopt;
  return read_all(fd.get(), limit);
}

std::optional<json::object> parse_object(const std::string& text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return std::nullopt;
  return v.as_object();
}

int64_t int_field(const json::object& o, const char* key) {
  const json::value* v = o.if_contains(key);
  return v != nullptr && v->is_int64() ? v->as_int64() : 0;
}

std::string string_field(const json::object& o, const char* key) {
  const json::value* v = o.if_contains(key);
  return v != nullptr && v->is_string() ? std::string(v->as_string()) : std::string();
}

std::optional<SandboxState> state_from_name(const std::string& name) {
  for (auto s : {SandboxState::kStarting, SandboxState::kRunning, SandboxState::kReady,
                 SandboxState::kStopping, SandboxState::kExited}) {
    if (name == state_name(s)) return s;
  }
  return std::nullopt;
}

std::optional<SandboxRecord> parse_record(const std::string& text) {
  auto o = parse_object(text);
  if (!o) return std::nullopt;
  SandboxRecord r;
  r.id = string_field(*o, "id");
  r.supervisor_pid = static_cast<pid_t>(int_field(*o, "supervisor_pid"));
  r.vmm_pid = static_cast<pid_t>(int_field(*o, "vmm_pid"));
  r.pgid = static_cast<pid_t>(int_field(*o, "pgid"));
  r.start_time_ms = int_field(*o, "start_time_ms");
  r.spec_path = string_field(*o, "spec_path");
  auto state = state_from_name(string_field(*o, "state"));
  if (!state) return std::nullopt;
  r.state = *state;
  return r;
}

// Whether a supervisor holds `dir`'s lock: a shared lock that cannot be had means it does.
bool lock_held(int dir) {
  UniqueFd lock = open_regular(dir, kLockName, O_RDONLY);
  if (!lock) return false;
  if (flock(lock.get(), LOCK_SH | LOCK_NB) != 0) return errno == EWOULDBLOCK;
  flock(lock.get(), LOCK_UN);
  return false;
}

UniqueFd open_sandbox_dir(int root_fd, const std::string& id) {
  return UniqueFd(openat(root_fd, id.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
}

}  // namespace

const char* state_name(SandboxState state) {
  switch (state) {
    case SandboxState::kStarting:
      return "starting";
    case SandboxState::kRunning:
      return "running";
    case SandboxState::kReady:
      return "ready";
    case SandboxState::kStopping:
      return "stopping";
    case SandboxState::kExited:
      return "exited";
  }
  return "starting";
}

std::variant<UniqueFd, std::string> open_state_root(const std::string& dir) {
  UniqueFd fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return "--state-dir " + dir + ": " + errno_text(errno);
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return "--state-dir " + dir + ": fstat: " + errno_text(errno);
  if (st.st_uid != geteuid()) {
    return "--state-dir " + dir + ": owned by uid " + std::to_string(st.st_uid) +
           ", not by the caller (uid " + std::to_string(geteuid()) + ")";
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", st.st_mode & 07777);
    return "--state-dir " + dir + ": mode " + mode + " lets others write it (chmod go-w " + dir +
           ")";
  }
  return fd;
}

std::variant<StateDir, StateDir::Refusal> StateDir::claim(int root_fd, const std::string& root,
                                                          const std::string& id) {
  const std::string path = root + "/" + id;
  if (mkdirat(root_fd, id.c_str(), 0700) != 0 && errno != EEXIST) {
    return Refusal{"mkdir " + path + ": " + errno_text(errno)};
  }
  UniqueFd dir = open_sandbox_dir(root_fd, id);
  if (!dir) return Refusal{"open " + path + ": " + errno_text(errno)};
  struct stat st;
  if (fstat(dir.get(), &st) != 0) return Refusal{"fstat " + path + ": " + errno_text(errno)};
  if (st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
    return Refusal{path + " is not a 0700 directory of the caller's"};
  }
  UniqueFd lock(openat(dir.get(), kLockName, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!lock) return Refusal{"open " + path + "/" + kLockName + ": " + errno_text(errno)};
  const int64_t give_up = now_ms() + kLockRetryMs;
  while (flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno != EWOULDBLOCK) return Refusal{"flock " + path + "/lock: " + errno_text(errno)};
    if (now_ms() >= give_up) {
      char holder[32] = {};
      ssize_t n = pread(lock.get(), holder, sizeof(holder) - 1, 0);
      std::string pid = n > 0 ? std::string(holder, static_cast<size_t>(n)) : "unknown";
      return Refusal{"sandbox " + id + " is already run by the supervisor with pid " + pid +
                     " (it holds " + path + "/lock)"};
    }
    usleep(5000);
  }
  for (const char* name : {kStateName, kExitName, kEventsName}) {
    if (faccessat(dir.get(), name, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
      return Refusal{path + " holds the state of an earlier sandbox " + id + " (its " + name +
                     "): read it, then `sbx-supervisor rm " + id + "`"};
    }
  }
  StateDir out(std::move(dir), std::move(lock), path, id);
  out.events_.reset(openat(out.dir_.get(), kEventsName,
                           O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!out.events_) out.failed(std::string("open ") + kEventsName);
  out.record_holder(getpid());
  return out;
}

void StateDir::failed(const std::string& what) {
  if (write_failed_) return;
  write_failed_ = true;
  log_error(id_, "state dir " + path_ + ": " + what + ": " + errno_text(errno) +
                     " (the sandbox goes on; later failures there are not logged)");
}

bool StateDir::take_over_lock() {
  // The window between the two calls is harmless: a `run` of the same id that took the lock
  // there finds events.jsonl and refuses, and this one then fails here.
  flock(lock_.get(), LOCK_UN);
  if (flock(lock_.get(), LOCK_EX | LOCK_NB) != 0) return false;
  record_holder(getpid());
  return true;
}

void StateDir::record_holder(pid_t pid) {
  const std::string text = std::to_string(pid);
  if (ftruncate(lock_.get(), 0) != 0 ||
      pwrite(lock_.get(), text.data(), text.size(), 0) != static_cast<ssize_t>(text.size())) {
    failed(std::string("write ") + kLockName);
  }
}

bool StateDir::replace_file(const char* name, const std::string& text) {
  const std::string tmp = std::string(name) + ".tmp";
  unlinkat(dir_.get(), tmp.c_str(), 0);
  // O_EXCL: whatever the VMM may have put at the temp name is never opened through.
  UniqueFd fd(
      openat(dir_.get(), tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd || !write_all(fd.get(), text) ||
      renameat(dir_.get(), tmp.c_str(), dir_.get(), name) != 0) {
    int err = errno;
    unlinkat(dir_.get(), tmp.c_str(), 0);
    errno = err;
    failed(std::string("write ") + name);
    return false;
  }
  return true;
}

void StateDir::write_state(const SandboxRecord& r) {
  json::object o{{"id", r.id},
                 {"supervisor_pid", r.supervisor_pid},
                 {"vmm_pid", r.vmm_pid},
                 {"pgid", r.pgid},
                 {"start_time_ms", r.start_time_ms},
                 {"spec_path", r.spec_path},
                 {"state", state_name(r.state)}};
  replace_file(kStateName, json::serialize(o) + "\n");
}

void StateDir::append_event(const std::string& line) {
  if (!events_) return;
  if (!write_all(events_.get(), line + "\n")) failed(std::string("append to ") + kEventsName);
}

void StateDir::write_exit(const std::string& line) {
  replace_file(kExitName, line + "\n");
}

UniqueFd StateDir::open_log() {
  return UniqueFd(
      openat(dir_.get(), kLogName, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600));
}

std::vector<std::string> list_sandbox_ids(int root_fd) {
  std::vector<std::string> ids;
  int copy = fcntl(root_fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) return ids;
  DIR* d = fdopendir(copy);
  if (d == nullptr) {
    close(copy);
    return ids;
  }
  rewinddir(d);
  while (dirent* e = readdir(d)) {
    if (!check_sandbox_id(e->d_name).empty()) continue;
    if (e->d_type != DT_DIR) {
      struct stat st;
      if (e->d_type != DT_UNKNOWN || fstatat(root_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
          !S_ISDIR(st.st_mode)) {
        continue;
      }
    }
    ids.emplace_back(e->d_name);
  }
  closedir(d);
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::variant<SandboxView, std::string> inspect_sandbox(int root_fd, const std::string& id) {
  if (std::string why = check_sandbox_id(id); !why.empty()) return "sandbox id " + id + ": " + why;
  UniqueFd dir = open_sandbox_dir(root_fd, id);
  if (!dir) return "no sandbox " + id + " in the state dir: " + errno_text(errno);
  SandboxView view;
  view.id = id;
  if (auto text = read_bounded(dir.get(), kStateName, kMaxJsonFile)) {
    view.record = parse_record(*text);
  }
  view.live = lock_held(dir.get());
  // Read after the lock: a supervisor renames exit.json in before it lets the lock go.
  if (auto text = read_bounded(dir.get(), kExitName, kMaxJsonFile)) {
    auto o = parse_object(*text);
    if (o && string_field(*o, "event") == "exited") view.exited = std::move(o);
  }
  if (view.exited) {
    view.state = "exited";
  } else if (view.live) {
    view.state = view.record ? state_name(view.record->state) : "starting";
  } else {
    view.state = "lost";
  }
  return view;
}

std::variant<std::vector<std::string>, std::string> read_event_lines(int root_fd,
                                                                     const std::string& id) {
  UniqueFd dir = open_sandbox_dir(root_fd, id);
  if (!dir) return "no sandbox " + id + " in the state dir: " + errno_text(errno);
  auto text = read_bounded(dir.get(), kEventsName, kMaxEventsFile);
  if (!text) return std::string("cannot read ") + kEventsName + " of " + id;
  std::vector<std::string> lines;
  size_t at = 0;
  while (at < text->size()) {
    size_t end = text->find('\n', at);
    if (end == std::string::npos) break;  // a line being written: not yet an event
    if (end > at) lines.push_back(text->substr(at, end - at));
    at = end + 1;
  }
  return lines;
}

std::string remove_sandbox_state(int root_fd, const std::string& id) {
  if (std::string why = check_sandbox_id(id); !why.empty()) return "sandbox id " + id + ": " + why;
  UniqueFd dir = open_sandbox_dir(root_fd, id);
  if (!dir) return "no sandbox " + id + " in the state dir: " + errno_text(errno);
  UniqueFd lock = open_regular(dir.get(), kLockName, O_RDONLY);
  if (lock && flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return "sandbox " + id + " is live: stop it first (sbx-supervisor stop " + id + ")";
    }
    return "flock " + id + "/lock: " + errno_text(errno);
  }
  std::vector<std::string> names;
  int copy = fcntl(dir.get(), F_DUPFD_CLOEXEC, 0);
  DIR* d = copy >= 0 ? fdopendir(copy) : nullptr;
  if (d == nullptr) {
    if (copy >= 0) close(copy);
    return "read " + id + ": " + errno_text(errno);
  }
  while (dirent* e = readdir(d)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
      names.emplace_back(e->d_name);
    }
  }
  closedir(d);
  // The lock goes last: until then a `run` of the same id finds it and waits on it.
  std::stable_partition(names.begin(), names.end(),
                        [](const std::string& n) { return n != kLockName; });
  for (const auto& name : names) {
    if (unlinkat(dir.get(), name.c_str(), 0) != 0 && errno != ENOENT) {
      return "remove " + id + "/" + name + ": " + errno_text(errno);
    }
  }
  if (unlinkat(root_fd, id.c_str(), AT_REMOVEDIR) != 0) {
    return "remove " + id + ": " + errno_text(errno);
  }
  return {};
}

int exit_status_of(const json::object& exited) {
  const json::value* v = exited.if_contains("exit_status");
  if (v == nullptr || !v->is_int64() || v->as_int64() < 0 || v->as_int64() > 255) return 125;
  return static_cast<int>(v->as_int64());
}

}  // namespace sbx::supervisor
