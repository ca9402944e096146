// SPDX-License-Identifier: Apache-2.0
#include "helper/fds.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>

#include "common/protocol.h"
#include "helper/seccomp_rules.h"

namespace sbx::fds {

Status ensure_stdio_open() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (fcntl(fd, F_GETFD) >= 0) continue;
    int opened = open("/dev/null", O_RDWR);
    if (opened != fd) {
      return Status(Step::kCheckInvocation, opened < 0 ? errno : EBADF, "open /dev/null on stdio");
    }
  }
  return {};
}

Status check_control_socket(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return Status(Step::kCheckInvocation, errno, "fd 3 is not open");
  if (!S_ISSOCK(st.st_mode))
    return Status(Step::kCheckInvocation, ENOTSOCK, "fd 3 is not a socket");
  int type = 0, domain = 0;
  socklen_t len = sizeof(type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_SEQPACKET) {
    return Status(Step::kCheckInvocation, EPROTOTYPE, "fd 3 is not a SOCK_SEQPACKET socket");
  }
  len = sizeof(domain);
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 || domain != AF_UNIX) {
    return Status(Step::kCheckInvocation, EAFNOSUPPORT, "fd 3 is not an AF_UNIX socket");
  }
  if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
    return Status(Step::kCheckInvocation, errno, "mark fd 3 close-on-exec");
  }
  return {};
}

Status close_inherited_fds() {
  if (close_range(kControlFd + 1, ~0U, 0) != 0) {
    return Status(Step::kCheckInvocation, errno, "close_range above fd 3");
  }
  return {};
}

Status lift_above_targets(UniqueFd& fd) {
  if (fd.get() > protocol::kMaxPassedFdTarget) return {};
  int high = fcntl(fd.get(), F_DUPFD_CLOEXEC, protocol::kMaxPassedFdTarget + 1);
  if (high < 0) return Status(Step::kPrepareFds, errno, "move a helper fd above the targets");
  fd.reset(high);
  return {};
}

Status place_exec_fd(UniqueFd& fd) {
  rlimit lim;
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return Status(Step::kPrepareFds, errno, "getrlimit");
  const rlimit saved = lim;
  if (lim.rlim_cur <= static_cast<rlim_t>(seccomp::kExecFd)) {
    if (lim.rlim_max <= static_cast<rlim_t>(seccomp::kExecFd)) {
      return Status(Step::kPrepareFds, EMFILE,
                    "the caller's hard RLIMIT_NOFILE (" + std::to_string(lim.rlim_max) +
                        ") leaves no room for the VMM's exec fd " +
                        std::to_string(seccomp::kExecFd) + ": raise it above that");
    }
    lim.rlim_cur = static_cast<rlim_t>(seccomp::kExecFd) + 1;
    if (setrlimit(RLIMIT_NOFILE, &lim) != 0) {
      return Status(Step::kPrepareFds, errno, "raise RLIMIT_NOFILE to place the VMM's exec fd");
    }
  }
  // The helper holds a few dozen fds: kExecFd is the lowest free number from kExecFd up.
  int placed = fcntl(fd.get(), F_DUPFD_CLOEXEC, seccomp::kExecFd);
  const int err = errno;
  if (saved.rlim_cur != lim.rlim_cur && setrlimit(RLIMIT_NOFILE, &saved) != 0) {
    if (placed >= 0) close(placed);
    return Status(Step::kPrepareFds, errno, "restore RLIMIT_NOFILE");
  }
  if (placed != seccomp::kExecFd) {
    if (placed >= 0) close(placed);
    return Status(Step::kPrepareFds, placed < 0 ? err : EBUSY,
                  "move the VMM's fd to " + std::to_string(seccomp::kExecFd));
  }
  fd.reset(placed);
  return {};
}

Status prepare_exec_fds(std::vector<UniqueFd>& passed, const std::vector<int>& targets) {
  if (passed.size() != targets.size()) {
    return Status(Step::kPrepareFds, EINVAL, "passed fds and targets differ in number");
  }
  // Lift every received fd above the target range first, so placing one never clobbers
  // another that still waits for its number.
  std::vector<UniqueFd> lifted;
  for (auto& fd : passed) {
    int high = fcntl(fd.get(), F_DUPFD_CLOEXEC, protocol::kMaxPassedFdTarget + 1);
    if (high < 0) return Status(Step::kPrepareFds, errno, "dup a passed fd");
    lifted.emplace_back(high);
    fd.reset();
  }
  // Whatever is left at a target number is the helper's own: never overwrite it.
  for (int t : targets) {
    if (fcntl(t, F_GETFD) >= 0) {
      return Status(Step::kPrepareFds, EBUSY,
                    "pass_fd target " + std::to_string(t) + " is an fd the helper holds");
    }
  }
  for (size_t i = 0; i < lifted.size(); ++i) {
    if (dup2(lifted[i].get(), targets[i]) < 0) {  // dup2 leaves the target without CLOEXEC
      return Status(Step::kPrepareFds, errno, "dup2 to fd " + std::to_string(targets[i]));
    }
  }
  lifted.clear();
  // Everything from 3 up is close-on-exec except the targets.
  std::vector<int> sorted = targets;
  std::sort(sorted.begin(), sorted.end());
  unsigned from = kControlFd;
  for (int t : sorted) {
    if (static_cast<unsigned>(t) > from &&
        close_range(from, static_cast<unsigned>(t) - 1, CLOSE_RANGE_CLOEXEC) != 0) {
      return Status(Step::kPrepareFds, errno, "close_range CLOEXEC");
    }
    from = static_cast<unsigned>(t) + 1;
  }
  if (close_range(from, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
    return Status(Step::kPrepareFds, errno, "close_range CLOEXEC");
  }
  return {};
}

}  // namespace sbx::fds
