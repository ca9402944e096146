// SPDX-License-Identifier: Apache-2.0
#include "supervisor/vmm_api.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/unique_fd.h"
#include "supervisor/clock.h"

namespace sbx::supervisor {
namespace {

constexpr size_t kMaxResponse = 64 * 1024;

// A non-blocking unix stream connection whose every operation honours one deadline.
class DeadlineSocket {
 public:
  explicit DeadlineSocket(int timeout_ms) : deadline_(now_ms() + timeout_ms) {}

  // Connects to the socket at `path` only if it is one, reached with no symlink anywhere in
  // the path, and served by a process of the sandbox (`session`): the VMM can write the
  // socket's directory and could otherwise put a symlink to a sibling's socket there. Nothing
  // is sent on a refused connection.
  bool connect_to(const std::string& path, pid_t session, std::string* why) {
    open_how how{};
    how.flags = O_PATH | O_CLOEXEC;
    how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    UniqueFd at(static_cast<int>(syscall(SYS_openat2, AT_FDCWD, path.c_str(), &how, sizeof(how))));
    if (!at) {
      refused_ = errno == ELOOP;
      return fail(why, "open " + path + (refused_ ? " (a symlink: not followed)" : ""));
    }
    struct stat st;
    if (fstat(at.get(), &st) != 0) return fail(why, "fstat " + path);
    if (!S_ISSOCK(st.st_mode)) {
      refused_ = true;
      *why = "refused: " + path + " is not a socket";
      return false;
    }
    // connect() takes a path; the fd's magic link names exactly the socket opened above.
    const std::string via = "/proc/self/fd/" + std::to_string(at.get());
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, via.c_str(), via.size());
    fd_.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd_) return fail(why, "socket");
    if (connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      if (errno != EINPROGRESS && errno != EAGAIN) return fail(why, "connect " + path);
      if (!wait_for(POLLOUT, why)) return false;
      int err = 0;
      socklen_t len = sizeof(err);
      getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        errno = err;
        return fail(why, "connect " + path);
      }
    }
    return peer_in_sandbox(path, session, why);
  }

  bool send_all(const std::string& data, std::string* why) {
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = send(fd_.get(), data.data() + done, data.size() - done, MSG_NOSIGNAL);
      if (n > 0) {
        done += static_cast<size_t>(n);
      } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        if (!wait_for(POLLOUT, why)) return false;
      } else {
        return fail(why, "send");
      }
    }
    return true;
  }

  // Appends what arrives to `buf` until `complete(buf)` or EOF; false on deadline or error.
  template <typename Complete>
  bool receive_until(std::string* buf, Complete complete, std::string* why) {
    while (!complete(*buf)) {
      if (buf->size() > kMaxResponse) {
        *why = "response larger than 64 KiB";
        return false;
      }
      char chunk[4096];
      ssize_t n = recv(fd_.get(), chunk, sizeof(chunk), 0);
      if (n > 0) {
        buf->append(chunk, static_cast<size_t>(n));
      } else if (n == 0) {
        return complete(*buf);  // EOF: done only if what came is complete
      } else if (errno == EAGAIN || errno == EINTR) {
        if (!wait_for(POLLIN, why)) return false;
      } else {
        return fail(why, "recv");
      }
    }
    return true;
  }

  // The last connect_to failed a sandbox check (a symlink, not a socket, a foreign peer).
  bool refused() const { return refused_; }

 private:
  bool wait_for(short events, std::string* why) {
    while (true) {
      int64_t left = deadline_ - now_ms();
      if (left <= 0) {
        *why = "timed out";
        return false;
      }
      pollfd pfd{fd_.get(), events, 0};
      int r = poll(&pfd, 1, static_cast<int>(left));
      if (r > 0) return true;
      if (r < 0 && errno != EINTR) return fail(why, "poll");
    }
  }
  // The listener's pid (SO_PEERCRED, as this PID namespace sees it; 0 when it cannot see it)
  // must be in the sandbox's session: the VMM's, or with a PID namespace its init's, which
  // every process of the sandbox keeps unless it makes a session of its own, and which no
  // process elsewhere can join.
  bool peer_in_sandbox(const std::string& path, pid_t session, std::string* why) {
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (getsockopt(fd_.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      return fail(why, "SO_PEERCRED on " + path);
    }
    const pid_t peer_session = cred.pid > 0 ? getsid(cred.pid) : -1;
    if (session > 0 && peer_session == session) return true;
    fd_.reset();
    refused_ = true;
    *why = "refused: " + path + " is served by pid " + std::to_string(cred.pid) +
           (peer_session > 0 ? " of session " + std::to_string(peer_session) : std::string()) +
           ", not by a process of this sandbox (session " + std::to_string(session) +
           "); nothing was sent";
    return false;
  }

  static bool fail(std::string* why, const std::string& what) {
    *why = what + ": " + std::strerror(errno);
    return false;
  }

  UniqueFd fd_;
  int64_t deadline_;
  bool refused_ = false;
};

// The first line of each QMP reply is a whole JSON object terminated by CRLF.
size_t next_line_end(const std::string& buf, size_t from) {
  return buf.find('\n', from);
}

}  // namespace

ApiResult http_request(const std::string& socket_path, pid_t session, const std::string& method,
                       const std::string& path, const std::string& body, int timeout_ms) {
  DeadlineSocket s(timeout_ms);
  ApiResult r;
  std::string request = method + " " + path + " HTTP/1.1\r\nHost: localhost\r\n" +
                        "Accept: application/json\r\nConnection: close\r\n";
  if (!body.empty()) request += "Content-Type: application/json\r\n";
  request += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  std::string response;
  if (!s.connect_to(socket_path, session, &r.detail)) {
    r.refused = s.refused();
    return r;
  }
  if (!s.send_all(request, &r.detail) ||
      !s.receive_until(
          &response, [](const std::string& b) { return b.find("\r\n") != std::string::npos; },
          &r.detail)) {
    return r;
  }
  std::string status_line = response.substr(0, response.find("\r\n"));
  r.detail = status_line;
  // "HTTP/1.1 204 No Content"
  size_t sp = status_line.find(' ');
  r.ok = status_line.starts_with("HTTP/1.") && sp != std::string::npos &&
         status_line.size() > sp + 1 && status_line[sp + 1] == '2';
  return r;
}

ApiResult qmp_command(const std::string& socket_path, pid_t session, const std::string& command,
                      int timeout_ms) {
  DeadlineSocket s(timeout_ms);
  ApiResult r;
  std::string buf;
  size_t consumed = 0;
  // Reads the next reply line that is not an asynchronous event.
  auto next_reply = [&](std::string* line) {
    while (true) {
      if (!s.receive_until(
              &buf,
              [&](const std::string& b) { return next_line_end(b, consumed) != std::string::npos; },
              &r.detail)) {
        if (r.detail.empty()) r.detail = "connection closed";
        return false;
      }
      size_t end = next_line_end(buf, consumed);
      *line = buf.substr(consumed, end - consumed);
      consumed = end + 1;
      if (line->find("\"event\"") == std::string::npos) return true;
    }
  };
  std::string line;
  if (!s.connect_to(socket_path, session, &r.detail)) {
    r.refused = s.refused();
    return r;
  }
  if (!next_reply(&line)) return r;
  if (line.find("\"QMP\"") == std::string::npos) {
    r.detail = "no QMP greeting: " + line.substr(0, 200);
    return r;
  }
  if (!s.send_all("{\"execute\":\"qmp_capabilities\"}\r\n", &r.detail) || !next_reply(&line)) {
    return r;
  }
  if (line.find("\"return\"") == std::string::npos) {
    r.detail = "qmp_capabilities refused: " + line.substr(0, 200);
    return r;
  }
  if (!s.send_all("{\"execute\":\"" + command + "\"}\r\n", &r.detail) || !next_reply(&line)) {
    // `quit` may close the socket before the reply is read; the exit itself is the answer.
    if (command == "quit" && r.detail == "connection closed") r.ok = true;
    return r;
  }
  r.ok = line.find("\"return\"") != std::string::npos;
  r.detail = line.substr(0, 200);
  return r;
}

bool api_socket_accepts(const std::string& socket_path, pid_t session, int timeout_ms,
                        std::string* why) {
  DeadlineSocket s(timeout_ms);
  return s.connect_to(socket_path, session, why);
}

ApiResult send_graceful_stop(const Spec& spec, pid_t session, int timeout_ms) {
  if (!spec.api_socket || spec.graceful_stop == GracefulStop::kNone) {
    return {false, "no graceful request"};
  }
  switch (spec.kind) {
    case VmmKind::kFirecracker:
      return http_request(*spec.api_socket, session, "PUT", "/actions",
                          "{\"action_type\":\"SendCtrlAltDel\"}", timeout_ms);
    case VmmKind::kCloudHypervisor:
      return http_request(*spec.api_socket, session, "PUT", "/api/v1/vmm.shutdown", "", timeout_ms);
    case VmmKind::kQemu:
      return qmp_command(
          *spec.api_socket, session,
          spec.graceful_stop == GracefulStop::kSystemPowerdown ? "system_powerdown" : "quit",
          timeout_ms);
    case VmmKind::kGeneric:
      break;
  }
  return {false, "no graceful request for generic"};
}

}  // namespace sbx::supervisor
