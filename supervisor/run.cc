// SPDX-License-Identifier: Apache-2.0
#include "supervisor/run.h"

#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "supervisor/clock.h"
#include "supervisor/events.h"
#include "supervisor/helper_launch.h"
#include "supervisor/logging.h"
#include "supervisor/stop_ladder.h"
#include "supervisor/vmm_api.h"

#ifndef PIDFD_SIGNAL_PROCESS_GROUP
#define PIDFD_SIGNAL_PROCESS_GROUP (1UL << 2)
#endif

namespace sbx::supervisor {
namespace {

constexpr int kReadyPollMs = 10;
constexpr int kHelperReplyTimeoutMs = 30000;
constexpr int kOrphanReapMs = 1000;
// Bounds of the cgroup teardown: killing what is listed in cgroup.procs (the path without
// cgroup.kill), waiting for `populated 0`, and retrying rmdir while the kernel says busy.
constexpr int kCgroupKillMs = 1000;
constexpr int kCgroupEmptyMs = 2000;
constexpr int kCgroupRemoveMs = 500;

// Signals for one tracked VMM: its process group, and for a PID namespace its init.
class GroupSignaller {
 public:
  GroupSignaller(pid_t pgid, int pidfd, GroupSignalMode mode)
      : pgid_(pgid), pidfd_(pidfd), mode_(mode) {}

  // Never kill(-1), never a pgid <= 1.
  void signal_group(int sig) {
    if (pgid_ <= 1) return;
    if (mode_ == GroupSignalMode::kAuto &&
        syscall(SYS_pidfd_send_signal, pidfd_, sig, nullptr, PIDFD_SIGNAL_PROCESS_GROUP) == 0) {
      return;
    }
    // Older kernels (EINVAL), or the leader already exited while group members remain.
    kill(-pgid_, sig);
  }
  void signal_leader(int sig) { syscall(SYS_pidfd_send_signal, pidfd_, sig, nullptr, 0); }

 private:
  pid_t pgid_;
  int pidfd_;
  GroupSignalMode mode_;
};

// The supervisor's unreaped children, from /proc/self/task/*/children.
std::vector<pid_t> own_children() {
  std::vector<pid_t> out;
  DIR* tasks = opendir("/proc/self/task");
  if (tasks == nullptr) return out;
  while (dirent* t = readdir(tasks)) {
    if (t->d_name[0] == '.') continue;
    std::ifstream in(std::string("/proc/self/task/") + t->d_name + "/children");
    pid_t pid;
    while (in >> pid) out.push_back(pid);
  }
  closedir(tasks);
  return out;
}

// Once the VMM is reaped, every child the supervisor still has is something the VMM left
// behind and the kernel reparented here (the supervisor is a subreaper), including a process
// that escaped the group with setsid(): kill and reap them all, bounded. Killing a child
// hands its own children to the supervisor, so this repeats until none is left.
void kill_and_reap_leftovers() {
  int64_t deadline = now_ms() + kOrphanReapMs;
  while (true) {
    int status;
    while (waitpid(-1, &status, WNOHANG) > 0) {
    }
    std::vector<pid_t> children = own_children();
    if (children.empty()) return;
    // Unreaped children: their pids cannot have been reused.
    for (pid_t child : children) kill(child, SIGKILL);
    if (now_ms() >= deadline) return;
    usleep(2000);
  }
}

Outcome outcome_from(const siginfo_t& info, bool killed_by_ladder) {
  Outcome o;
  if (info.si_code == CLD_EXITED) {
    o.kind = OutcomeKind::kExited;
    o.code = info.si_status;
  } else {
    o.signal = info.si_status;
    o.kind = killed_by_ladder && info.si_status == SIGKILL ? OutcomeKind::kKilledAfterTimeout
                                                           : OutcomeKind::kSignaled;
  }
  return o;
}

// The same from a waitpid() status (the VMM's own, reported by a PID-namespace init).
Outcome outcome_from_status(int status, bool killed_by_ladder) {
  siginfo_t info{};
  if (WIFEXITED(status)) {
    info.si_code = CLD_EXITED;
    info.si_status = WEXITSTATUS(status);
  } else {
    info.si_code = CLD_KILLED;
    info.si_status = WTERMSIG(status);
  }
  return outcome_from(info, killed_by_ladder);
}

struct Cleanup {
  std::string sandbox_dir;
  bool remove_sandbox_dir = false;
  std::string api_socket;
  bool remove_api_socket = false;

  void run() const {
    if (remove_sandbox_dir) rmdir(sandbox_dir.c_str());  // empty: the tmpfs died with the VMM
    struct stat st;
    if (remove_api_socket && lstat(api_socket.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
      unlink(api_socket.c_str());
    }
  }
};

// The end of a sandbox's cgroup, once the VMM is reaped (or given up on): everything still in
// it is killed (a setsid() escapee included), then its usage is read and it is removed; what
// cannot be removed is reported, never left silently.
CgroupReport finish_cgroup(SandboxCgroup& cgroup, const std::string& id) {
  CgroupReport report;
  report.path = cgroup.path();
  const char* how = cgroup.kill_all(kCgroupKillMs);
  log_info(id, "killed what was left in " + cgroup.path() + " with " + how);
  if (!cgroup.wait_unpopulated(kCgroupEmptyMs)) {
    log_warning(id, cgroup.path() + " still populated " + std::to_string(kCgroupEmptyMs) +
                        " ms after the kill");
  }
  kill_and_reap_leftovers();  // the killed processes that were ours to reap
  report.usage = cgroup.usage();
  report.left = cgroup.remove(kCgroupRemoveMs);
  if (report.left) log_error(id, "cgroup left behind: " + report.left->detail);
  return report;
}

const char* signal_word(int sig) {
  return sig == SIGINT ? "SIGINT" : "SIGTERM";
}

}  // namespace

int run_sandbox(const Spec& spec, const RunOptions& options) {
  EventWriter events(options.events_fd);
  signal(SIGPIPE, SIG_IGN);
  // The VMM of a PID-namespace launch and whatever the VMM orphans become ours to reap.
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
    log_error(spec.id, std::string("PR_SET_CHILD_SUBREAPER: ") + std::strerror(errno));
    Outcome o{OutcomeKind::kSetupFailed, 0, 0, "spawn_helper", errno, "PR_SET_CHILD_SUBREAPER"};
    events.exited(spec.id, o, 0);
    return o.exit_status();
  }
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigprocmask(SIG_BLOCK, &stop_signals, nullptr);  // the helper resets its mask at entry
  UniqueFd sigfd(signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK));

  struct stat st;
  Cleanup cleanup{spec.sandbox_dir, lstat(spec.sandbox_dir.c_str(), &st) != 0,
                  spec.api_socket.value_or(""),
                  spec.api_socket && lstat(spec.api_socket->c_str(), &st) != 0};

  const int64_t t0 = now_ms();
  auto t = [&] { return now_ms() - t0; };
  // The cgroup comes first: a parent or a limit it refuses stops the launch before anything
  // is spawned.
  std::optional<SandboxCgroup> cgroup;
  std::optional<CgroupReport> cgroup_report;
  BeforeLaunch enter_cgroup;
  bool helper_moved = false;
  if (spec.cgroup) {
    auto made = SandboxCgroup::create(*spec.cgroup, spec.id, {true, options.cgroup_kill_mode});
    if (auto* e = std::get_if<CgroupError>(&made)) {
      Outcome o{OutcomeKind::kSetupFailed, 0, 0, "create_cgroup", e->err, e->detail};
      log_error(spec.id, "setup failed at create_cgroup: " + e->detail);
      events.exited(spec.id, o, t());
      return o.exit_status();
    }
    cgroup.emplace(std::move(std::get<SandboxCgroup>(made)));
    log_info(spec.id, "cgroup " + cgroup->path());
    // The helper waits for its request: placed now, the VMM and all it forks start inside.
    enter_cgroup = [&](pid_t helper_pid) -> std::optional<SetupFailure> {
      if (auto e = cgroup->enter(helper_pid)) {
        return SetupFailure{"enter_cgroup", e->err, e->detail, 125};
      }
      log_info(spec.id, "helper moved into " + cgroup->path());
      helper_moved = true;
      return std::nullopt;
    };
  }
  log_info(spec.id, "launching " + spec.binary + " through " + options.helper_path);
  Launched launched =
      launch_helper(options.helper_path, launch_request(spec), spec.stdio,
                    options.events_fd == STDOUT_FILENO, kHelperReplyTimeoutMs, enter_cgroup,
                    cgroup && options.cgroup_spawn_into ? cgroup->dir_fd() : -1);
  if (launched.failure) {
    const SetupFailure& f = *launched.failure;
    Outcome o{OutcomeKind::kSetupFailed, 0, 0, f.step, f.err, f.detail, f.helper_exit};
    log_error(spec.id, "setup failed at " + f.step + ": " + f.detail + ": " + std::strerror(f.err));
    // With a cgroup, finish_cgroup kills through it first, then reaps what was ours.
    if (cgroup) {
      cgroup_report = finish_cgroup(*cgroup, spec.id);
    } else {
      kill_and_reap_leftovers();
    }
    cleanup.run();
    events.exited(spec.id, o, t(), cgroup_report ? &*cgroup_report : nullptr);
    return o.exit_status();
  }
  if (cgroup && !helper_moved) log_info(spec.id, "helper spawned into " + cgroup->path());
  const pid_t pid = launched.vmm_pid;
  events.started(spec.id, launched.reported_pid, pid, t(), launched.landlock_abi);
  log_info(spec.id, "VMM running as pid " + std::to_string(launched.reported_pid) +
                        (launched.reported_pid != pid
                             ? " under the PID-namespace init " + std::to_string(pid)
                             : std::string()));
  GroupSignaller signaller(pid, launched.pidfd.get(), options.signal_mode);

  bool ready = !spec.api_socket.has_value();
  if (ready) events.ready(spec.id, t());
  std::optional<StopLadder> ladder;
  std::string why;
  Outcome outcome;
  auto start_ladder = [&](const std::string& reason) {
    why = reason;
    bool graceful = spec.kind != VmmKind::kGeneric && spec.graceful_stop != GracefulStop::kNone;
    ladder.emplace(now_ms(), spec.stop_timeout_ms, graceful);
    log_info(spec.id, "stopping: " + reason);
  };

  while (true) {
    int timeout = -1;
    if (!ready && !ladder) timeout = kReadyPollMs;
    if (ladder) {
      int64_t w = ladder->wait_ms(now_ms());
      if (w >= 0 && (timeout < 0 || w < timeout)) timeout = static_cast<int>(w);
    }
    pollfd fds[2] = {{launched.pidfd.get(), POLLIN, 0}, {sigfd.get(), POLLIN, 0}};
    int n = poll(fds, 2, timeout);
    if (n < 0 && errno != EINTR) {
      outcome = Outcome{OutcomeKind::kLost, 0, 0, "", errno, "poll failed"};
      break;
    }
    if (fds[0].revents & POLLIN) {
      siginfo_t info{};
      // Peek first: the zombie leader keeps the group id alive while the rest is killed.
      if (waitid(P_PIDFD, launched.pidfd.get(), &info, WEXITED | WNOWAIT) == 0) {
        signaller.signal_group(SIGKILL);
        waitid(P_PIDFD, launched.pidfd.get(), &info, WEXITED);
        outcome = outcome_from(info, ladder && ladder->killed());
        // A PID-namespace init reports the VMM's own status before it exits; without it (the
        // init was killed), the init's status stands.
        if (launched.control) {
          if (auto status = read_vmm_exit(launched.control.get(), 100)) {
            outcome = outcome_from_status(*status, ladder && ladder->killed());
          }
        }
      } else {
        outcome = Outcome{OutcomeKind::kLost, 0, 0, "", errno, "waitid on the VMM failed"};
      }
      break;
    }
    if (fds[1].revents & POLLIN) {
      signalfd_siginfo si;
      while (read(sigfd.get(), &si, sizeof(si)) == sizeof(si)) {
        if (!ladder) start_ladder(signal_word(static_cast<int>(si.ssi_signo)));
      }
    }
    if (!ready && !ladder) {
      std::string not_yet;
      if (api_socket_accepts(*spec.api_socket, pid, kReadyPollMs, &not_yet)) {
        ready = true;
        events.ready(spec.id, t());
        log_info(spec.id, "ready after " + std::to_string(t()) + " ms");
      } else if (t() >= spec.ready_timeout_ms) {
        log_warning(spec.id, "not ready: " + not_yet);
        start_ladder("not_ready");
      }
    }
    if (!ladder) continue;
    bool gave_up = false;
    while (auto action = ladder->due(now_ms())) {
      switch (*action) {
        case StopAction::kGracefulRequest: {
          events.stopping(spec.id, why, "graceful_request", t());
          // Bounded by the time left before SIGTERM is due: never past the ladder's budget.
          int limit = static_cast<int>(std::max<int64_t>(1, ladder->wait_ms(now_ms())));
          ApiResult r = send_graceful_stop(spec, pid, limit);
          if (r.refused) {
            log_warning(spec.id, "graceful request not sent: " + r.detail + "; SIGTERM now");
            ladder->skip_to_terminate();
          } else {
            log_info(spec.id, std::string("graceful request ") +
                                  (r.ok ? "accepted: " : "failed: ") + r.detail);
          }
          break;
        }
        case StopAction::kTerminate:
          events.stopping(spec.id, why, "sigterm", t());
          signaller.signal_group(SIGTERM);
          signaller.signal_group(SIGCONT);
          break;
        case StopAction::kKill:
          events.stopping(spec.id, why, "sigkill", t());
          log_warning(spec.id, "stop budget spent: SIGKILL to the process group");
          signaller.signal_group(SIGKILL);
          signaller.signal_leader(SIGKILL);  // the PID-namespace init takes its namespace along
          if (cgroup) cgroup->kill_all(0);   // and whatever left the group or the namespace
          break;
        case StopAction::kGiveUp:
          gave_up = true;
          break;
      }
    }
    if (gave_up) {
      outcome = Outcome{OutcomeKind::kLost,
                        0,
                        0,
                        "",
                        0,
                        "not reaped 1000 ms after SIGKILL (uninterruptible sleep?)"};
      log_error(spec.id, outcome.detail);
      break;
    }
  }
  if (cgroup) {
    cgroup_report = finish_cgroup(*cgroup, spec.id);
  } else {
    kill_and_reap_leftovers();
  }
  if (outcome.kind != OutcomeKind::kLost) cleanup.run();
  events.exited(spec.id, outcome, t(), cgroup_report ? &*cgroup_report : nullptr);
  log_info(spec.id, "outcome " + outcome_name(outcome.kind) + ", exit status " +
                        std::to_string(outcome.exit_status()));
  return outcome.exit_status();
}

}  // namespace sbx::supervisor
