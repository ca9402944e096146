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
#include "supervisor/control.h"
#include "supervisor/events.h"
#include "supervisor/helper_launch.h"
#include "supervisor/logging.h"
#include "supervisor/notify.h"
#include "supervisor/state_dir.h"
#include "supervisor/stop_ladder.h"
#include "supervisor/vmm_api.h"

#ifndef PIDFD_SIGNAL_PROCESS_GROUP
#define PIDFD_SIGNAL_PROCESS_GROUP (1UL << 2)
#endif

namespace sbx::supervisor {
namespace json = boost::json;
namespace {

constexpr int kReadyPollMs = 10;
constexpr int kHelperReplyTimeoutMs = 30000;
constexpr int kOrphanReapMs = 1000;
// Bounds of the cgroup teardown: killing what is listed in cgroup.procs (the path without
// cgroup.kill), waiting for `populated 0`, and retrying rmdir while the kernel says busy.
constexpr int kCgroupKillMs = 1000;
constexpr int kCgroupEmptyMs = 2000;
constexpr int kCgroupRemoveMs = 500;
// What the control socket has queued for its readers goes out within this, at the end.
constexpr int kControlFlushMs = 500;

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

  void run(const std::string& id) const {
    // Empty: the tmpfs died with the VMM. What cannot be removed is said, never left silently.
    if (remove_sandbox_dir && rmdir(sandbox_dir.c_str()) != 0 && errno != ENOENT) {
      log_warning(id,
                  "sandbox dir " + sandbox_dir + " left behind: rmdir: " + std::strerror(errno));
    }
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

// One sandbox's life as an explicit state machine: starting, running, ready, stopping,
// exited. Signals, the control socket, the readiness check and the stop budget all drive it
// through the same few methods, and what `ps` and the control socket report is `state_`, the
// state the loop acts on.
class Supervision : public ControlServer::Handler {
 public:
  Supervision(const Spec& spec, const RunOptions& options)
      : spec_(spec),
        options_(options),
        events_(options.events_fd),
        notifier_(SystemdNotifier::from_environment()) {}

  int run();

  json::object state() override {
    return json::object{{"id", spec_.id},
                        {"state", state_name(state_)},
                        {"supervisor_pid", getpid()},
                        {"vmm_pid", record_.vmm_pid},
                        {"pgid", record_.pgid},
                        {"start_time_ms", record_.start_time_ms}};
  }

  std::string stop(std::optional<uint32_t> timeout_ms) override {
    if (!ladder_) start_ladder("stop_request", timeout_ms.value_or(spec_.stop_timeout_ms));
    return {};
  }

 private:
  int64_t t() const { return now_ms() - t0_; }
  void set_state(SandboxState s, const std::string& status);
  std::optional<Outcome> open_outputs();
  int finish(Outcome outcome);
  void start_ladder(const std::string& reason, uint32_t budget_ms);
  void check_ready();
  // Runs what the ladder has due; false once it gives up on reaping the VMM.
  bool advance_ladder();
  Outcome reap_vmm();

  const Spec& spec_;
  const RunOptions& options_;
  EventSink events_;
  SystemdNotifier notifier_;
  std::optional<ControlServer> control_;
  SandboxRecord record_;
  SandboxState state_ = SandboxState::kStarting;
  int64_t t0_ = now_ms();
  std::optional<SandboxCgroup> cgroup_;
  Launched launched_;
  std::optional<GroupSignaller> signaller_;
  std::optional<StopLadder> ladder_;
  std::string why_;
  Cleanup cleanup_;
};

void Supervision::set_state(SandboxState s, const std::string& status) {
  state_ = s;
  record_.state = s;
  if (options_.state_dir != nullptr) options_.state_dir->write_state(record_);
  notifier_.send("STATUS=" + status);
}

// The outputs beside the events fd: the state dir's files and the control socket. A control
// socket that cannot be made is a setup failure: a sandbox in a state dir must be reachable.
std::optional<Outcome> Supervision::open_outputs() {
  StateDir* dir = options_.state_dir;
  if (dir == nullptr) return std::nullopt;
  events_.add_output([dir](const std::string& event, const std::string& line) {
    dir->append_event(line);
    if (event == "exited") dir->write_exit(line);
  });
  auto made = ControlServer::listen_in(dir->dir_fd(), kControlName, spec_.id);
  if (auto* e = std::get_if<std::string>(&made)) {
    return Outcome{OutcomeKind::kSetupFailed, 0,     0,
                   "control_socket",          errno, dir->path() + "/" + kControlName + ": " + *e};
  }
  control_.emplace(std::move(std::get<ControlServer>(made)));
  control_->set_rules(PeerRules{geteuid(), 0, {}});
  events_.add_output([this](const std::string& event, const std::string& line) {
    control_->publish(line, event == "exited");
  });
  return std::nullopt;
}

void Supervision::start_ladder(const std::string& reason, uint32_t budget_ms) {
  why_ = reason;
  bool graceful = spec_.kind != VmmKind::kGeneric && spec_.graceful_stop != GracefulStop::kNone;
  ladder_.emplace(now_ms(), budget_ms, graceful);
  log_info(spec_.id, "stopping: " + reason);
  notifier_.send("STOPPING=1");
  set_state(SandboxState::kStopping, "stopping: " + reason);
}

void Supervision::check_ready() {
  std::string not_yet;
  if (api_socket_accepts(*spec_.api_socket, launched_.vmm_pid, kReadyPollMs, &not_yet)) {
    events_.ready(spec_.id, t());
    log_info(spec_.id, "ready after " + std::to_string(t()) + " ms");
    set_state(SandboxState::kReady, "ready");
    notifier_.send("READY=1\nMAINPID=" + std::to_string(getpid()));
  } else if (t() >= spec_.ready_timeout_ms) {
    log_warning(spec_.id, "not ready: " + not_yet);
    start_ladder("not_ready", spec_.stop_timeout_ms);
  }
}

bool Supervision::advance_ladder() {
  while (auto action = ladder_->due(now_ms())) {
    switch (*action) {
      case StopAction::kGracefulRequest: {
        events_.stopping(spec_.id, why_, "graceful_request", t());
        // Bounded by the time left before SIGTERM is due: never past the ladder's budget.
        int limit = static_cast<int>(std::max<int64_t>(1, ladder_->wait_ms(now_ms())));
        ApiResult r = send_graceful_stop(spec_, launched_.vmm_pid, limit);
        if (r.refused) {
          log_warning(spec_.id, "graceful request not sent: " + r.detail + "; SIGTERM now");
          ladder_->skip_to_terminate();
        } else {
          log_info(spec_.id, std::string("graceful request ") + (r.ok ? "accepted: " : "failed: ") +
                                 r.detail);
        }
        break;
      }
      case StopAction::kTerminate:
        events_.stopping(spec_.id, why_, "sigterm", t());
        signaller_->signal_group(SIGTERM);
        signaller_->signal_group(SIGCONT);
        break;
      case StopAction::kKill:
        events_.stopping(spec_.id, why_, "sigkill", t());
        log_warning(spec_.id, "stop budget spent: SIGKILL to the process group");
        signaller_->signal_group(SIGKILL);
        signaller_->signal_leader(SIGKILL);  // the PID-namespace init takes its namespace along
        if (cgroup_) cgroup_->kill_all(0);   // and whatever left the group or the namespace
        break;
      case StopAction::kGiveUp:
        return false;
    }
  }
  return true;
}

Outcome Supervision::reap_vmm() {
  siginfo_t info{};
  const int pidfd = launched_.pidfd.get();
  // Peek first: the zombie leader keeps the group id alive while the rest is killed.
  if (waitid(P_PIDFD, pidfd, &info, WEXITED | WNOWAIT) != 0) {
    return Outcome{OutcomeKind::kLost, 0, 0, "", errno, "waitid on the VMM failed"};
  }
  signaller_->signal_group(SIGKILL);
  waitid(P_PIDFD, pidfd, &info, WEXITED);
  const bool killed = ladder_ && ladder_->killed();
  Outcome outcome = outcome_from(info, killed);
  // A PID-namespace init reports the VMM's own status before it exits; without it (the init
  // was killed), the init's status stands.
  if (launched_.control) {
    if (auto status = read_vmm_exit(launched_.control.get(), 100)) {
      outcome = outcome_from_status(*status, killed);
    }
  }
  return outcome;
}

// The end, whatever it was: the cgroup and what is left are killed and removed, then the
// state files, then the `exited` event (exit.json renamed in last), then the control socket.
int Supervision::finish(Outcome o) {
  std::optional<CgroupReport> report;
  if (cgroup_) {
    report = finish_cgroup(*cgroup_, spec_.id);
  } else {
    kill_and_reap_leftovers();
  }
  if (o.kind != OutcomeKind::kLost) cleanup_.run(spec_.id);
  set_state(SandboxState::kExited,
            "exited: " + outcome_name(o.kind) + ", status " + std::to_string(o.exit_status()));
  events_.exited(spec_.id, o, t(), report ? &*report : nullptr);
  if (control_) {
    control_->flush_and_close(kControlFlushMs);
    unlinkat(options_.state_dir->dir_fd(), kControlName, 0);
  }
  log_info(spec_.id,
           "outcome " + outcome_name(o.kind) + ", exit status " + std::to_string(o.exit_status()));
  return o.exit_status();
}

int Supervision::run() {
  signal(SIGPIPE, SIG_IGN);
  record_ = SandboxRecord{
      spec_.id, getpid(), 0, 0, unix_time_ms(), options_.spec_path, SandboxState::kStarting};
  set_state(SandboxState::kStarting, "starting");
  if (auto failed = open_outputs()) {
    log_error(spec_.id, "setup failed at control_socket: " + failed->detail);
    return finish(*failed);
  }
  // The VMM of a PID-namespace launch and whatever the VMM orphans become ours to reap.
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
    log_error(spec_.id, std::string("PR_SET_CHILD_SUBREAPER: ") + std::strerror(errno));
    return finish(
        Outcome{OutcomeKind::kSetupFailed, 0, 0, "spawn_helper", errno, "PR_SET_CHILD_SUBREAPER"});
  }
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigprocmask(SIG_BLOCK, &stop_signals, nullptr);  // the helper resets its mask at entry
  UniqueFd sigfd(signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!sigfd) {
    // Without it SIGTERM and SIGINT, blocked above, would never stop the sandbox.
    const int err = errno;
    log_error(spec_.id, std::string("signalfd: ") + std::strerror(err));
    return finish(Outcome{OutcomeKind::kSetupFailed, 0, 0, "spawn_helper", err, "signalfd"});
  }

  struct stat st;
  cleanup_ = Cleanup{spec_.sandbox_dir, lstat(spec_.sandbox_dir.c_str(), &st) != 0,
                     spec_.api_socket.value_or(""),
                     spec_.api_socket && lstat(spec_.api_socket->c_str(), &st) != 0};

  // The cgroup comes first: a parent or a limit it refuses stops the launch before anything
  // is spawned.
  BeforeLaunch enter_cgroup;
  bool helper_moved = false;
  if (spec_.cgroup) {
    auto made = SandboxCgroup::create(*spec_.cgroup, spec_.id, {true, options_.cgroup_kill_mode});
    if (auto* e = std::get_if<CgroupError>(&made)) {
      log_error(spec_.id, "setup failed at create_cgroup: " + e->detail);
      return finish(Outcome{OutcomeKind::kSetupFailed, 0, 0, "create_cgroup", e->err, e->detail});
    }
    cgroup_.emplace(std::move(std::get<SandboxCgroup>(made)));
    log_info(spec_.id, "cgroup " + cgroup_->path());
    // The helper waits for its request: placed now, the VMM and all it forks start inside.
    enter_cgroup = [&](pid_t helper_pid) -> std::optional<SetupFailure> {
      if (auto e = cgroup_->enter(helper_pid)) {
        return SetupFailure{"enter_cgroup", e->err, e->detail, 125};
      }
      log_info(spec_.id, "helper moved into " + cgroup_->path());
      helper_moved = true;
      return std::nullopt;
    };
  }
  log_info(spec_.id, "launching " + spec_.binary + " through " + options_.helper_path);
  launched_ =
      launch_helper(options_.helper_path, launch_request(spec_), spec_.stdio,
                    options_.events_fd == STDOUT_FILENO, kHelperReplyTimeoutMs, enter_cgroup,
                    cgroup_ && options_.cgroup_spawn_into ? cgroup_->dir_fd() : -1);
  if (launched_.failure) {
    const SetupFailure& f = *launched_.failure;
    log_error(spec_.id,
              "setup failed at " + f.step + ": " + f.detail + ": " + std::strerror(f.err));
    // With a cgroup, finish_cgroup kills through it first, then reaps what was ours.
    return finish(Outcome{OutcomeKind::kSetupFailed, 0, 0, f.step, f.err, f.detail, f.helper_exit});
  }
  if (cgroup_ && !helper_moved) log_info(spec_.id, "helper spawned into " + cgroup_->path());
  const pid_t pid = launched_.vmm_pid;
  record_.vmm_pid = launched_.reported_pid;
  record_.pgid = pid;
  if (control_) {
    control_->set_rules(PeerRules{geteuid(), pid, cgroup_ ? cgroup_v2_of(pid) : std::string()});
  }
  // state.json has the VMM's pids before a detached caller, back at `started`, can run `ps`.
  set_state(SandboxState::kRunning, "running: VMM pid " + std::to_string(launched_.reported_pid));
  events_.started(spec_.id, launched_.reported_pid, pid, t(), launched_.landlock_abi);
  if (options_.detached) events_.close_fd();  // the caller has what it waited for
  log_info(spec_.id, "VMM running as pid " + std::to_string(launched_.reported_pid) +
                         (launched_.reported_pid != pid
                              ? " under the PID-namespace init " + std::to_string(pid)
                              : std::string()));
  signaller_.emplace(pid, launched_.pidfd.get(), options_.signal_mode);

  if (!spec_.api_socket) {
    events_.ready(spec_.id, t());
    set_state(SandboxState::kReady, "ready");
    notifier_.send("READY=1\nMAINPID=" + std::to_string(getpid()));
  }
  std::vector<pollfd> fds;
  while (true) {
    int timeout = -1;
    if (state_ == SandboxState::kRunning) timeout = kReadyPollMs;
    if (ladder_) {
      int64_t w = ladder_->wait_ms(now_ms());
      if (w >= 0 && (timeout < 0 || w < timeout)) timeout = static_cast<int>(w);
    }
    fds.assign({{launched_.pidfd.get(), POLLIN, 0}, {sigfd.get(), POLLIN, 0}});
    if (control_) control_->add_poll_fds(&fds);
    int n = poll(fds.data(), fds.size(), timeout);
    if (n < 0 && errno != EINTR) {
      return finish(Outcome{OutcomeKind::kLost, 0, 0, "", errno, "poll failed"});
    }
    if (fds[0].revents & POLLIN) return finish(reap_vmm());
    if (fds[1].revents & POLLIN) {
      signalfd_siginfo si;
      while (read(sigfd.get(), &si, sizeof(si)) == sizeof(si)) {
        if (!ladder_) {
          start_ladder(signal_word(static_cast<int>(si.ssi_signo)), spec_.stop_timeout_ms);
        }
      }
    }
    if (control_ && n > 0) control_->handle(fds, 2, *this);
    if (state_ == SandboxState::kRunning) check_ready();
    if (ladder_ && !advance_ladder()) {
      Outcome lost{OutcomeKind::kLost,
                   0,
                   0,
                   "",
                   0,
                   "not reaped 1000 ms after SIGKILL (uninterruptible sleep?)"};
      log_error(spec_.id, lost.detail);
      return finish(lost);
    }
  }
}

}  // namespace

int run_sandbox(const Spec& spec, const RunOptions& options) {
  return Supervision(spec, options).run();
}

}  // namespace sbx::supervisor
