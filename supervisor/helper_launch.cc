// SPDX-License-Identifier: Apache-2.0
#include "supervisor/helper_launch.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "common/pidfd.h"

namespace sbx::supervisor {
namespace {

int pidfd_open(pid_t pid) {
  return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
}

// Waits (bounded) for a child that is about to exit and returns its wait status.
std::optional<int> reap_within(pid_t pid, int pidfd, int timeout_ms) {
  pollfd pfd{pidfd, POLLIN, 0};
  if (poll(&pfd, 1, timeout_ms) <= 0) return std::nullopt;
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return std::nullopt;
  return status;
}

// Spawns the helper with posix_spawn rather than a fork: glibc runs the child on its own stack
// in the parent's address space (CLONE_VM|CLONE_VFORK), so no page tables are copied, and
// hands an exec failure's errno back. The helper's end of the socketpair lands at fd 3; stdio
// is /dev/null or inherited, with stdout on the supervisor's stderr when stdout carries the
// events; every fd above 3 is closed; the signal mask is cleared; the environment is empty.
// Returns 0 and sets *pid, or returns an errno value.
int spawn_helper(const std::string& helper_path, int helper_end, Stdio stdio, bool stdout_to_stderr,
                 pid_t* pid) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  if (int rc = posix_spawn_file_actions_init(&fa); rc != 0) return rc;
  if (int rc = posix_spawnattr_init(&attr); rc != 0) {
    posix_spawn_file_actions_destroy(&fa);
    return rc;
  }
  // adddup2 of an fd onto itself clears FD_CLOEXEC (glibc, after Austin Group issue 411).
  int rc = posix_spawn_file_actions_adddup2(&fa, helper_end, 3);
  if (stdio == Stdio::kNull) {
    for (int fd = 0; fd <= 2 && rc == 0; ++fd) {
      rc = posix_spawn_file_actions_addopen(&fa, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0);
    }
  } else if (stdout_to_stderr && rc == 0) {
    rc = posix_spawn_file_actions_adddup2(&fa, STDERR_FILENO, STDOUT_FILENO);
  }
  if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&fa, 4);
  sigset_t empty;
  sigemptyset(&empty);
  if (rc == 0) rc = posix_spawnattr_setsigmask(&attr, &empty);
  if (rc == 0) rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  char* const argv[] = {const_cast<char*>(helper_path.c_str()), nullptr};
  char* const envp[] = {nullptr};
  if (rc == 0) rc = posix_spawn(pid, helper_path.c_str(), &fa, &attr, argv, envp);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&fa);
  return rc;
}

// The same as spawn_helper, but the child starts in the cgroup `cgroup_fd`: clone3 with
// CLONE_INTO_CGROUP and CLONE_VFORK (this process waits until the child has executed or
// failed), the same fd, stdio and signal-mask setup in the child, an exec failure's errno on
// a close-on-exec pipe. The child is a copy of this small static process, not a thread in
// its address space. Returns 0 and sets *pid, or an errno value (ENOSYS or EINVAL: the kernel
// cannot spawn into a cgroup; the caller falls back).
int spawn_helper_into_cgroup(const std::string& helper_path, int helper_end, Stdio stdio,
                             bool stdout_to_stderr, int cgroup_fd, pid_t* pid) {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) return errno;
  // Above every number the child places, so no dup2 below lands on it.
  UniqueFd report_read(pipe_fds[0]);
  UniqueFd report_write(fcntl(pipe_fds[1], F_DUPFD_CLOEXEC, 10));
  close(pipe_fds[1]);
  if (!report_write) return errno;
  int dev_null = stdio == Stdio::kNull ? open("/dev/null", O_RDWR | O_CLOEXEC) : -1;
  if (stdio == Stdio::kNull && dev_null < 0) return errno;
  UniqueFd null_owner(dev_null);
  char* const argv[] = {const_cast<char*>(helper_path.c_str()), nullptr};
  char* const envp[] = {nullptr};
  clone_args args{};
  args.flags = CLONE_INTO_CGROUP | CLONE_VFORK;
  args.exit_signal = SIGCHLD;
  args.cgroup = static_cast<uint64_t>(cgroup_fd);
  long child = syscall(SYS_clone3, &args, sizeof(args));
  if (child < 0) return errno;
  if (child == 0) {
    sigset_t empty;
    sigemptyset(&empty);
    sigprocmask(SIG_SETMASK, &empty, nullptr);
    bool ok = helper_end == 3 ? fcntl(3, F_SETFD, 0) == 0 : dup2(helper_end, 3) == 3;
    if (ok && dev_null >= 0) {
      for (int fd = 0; fd <= 2; ++fd) ok = ok && dup2(dev_null, fd) == fd;
    } else if (ok && stdout_to_stderr) {
      ok = dup2(STDERR_FILENO, STDOUT_FILENO) == STDOUT_FILENO;
    }
    // Everything above 3 goes at exec; the report pipe stays until then.
    if (ok) ok = close_range(4, ~0U, CLOSE_RANGE_CLOEXEC) == 0;
    if (ok) execve(helper_path.c_str(), argv, envp);
    int err = errno;
    (void)!write(report_write.get(), &err, sizeof(err));
    _exit(127);
  }
  report_write.reset();
  int err = 0;
  ssize_t n;
  do {
    n = read(report_read.get(), &err, sizeof(err));
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof(err))) {
    while (waitpid(static_cast<pid_t>(child), nullptr, 0) < 0 && errno == EINTR) {
    }
    return err;
  }
  *pid = static_cast<pid_t>(child);
  return 0;
}

SetupFailure failure(std::string step, int err, std::string detail) {
  return SetupFailure{std::move(step), err, std::move(detail), 125};
}

}  // namespace

Launched launch_helper(const std::string& helper_path, const protocol::LaunchRequest& request,
                       Stdio stdio, bool stdout_is_events, int reply_timeout_ms,
                       const BeforeLaunch& before_launch, int cgroup_fd) {
  Launched out;
  auto bytes = protocol::encode(request);
  if (!bytes.ok()) {
    out.failure = failure("validate_request", bytes.status().err(), bytes.status().detail());
    return out;
  }
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    out.failure = failure("spawn_helper", errno, "socketpair");
    return out;
  }
  UniqueFd ours(sv[0]), theirs(sv[1]);

  pid_t helper_pid = -1;
  const bool stdout_to_stderr = stdio == Stdio::kInherit && stdout_is_events;
  bool placed = false;  // spawned straight into the cgroup
  int rc = ENOSYS;
  if (cgroup_fd >= 0) {
    rc = spawn_helper_into_cgroup(helper_path, theirs.get(), stdio, stdout_to_stderr, cgroup_fd,
                                  &helper_pid);
    placed = rc == 0;
  }
  if (rc == ENOSYS || rc == EINVAL) {
    rc = spawn_helper(helper_path, theirs.get(), stdio, stdout_to_stderr, &helper_pid);
  }
  if (rc != 0) {
    std::string detail = "spawn " + helper_path + ": " + std::strerror(rc);
    // The packaged helper is root:sbx 0750: EACCES almost always means a missing group.
    if (rc == EACCES) detail += " (is this user in the group that may run the helper, sbx?)";
    out.failure = failure("spawn_helper", rc, detail);
    return out;
  }
  // The child is unreaped, so its pid cannot be reused before the pidfd is open.
  UniqueFd helper_pidfd(pidfd_open(helper_pid));
  theirs.reset();
  if (!helper_pidfd) {
    out.failure = failure("spawn_helper", errno, "pidfd_open");
    return out;
  }
  out.vmm_pid = helper_pid;
  if (before_launch && !placed) {
    out.failure = before_launch(helper_pid);
    if (out.failure) kill(helper_pid, SIGKILL);  // it has not been sent a request
  }

  // A helper that fails before reading (check_invocation, load_policy) may be gone before the
  // request is sent: its ERROR is still queued, and names the step better than EPIPE does.
  std::optional<SetupFailure> send_failed;
  if (Status st = out.failure
                      ? Status()
                      : protocol::send_datagram(ours.get(), bytes.value(), {}, Step::kReadRequest);
      !st.ok()) {
    send_failed = failure("control_socket", st.err(), "send LAUNCH: " + st.detail());
  }
  bool pid_namespace_child = false, confinement_seen = false, vmm_started = false;
  while (!out.failure && !vmm_started) {
    // One fd at most: the VMM's pidfd with VMM_STARTED; any other message carrying one is
    // refused below.
    auto d = protocol::receive_datagram(ours.get(), reply_timeout_ms, 1, Step::kReadRequest);
    if (!d.ok()) {
      out.failure = send_failed ? send_failed
                                : failure("control_socket", d.status().err(), d.status().detail());
      break;
    }
    if (d.value().eof) {  // EOF means "exec happened" only if the request was delivered
      if (send_failed) out.failure = send_failed;
      break;
    }
    auto msg = protocol::decode(d.value().bytes, Step::kReadRequest);
    if (!msg.ok()) {
      out.failure = failure("control_socket", msg.status().err(), msg.status().detail());
      break;
    }
    const bool is_started = std::holds_alternative<protocol::VmmStarted>(msg.value());
    if (!d.value().fds.empty() && !is_started) {
      out.failure = failure("control_socket", EPROTO, "an fd with a message that carries none");
      break;
    }
    if (is_started) {
      if (!pid_namespace_child || d.value().fds.size() != 1) {
        out.failure = failure("control_socket", EPROTO, "unexpected VMM_STARTED");
        break;
      }
      out.reported_pid = pid_of_pidfd(d.value().fds[0].get());
      // The init holds the VMM unreaped until this ack, so the pid read above is its own.
      (void)protocol::send_datagram(ours.get(), protocol::encode(protocol::StartedAck{}), {},
                                    Step::kReadRequest);
      if (out.reported_pid <= 0) {
        out.failure = failure("control_socket", EPROTO, "VMM_STARTED without a pidfd");
        break;
      }
      vmm_started = true;
    } else if (auto* e = std::get_if<protocol::ErrorReport>(&msg.value())) {
      out.failure = SetupFailure{std::string(step_name(e->step)), e->err, e->detail, 125};
    } else if (auto* p = std::get_if<protocol::PidReport>(&msg.value())) {
      if (!request.pid_namespace || pid_namespace_child) {
        out.failure = failure("control_socket", EPROTO, "unexpected pid report");
        break;
      }
      // The helper's child is ours (CLONE_PARENT) and unreaped: its pid cannot be reused yet.
      out.vmm_pid = p->pid;
      out.pidfd.reset(pidfd_open(p->pid));
      if (!out.pidfd) out.failure = failure("control_socket", errno, "pidfd_open of the VMM");
      pid_namespace_child = true;
    } else if (auto* c = std::get_if<protocol::ConfinementReport>(&msg.value())) {
      if (confinement_seen) {
        out.failure = failure("control_socket", EPROTO, "a second confinement report");
        break;
      }
      confinement_seen = true;
      out.landlock_abi = c->landlock_abi;
    } else {
      out.failure = failure("control_socket", EPROTO, "unexpected message from the helper");
    }
  }

  if (request.pid_namespace || out.failure) {
    // The helper process is done (it forked, or it failed): reap it, bounded.
    std::optional<int> status = reap_within(helper_pid, helper_pidfd.get(), 5000);
    if (!status) {
      kill(helper_pid, SIGKILL);
      status = reap_within(helper_pid, helper_pidfd.get(), 1000);
    }
    if (out.failure && status && WIFEXITED(*status))
      out.failure->helper_exit = WEXITSTATUS(*status);
    if (!out.failure && request.pid_namespace && !pid_namespace_child) {
      out.failure = failure("control_socket", EPROTO, "no pid report from the helper");
    }
    if (!out.failure && request.pid_namespace && !vmm_started) {
      out.failure = failure("control_socket", EPROTO,
                            "the namespace init ended the launch "
                            "without VMM_STARTED");
    }
    if (out.failure && pid_namespace_child) {
      // The failure came from the namespace's pid 1 (before or at the VMM's exec): it exits on
      // its own, with the status that says why (126, 127); reap it, bounded, then by force.
      std::optional<int> init_status = reap_within(out.vmm_pid, out.pidfd.get(), 1000);
      if (!init_status) {
        kill(out.vmm_pid, SIGKILL);
        init_status = reap_within(out.vmm_pid, out.pidfd.get(), 5000);
      }
      if (init_status && WIFEXITED(*init_status)) {
        out.failure->helper_exit = WEXITSTATUS(*init_status);
      }
    }
  } else {
    out.pidfd = std::move(helper_pidfd);
  }
  if (!out.failure) {
    if (request.pid_namespace) {
      out.control = std::move(ours);
    } else {
      out.reported_pid = out.vmm_pid;
    }
  }
  return out;
}

std::optional<int> read_vmm_exit(int control, int timeout_ms) {
  // Anything else on the socket now is out of protocol and ignored; a few messages at most.
  for (int i = 0; i < 4; ++i) {
    auto d = protocol::receive_datagram(control, timeout_ms, 0, Step::kReadRequest);
    if (!d.ok() || d.value().eof) return std::nullopt;
    auto msg = protocol::decode(d.value().bytes, Step::kReadRequest);
    if (!msg.ok()) return std::nullopt;
    if (auto* e = std::get_if<protocol::VmmExit>(&msg.value())) return static_cast<int>(e->status);
  }
  return std::nullopt;
}

}  // namespace sbx::supervisor
