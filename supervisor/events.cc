// SPDX-License-Identifier: Apache-2.0
#include "supervisor/events.h"

#include <unistd.h>

#include <boost/json.hpp>
#include <cerrno>

#include "supervisor/fd_io.h"

namespace sbx::supervisor {
namespace json = boost::json;

std::string outcome_name(OutcomeKind kind) {
  switch (kind) {
    case OutcomeKind::kExited:
      return "exited";
    case OutcomeKind::kSignaled:
      return "signaled";
    case OutcomeKind::kKilledAfterTimeout:
      return "killed_after_timeout";
    case OutcomeKind::kSetupFailed:
      return "setup_failed";
    case OutcomeKind::kLost:
      return "lost";
  }
  return "lost";
}

int Outcome::exit_status() const {
  switch (kind) {
    case OutcomeKind::kExited:
      return code;
    case OutcomeKind::kSignaled:
    case OutcomeKind::kKilledAfterTimeout:
      return 128 + signal;
    case OutcomeKind::kSetupFailed:
      return helper_exit == 126 || helper_exit == 127 ? helper_exit : 125;
    case OutcomeKind::kLost:
      return 125;
  }
  return 125;
}

void EventSink::close_fd() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

void EventSink::write_line(const std::string& event, const std::string& line) {
  // A reader that went away changes nothing: the sandbox still runs its course.
  if (fd_ >= 0) write_all(fd_, line + "\n");
  for (const auto& output : outputs_) output(event, line);
}

void EventSink::started(const std::string& id, pid_t pid, pid_t pgid, int64_t t_ms,
                        uint32_t landlock_abi) {
  write_line("started", json::serialize(json::object{{"event", "started"},
                                                     {"id", id},
                                                     {"pid", pid},
                                                     {"pgid", pgid},
                                                     {"t_ms", t_ms},
                                                     {"landlock_abi", landlock_abi}}));
}

void EventSink::ready(const std::string& id, int64_t t_ms) {
  write_line("ready",
             json::serialize(json::object{{"event", "ready"}, {"id", id}, {"t_ms", t_ms}}));
}

void EventSink::stopping(const std::string& id, const std::string& why, const std::string& step,
                         int64_t t_ms) {
  write_line("stopping",
             json::serialize(json::object{
                 {"event", "stopping"}, {"id", id}, {"why", why}, {"step", step}, {"t_ms", t_ms}}));
}

namespace {

json::value figure(const std::optional<uint64_t>& v) {
  return v ? json::value(*v) : json::value(nullptr);
}

}  // namespace

void EventSink::exited(const std::string& id, const Outcome& o, int64_t t_ms,
                       const CgroupReport* cgroup) {
  json::object ev{{"event", "exited"}, {"id", id}, {"outcome", outcome_name(o.kind)}};
  switch (o.kind) {
    case OutcomeKind::kExited:
      ev["code"] = o.code;
      break;
    case OutcomeKind::kSignaled:
    case OutcomeKind::kKilledAfterTimeout:
      ev["signal"] = o.signal;
      break;
    case OutcomeKind::kSetupFailed:
      ev["step"] = o.step;
      ev["errno"] = o.err;
      ev["detail"] = o.detail;
      break;
    case OutcomeKind::kLost:
      ev["detail"] = o.detail;
      break;
  }
  ev["exit_status"] = o.exit_status();
  if (cgroup != nullptr) {
    ev["usage"] = json::object{{"cpu_usec", figure(cgroup->usage.cpu_usec)},
                               {"memory_peak_bytes", figure(cgroup->usage.memory_peak_bytes)},
                               {"oom_kills", figure(cgroup->usage.oom_kills)},
                               {"pids_peak", figure(cgroup->usage.pids_peak)}};
    if (cgroup->left) {
      ev["cgroup_left"] = json::object{
          {"path", cgroup->path}, {"errno", cgroup->left->err}, {"detail", cgroup->left->detail}};
    }
  }
  ev["t_ms"] = t_ms;
  write_line("exited", json::serialize(ev));
}

}  // namespace sbx::supervisor
