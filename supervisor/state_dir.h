// SPDX-License-Identifier: Apache-2.0
// The state directory (`--state-dir DIR`): DIR/<id>/ keeps what must outlive the process that
// ran `sbx-supervisor run`: the lock the live supervisor holds, state.json, events.jsonl,
// exit.json and control.sock. `run` writes it (StateDir); `ps`, `events`, `wait` and `rm` read
// it (inspect_sandbox). Every file is reached from a directory fd with no symlink followed: a
// VMM of the caller's uid that can see DIR may plant links there.
#pragma once

#include <sys/types.h>

#include <boost/json.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/unique_fd.h"

namespace sbx::supervisor {

inline constexpr const char* kLockName = "lock";
inline constexpr const char* kStateName = "state.json";
inline constexpr const char* kEventsName = "events.jsonl";
inline constexpr const char* kExitName = "exit.json";
inline constexpr const char* kControlName = "control.sock";
inline constexpr const char* kLogName = "supervisor.log";

// The sandbox's life as the supervisor's loop drives it; `ps` adds `lost`.
enum class SandboxState { kStarting, kRunning, kReady, kStopping, kExited };
const char* state_name(SandboxState state);

// What state.json says.
struct SandboxRecord {
  std::string id;
  pid_t supervisor_pid = 0;
  pid_t vmm_pid = 0;  // 0 until `started`
  pid_t pgid = 0;
  int64_t start_time_ms = 0;  // Unix time of the launch request, in milliseconds
  std::string spec_path;      // as given to `run` ("-": stdin)
  SandboxState state = SandboxState::kStarting;
};

// DIR itself: a directory reached with no symlink, owned by the caller, not group- or
// other-writable. The fd, or why not (naming DIR and the errno).
std::variant<UniqueFd, std::string> open_state_root(const std::string& dir);

// The live supervisor's side of DIR/<id>/.
class StateDir {
 public:
  struct Refusal {
    std::string message;  // names the path and the errno, or the holder's pid
  };
  // Makes DIR/<id>/ (0700) or opens the one there, and takes its lock. Refused when another
  // supervisor holds the lock, or when a previous sandbox's state is still there (`rm` first):
  // an unread exit status is never overwritten.
  static std::variant<StateDir, Refusal> claim(int root_fd, const std::string& root,
                                               const std::string& id);

  StateDir(StateDir&&) = default;
  StateDir& operator=(StateDir&&) = default;

  // After a --detach fork, in the child: the lock taken again, so that the kernel names this
  // process as its holder (/proc/locks, which a command checks the control socket's server
  // against), and the lock file says so too. False (errno set) if another took it between.
  bool take_over_lock();
  // state.json, replaced whole (temp file, then rename).
  void write_state(const SandboxRecord& record);
  // One event line appended to events.jsonl.
  void append_event(const std::string& line);
  // exit.json: the `exited` event, written to a temp file and renamed in, never partial.
  void write_exit(const std::string& line);
  // An fd for supervisor.log (the detached supervisor's stderr), or -1.
  UniqueFd open_log();

  int dir_fd() const { return dir_.get(); }
  const std::string& path() const { return path_; }

 private:
  StateDir(UniqueFd dir, UniqueFd lock, std::string path, std::string id)
      : dir_(std::move(dir)), lock_(std::move(lock)), path_(std::move(path)), id_(std::move(id)) {}
  void record_holder(pid_t pid);
  bool replace_file(const char* name, const std::string& text);
  // The first write that fails is logged (file and errno); the rest are not: a full disk must
  // not flood the log, nor stop the sandbox.
  void failed(const std::string& what);

  UniqueFd dir_, lock_, events_;
  std::string path_, id_;
  bool write_failed_ = false;
};

// What a reader finds in DIR/<id>/.
struct SandboxView {
  std::string id;
  std::optional<SandboxRecord> record;
  bool live = false;                          // the lock is held: a supervisor runs it
  std::optional<boost::json::object> exited;  // exit.json, when whole
  std::string state;  // the record's state while live; `exited`; or `lost` (gone, no exit.json)
};

// The sandbox ids under DIR (directories with a valid id as name), sorted.
std::vector<std::string> list_sandbox_ids(int root_fd);

// Reads DIR/<id>/ (bounded, no symlink followed). An error names what is missing.
std::variant<SandboxView, std::string> inspect_sandbox(int root_fd, const std::string& id);

// The events recorded in events.jsonl, one line each (bounded).
std::variant<std::vector<std::string>, std::string> read_event_lines(int root_fd,
                                                                     const std::string& id);

// Removes DIR/<id>/ of a sandbox that is not live (its lock is taken for the removal). Refused
// for a live one.
std::string remove_sandbox_state(int root_fd, const std::string& id);

// The exit status an `exited` event gives (`exit_status`), or 125 when it has none.
int exit_status_of(const boost::json::object& exited);

}  // namespace sbx::supervisor
