// SPDX-License-Identifier: Apache-2.0
#include "helper/init.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "common/protocol.h"

namespace sbx::init {
namespace {

// The signals the init forwards to the VMM, and why each: the supervisor's stop ladder
// (TERM, then CONT so a stopped VMM can act on it), and what a terminal or a service manager
// sends a foreground VMM (INT, HUP, QUIT, USR1, USR2). SIGCHLD is not forwarded: it is how the
// init learns that a process of the namespace ended.
constexpr int kForwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCONT};

// One datagram, with at most one fd; no allocation.
void send_message(int sock, std::span<const uint8_t> bytes, int fd) {
  iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  if (fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  }
  while (sendmsg(sock, &msg, MSG_NOSIGNAL) < 0 && errno == EINTR) {
  }
}

int exit_code_for_exec(int err) {
  return exec::exit_code_for(Status(Step::kExecVmm, err, ""));
}

// Waits (bounded) for the supervisor's STARTED_ACK: it has then read the VMM's pid from the
// pidfd sent with VMM_STARTED, and the VMM may be reaped. Whatever arrives, or nothing within
// the bound (the supervisor gone: the parent-death signal then ends this process), lets the
// init go on; it only ever delays a reap.
void wait_for_ack(int control_fd) {
  pollfd pfd{control_fd, POLLIN, 0};
  (void)poll(&pfd, 1, 5000);
  uint8_t buf[protocol::kHeaderSize];
  (void)recv(control_fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC);
}

// The init's loop: forward, reap, report the VMM's status, exit with it. Orphans are reaped as
// they come; the VMM only once the supervisor acknowledged VMM_STARTED.
[[noreturn]] void serve(int control_fd, pid_t vmm, const sigset_t& forwarded,
                        std::vector<uint8_t>& exit_msg) {
  bool acked = false;
  while (true) {
    siginfo_t info;
    int sig = sigwaitinfo(&forwarded, &info);
    if (sig < 0) continue;
    if (sig != SIGCHLD) {
      kill(vmm, sig);
      continue;
    }
    while (true) {
      siginfo_t child{};
      if (waitid(P_ALL, 0, &child, WEXITED | WNOHANG | WNOWAIT) != 0 || child.si_pid == 0) break;
      if (child.si_pid != vmm) {
        waitpid(child.si_pid, nullptr, 0);
        continue;
      }
      if (!acked) {
        wait_for_ack(control_fd);
        acked = true;
      }
      int status = 0;
      while (waitpid(vmm, &status, 0) < 0 && errno == EINTR) {
      }
      protocol::patch_u32(exit_msg, protocol::kVmmExitStatusOffset, static_cast<uint32_t>(status));
      send_message(control_fd, exit_msg, -1);
      _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    }
  }
}

}  // namespace

Status run(int control_fd, const exec::ExecPlan& plan, const std::string& vmm,
           std::span<const std::vector<uint8_t>> first) {
  sigset_t forwarded, previous, none;
  sigemptyset(&none);
  sigemptyset(&forwarded);
  for (int sig : kForwarded) sigaddset(&forwarded, sig);
  sigaddset(&forwarded, SIGCHLD);
  // Encoded now: the init allocates nothing after the vfork.
  std::vector<uint8_t> started = protocol::encode(protocol::VmmStarted{});
  std::vector<uint8_t> exit_msg = protocol::encode(protocol::VmmExit{0});
  std::vector<uint8_t> error_msg =
      protocol::encode(protocol::ErrorReport{Step::kExecVmm, 0, "execveat " + vmm});
  // Blocked before the vfork, so no signal sent in between is lost: it waits for sigwaitinfo.
  sigprocmask(SIG_BLOCK, &forwarded, &previous);
  // The child shares this memory until its exec: it writes the exec's errno here.
  volatile int exec_errno = 0;
  pid_t pid = vfork();
  if (pid == 0) {
    sigprocmask(SIG_SETMASK, &none, nullptr);  // the VMM starts with no signal blocked
    exec::exec_prepared(plan);
    exec_errno = errno != 0 ? errno : ENOEXEC;
    _exit(127);
  }
  if (pid < 0) {
    int err = errno;
    sigprocmask(SIG_SETMASK, &previous, nullptr);
    return Status(Step::kForkVmm, err, "vfork the VMM");
  }
  for (const auto& message : first) send_message(control_fd, message, -1);
  if (exec_errno != 0) {
    const int err = exec_errno;
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    protocol::patch_u32(error_msg, protocol::kErrorErrnoOffset, static_cast<uint32_t>(err));
    send_message(control_fd, error_msg, -1);
    _exit(exit_code_for_exec(err));
  }
  // The exec happened. The supervisor gets a pidfd of the VMM, from which it reads the VMM's
  // pid as it sees it.
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  send_message(control_fd, started, pidfd);
  if (pidfd >= 0) close(pidfd);
  // The init keeps nothing of the VMM's: only stdio and the control socket stay open.
  close_range(static_cast<unsigned>(control_fd) + 1, ~0U, 0);
  serve(control_fd, pid, forwarded, exit_msg);
}

}  // namespace sbx::init
