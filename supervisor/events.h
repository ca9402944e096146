// SPDX-License-Identifier: Apache-2.0
// Events: one JSON object per line on the events fd, the supervisor's contract with the tooling
// that runs it. `t_ms` counts from the launch request.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "supervisor/cgroup.h"

namespace sbx::supervisor {

enum class OutcomeKind { kExited, kSignaled, kKilledAfterTimeout, kSetupFailed, kLost };

// How a sandbox ended: exactly one per sandbox; the first one set is kept.
struct Outcome {
  OutcomeKind kind = OutcomeKind::kLost;
  int code = 0;        // kExited
  int signal = 0;      // kSignaled, kKilledAfterTimeout
  std::string step;    // kSetupFailed
  int err = 0;         // kSetupFailed
  std::string detail;  // kSetupFailed, kLost
  int helper_exit = 125;

  // The supervisor's exit status: the VMM's code, 128+signal, 125/126/127 before exec.
  int exit_status() const;
};

std::string outcome_name(OutcomeKind kind);

// What the `exited` event says about the sandbox's cgroup, when it had one: `usage`, and
// `cgroup_left` when the directory could not be removed (never left silently).
struct CgroupReport {
  std::string path;
  CgroupUsage usage;
  std::optional<CgroupError> left;
};

// The one place events are written: each line goes to the events fd, then to every output
// added (the state dir's events.jsonl and exit.json, the control socket's followers, systemd).
class EventSink {
 public:
  explicit EventSink(int fd) : fd_(fd) {}
  // `event` is the event's name ("started", ...), `line` its JSON without the newline.
  using Output = std::function<void(const std::string& event, const std::string& line)>;
  void add_output(Output output) { outputs_.push_back(std::move(output)); }
  // Closes the events fd and writes no more there (a --detach caller's pipe, once `started` or
  // the failure is out); the other outputs go on.
  void close_fd();
  // `landlock_abi`: the ABI of the Landlock layer the VMM runs under (0: none).
  void started(const std::string& id, pid_t pid, pid_t pgid, int64_t t_ms, uint32_t landlock_abi);
  void ready(const std::string& id, int64_t t_ms);
  void stopping(const std::string& id, const std::string& why, const std::string& step,
                int64_t t_ms);
  void exited(const std::string& id, const Outcome& outcome, int64_t t_ms,
              const CgroupReport* cgroup = nullptr);

 private:
  void write_line(const std::string& event, const std::string& line);
  int fd_;
  std::vector<Output> outputs_;
};

}  // namespace sbx::supervisor
