#include "supervisor/helper_launch.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/process/v2/default_launcher.hpp>
#include <boost/process/v2/process.hpp>
#include <boost/process/v2/stdio.hpp>
#include <cerrno>
#include <cstring>

namespace sbx::supervisor {
namespace bp = boost::process::v2;

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

// Puts the helper's end of the socketpair at fd 3 in the child, and when the supervisor's
// stdout carries the events, the VMM's stdout on the supervisor's stderr so VMM output never
// corrupts the event stream. (Boost 1.81's posix::bind_fd has an on_setup without a return
// value, so it cannot be used.)
struct HelperChildFds {
  int fd;
  bool stdout_to_stderr;
  boost::system::error_code on_setup(bp::posix::default_launcher& launcher,
                                     const bp::filesystem::path&, const char* const*) {
    launcher.fd_whitelist.push_back(3);
    return {};
  }
  // Runs in the child between fork and exec: async-signal-safe calls only.
  boost::system::error_code on_exec_setup(bp::posix::default_launcher&, const bp::filesystem::path&,
                                          const char* const*) {
    int rc = fd == 3 ? fcntl(3, F_SETFD, 0) : dup2(fd, 3);
    if (rc == -1) return {errno, boost::system::system_category()};
    if (stdout_to_stderr && dup2(STDERR_FILENO, STDOUT_FILENO) == -1) {
      return {errno, boost::system::system_category()};
    }
    return {};
  }
};

SetupFailure failure(std::string step, int err, std::string detail) {
  return SetupFailure{std::move(step), err, std::move(detail), 125};
}

}  // namespace

Launched launch_helper(const std::string& helper_path, const protocol::LaunchRequest& request,
                       Stdio stdio, bool stdout_is_events, int reply_timeout_ms) {
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

  boost::asio::io_context ctx;
  boost::system::error_code ec;
  bp::process_stdio io;
  if (stdio == Stdio::kNull) io = bp::process_stdio{nullptr, nullptr, nullptr};
  // The launcher closes every fd but 0-2 and the bound ones in the child.
  const std::vector<std::string> no_args;
  bp::process helper(ctx.get_executor());
  try {
    helper = bp::default_process_launcher()(
        ctx.get_executor(), ec, helper_path, no_args, io,
        HelperChildFds{theirs.get(), stdio == Stdio::kInherit && stdout_is_events});
  } catch (const std::exception& e) {
    out.failure = failure("spawn_helper", EIO, std::string("spawn: ") + e.what());
    return out;
  }
  if (ec) {
    std::string detail = "spawn " + helper_path + ": " + ec.message();
    // The packaged helper is root:sbx 0750: EACCES almost always means a missing group.
    if (ec.value() == EACCES)
      detail += " (is this user in the group that may run the helper, sbx?)";
    out.failure = failure("spawn_helper", ec.value(), detail);
    return out;
  }
  const pid_t helper_pid = helper.id();
  UniqueFd helper_pidfd(pidfd_open(helper_pid));
  helper.detach();  // tracked through the pidfd and waitpid from here on
  theirs.reset();
  if (!helper_pidfd) {
    out.failure = failure("spawn_helper", errno, "pidfd_open");
    return out;
  }
  out.vmm_pid = helper_pid;

  // A helper that fails before reading (check_invocation, load_policy) may be gone before the
  // request is sent: its ERROR is still queued, and names the step better than EPIPE does.
  std::optional<SetupFailure> send_failed;
  if (Status st = protocol::send_datagram(ours.get(), bytes.value(), {}, Step::kReadRequest);
      !st.ok()) {
    send_failed = failure("control_socket", st.err(), "send LAUNCH: " + st.detail());
  }
  bool pid_namespace_child = false;
  while (!out.failure) {
    auto d = protocol::receive_datagram(ours.get(), reply_timeout_ms, 0, Step::kReadRequest);
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
    if (auto* e = std::get_if<protocol::ErrorReport>(&msg.value())) {
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
    if (out.failure && pid_namespace_child) {
      // The namespace init failed after the fork: it exits on its own; reap it, bounded.
      kill(out.vmm_pid, SIGKILL);
      reap_within(out.vmm_pid, out.pidfd.get(), 5000);
    }
  } else {
    out.pidfd = std::move(helper_pidfd);
  }
  return out;
}

}  // namespace sbx::supervisor
