// SPDX-License-Identifier: Apache-2.0
#include "supervisor/control.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "supervisor/clock.h"
#include "supervisor/logging.h"
#include "supervisor/spec.h"
#include "supervisor/state_dir.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

namespace sbx::supervisor {
namespace json = boost::json;
namespace {

// How long a connection whose last line is out may take to close its end.
constexpr int kControlDrainMs = 1000;

std::string errno_text() {
  return std::strerror(errno);
}

// The identity of a namespace file (dev, inode), or nullopt when it cannot be read (the peer
// is not ptrace-readable by us: then nothing about it can be vouched for).
std::optional<std::pair<dev_t, ino_t>> ns_id(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return std::nullopt;
  return std::make_pair(st.st_dev, st.st_ino);
}

// A pidfd naming exactly the peer: SO_PEERPIDFD (Linux 6.5), else pidfd_open of its pid.
UniqueFd peer_pidfd(int fd, pid_t pid) {
  int pidfd = -1;
  socklen_t len = sizeof(pidfd);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) == 0 && pidfd >= 0) {
    return UniqueFd(pidfd);
  }
  return UniqueFd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
}

std::string sockaddr_via(int fd, sockaddr_un* addr, const char* name) {
  std::string via = "/proc/self/fd/" + std::to_string(fd);
  if (name != nullptr) via += std::string("/") + name;
  *addr = sockaddr_un{};
  addr->sun_family = AF_UNIX;
  std::memcpy(addr->sun_path, via.c_str(), via.size());
  return via;
}

}  // namespace

std::string cgroup_v2_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("0::", 0) == 0) return line.substr(3);
  }
  return {};
}

std::string check_peer(int fd, const PeerRules& rules) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return "SO_PEERCRED: " + errno_text();
  }
  const std::string who = "pid " + std::to_string(cred.pid) + " uid " + std::to_string(cred.uid);
  if (cred.uid != rules.uid) {
    return who + ": not the owner's uid " + std::to_string(rules.uid);
  }
  if (cred.pid <= 0) return who + ": in a PID namespace this one cannot see";
  UniqueFd pidfd = peer_pidfd(fd, cred.pid);
  if (!pidfd) return who + ": pidfd: " + errno_text();
  const std::string proc = "/proc/" + std::to_string(cred.pid);
  for (const char* ns : {"pid", "mnt"}) {
    auto mine = ns_id(std::string("/proc/self/ns/") + ns);
    auto theirs = ns_id(proc + "/ns/" + ns);
    if (!theirs) return who + ": cannot read its " + ns + " namespace: " + errno_text();
    if (!mine || *mine != *theirs) return who + ": in another " + ns + " namespace (a sandbox's)";
  }
  if (rules.sandbox_session > 0 && getsid(cred.pid) == rules.sandbox_session) {
    return who + ": in the sandbox's session";
  }
  if (!rules.sandbox_cgroup.empty()) {
    const std::string cg = cgroup_v2_of(cred.pid);
    if (cg == rules.sandbox_cgroup || cg.rfind(rules.sandbox_cgroup + "/", 0) == 0) {
      return who + ": in the sandbox's cgroup";
    }
  }
  // Still the same process: its pid was not reused while the above was read.
  if (syscall(SYS_pidfd_send_signal, pidfd.get(), 0, nullptr, 0) != 0) return who + ": gone";
  return {};
}

std::variant<ControlServer, std::string> ControlServer::listen_in(int dir_fd, const char* name,
                                                                  const std::string& id) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return "socket: " + errno_text();
  unlinkat(dir_fd, name, 0);  // a stale one from a supervisor that was killed
  sockaddr_un addr;
  sockaddr_via(dir_fd, &addr, name);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return std::string("bind ") + name + ": " + errno_text();
  }
  if (listen(fd.get(), 16) != 0) return "listen: " + errno_text();
  return ControlServer(std::move(fd), id);
}

void ControlServer::add_poll_fds(std::vector<pollfd>* fds) const {
  fds->push_back({listener_.get(), POLLIN, 0});
  for (const auto& c : clients_) {
    short events = c.close_after_flush && c.drain_until == 0 ? 0 : POLLIN;
    if (!c.out.empty()) events |= POLLOUT;
    fds->push_back({c.fd.get(), events, 0});
  }
}

void ControlServer::handle(const std::vector<pollfd>& fds, size_t first, Handler& handler) {
  // The clients polled are the first ones of clients_ (accepts only append).
  const size_t polled = std::min(clients_.size(), fds.size() - first - 1);
  for (size_t i = 0; i < polled; ++i) {
    const pollfd& p = fds[first + 1 + i];
    Client& c = clients_[i];
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) serve(c, handler);
    if (c.fd && (p.revents & POLLOUT)) flush(c);
  }
  if (fds[first].revents & POLLIN) accept_clients();
  const int64_t now = now_ms();
  std::erase_if(clients_, [now](const Client& c) {
    return !c.fd || (c.drain_until != 0 && now >= c.drain_until);
  });
}

void ControlServer::accept_clients() {
  while (true) {
    UniqueFd fd(accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) return;  // EAGAIN, or a connection that went away
    std::string why = check_peer(fd.get(), rules_);
    const size_t served = static_cast<size_t>(std::count_if(
        clients_.begin(), clients_.end(), [](const Client& c) { return !c.close_after_flush; }));
    if (why.empty() && served >= kControlMaxClients) {
      why = "already " + std::to_string(kControlMaxClients) + " connections";
    }
    Client client;
    client.fd = std::move(fd);
    if (!why.empty()) {
      log_warning(id_, "control socket: refused " + why);
      // The refusal is sent and the connection drained like any last line, within a bound on
      // how many may be closing at once.
      if (clients_.size() >= 2 * kControlMaxClients) continue;
      send(client, json::serialize(json::object{{"ok", false}, {"error", "refused: " + why}}));
      client.close_after_flush = true;
      flush(client);
      if (!client.fd) continue;
    }
    clients_.push_back(std::move(client));
  }
}

void ControlServer::drain(Client& c) {
  char buf[4096];
  while (c.fd) {
    ssize_t n = recv(c.fd.get(), buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) c.fd.reset();  // its EOF: now it can be closed with nothing lost
  }
}

void ControlServer::serve(Client& c, Handler& handler) {
  if (c.drain_until != 0) return drain(c);
  char buf[4096];
  while (c.fd && !c.close_after_flush) {
    ssize_t n = recv(c.fd.get(), buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n <= 0) {
      c.fd.reset();  // the peer closed: nothing more to send it
      return;
    }
    c.in.append(buf, static_cast<size_t>(n));
    size_t nl;
    while (c.fd && !c.close_after_flush && (nl = c.in.find('\n')) != std::string::npos) {
      std::string line = c.in.substr(0, nl);
      c.in.erase(0, nl + 1);
      if (line.size() > kControlMaxRequest) {
        send(c, json::serialize(json::object{
                    {"ok", false},
                    {"error",
                     "request longer than " + std::to_string(kControlMaxRequest) + " bytes"}}));
        c.close_after_flush = true;
        break;
      }
      answer(c, line, handler);
    }
    if (c.in.size() > kControlMaxRequest) {
      send(c,
           json::serialize(json::object{
               {"ok", false},
               {"error", "request longer than " + std::to_string(kControlMaxRequest) + " bytes"}}));
      c.close_after_flush = true;
      c.in.clear();
    }
  }
  if (c.fd) flush(c);
}

void ControlServer::answer(Client& c, const std::string& line, Handler& handler) {
  auto error = [&](const std::string& what) {
    send(c, json::serialize(json::object{{"ok", false}, {"error", what}}));
  };
  if (++c.requests > kControlMaxRequests) {
    error("more than " + std::to_string(kControlMaxRequests) + " requests on one connection");
    c.close_after_flush = true;
    return;
  }
  boost::system::error_code ec;
  json::value v = json::parse(line, ec);
  if (ec || !v.is_object()) return error("not a JSON object");
  const json::object& req = v.as_object();
  const json::value* op = req.if_contains("op");
  if (op == nullptr || !op->is_string()) return error("op: missing, or not a string");
  for (const auto& kv : req) {
    if (kv.key() != "op" && kv.key() != "follow" && kv.key() != "timeout_ms") {
      return error("unknown key " + std::string(kv.key()));
    }
  }
  const std::string name(op->as_string());
  if (name == "state") {
    json::object out = handler.state();
    out["ok"] = true;
    send(c, json::serialize(out));
  } else if (name == "events") {
    const json::value* follow = req.if_contains("follow");
    if (follow != nullptr && !follow->is_bool()) return error("follow: not a boolean");
    for (const auto& e : events_) send(c, e);
    if (follow != nullptr && follow->as_bool() && !exited_) {
      c.follow = true;
    } else {
      c.close_after_flush = true;
    }
  } else if (name == "stop") {
    std::optional<uint32_t> timeout;
    if (const json::value* t = req.if_contains("timeout_ms")) {
      if (!t->is_int64() || t->as_int64() < 0 || t->as_int64() > kMaxStopTimeoutMs) {
        return error("timeout_ms: not a number in 0..3600000");
      }
      timeout = static_cast<uint32_t>(t->as_int64());
    }
    std::string why = handler.stop(timeout);
    if (!why.empty()) return error(why);
    json::object out = handler.state();
    out["ok"] = true;
    send(c, json::serialize(out));
  } else if (name == "wait") {
    if (exited_) {
      send(c, events_.back());
      c.close_after_flush = true;
    } else {
      c.waiting = true;
    }
  } else {
    error("unknown op " + name);
  }
}

void ControlServer::send(Client& c, const std::string& line) {
  if (!c.fd) return;
  if (c.out.size() + line.size() + 1 > kControlMaxPending) {
    log_warning(id_, "control socket: a reader that does not read was dropped");
    c.fd.reset();
    return;
  }
  c.out += line;
  c.out += '\n';
}

void ControlServer::flush(Client& c) {
  while (c.fd && !c.out.empty()) {
    ssize_t n = ::send(c.fd.get(), c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) {
      c.fd.reset();
      return;
    }
    c.out.erase(0, static_cast<size_t>(n));
  }
  if (c.fd && c.out.empty() && c.close_after_flush && c.drain_until == 0) {
    shutdown(c.fd.get(), SHUT_WR);
    c.drain_until = now_ms() + kControlDrainMs;
    drain(c);
  }
}

void ControlServer::publish(const std::string& line, bool exited) {
  events_.push_back(line);
  if (exited) exited_ = true;
  for (auto& c : clients_) {
    if (c.follow || (exited && c.waiting)) send(c, line);
    if (exited && (c.follow || c.waiting)) c.close_after_flush = true;
    flush(c);
  }
  std::erase_if(clients_, [](const Client& c) { return !c.fd; });
}

void ControlServer::flush_and_close(int budget_ms) {
  const int64_t deadline = now_ms() + budget_ms;
  while (true) {
    std::vector<pollfd> fds;
    for (auto& c : clients_) {
      if (c.fd && !c.out.empty()) fds.push_back({c.fd.get(), POLLOUT, 0});
    }
    const int64_t left = deadline - now_ms();
    if (fds.empty() || left <= 0) break;
    if (poll(fds.data(), fds.size(), static_cast<int>(left)) <= 0) break;
    for (auto& c : clients_) flush(c);
  }
  clients_.clear();
  listener_.reset();
}

namespace {

// Whether `pid` holds the flock write lock on the file `lock` (by /proc/locks, which names the
// process that took each lock; lines with "->" are waiters, not holders).
bool holds_lock(pid_t pid, const struct stat& lock) {
  char id[64];
  std::snprintf(id, sizeof(id), "%02x:%02x:%lu", major(lock.st_dev), minor(lock.st_dev),
                static_cast<unsigned long>(lock.st_ino));
  std::ifstream in("/proc/locks");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string index, kind, mode, access, owner, file;
    if (!(words >> index >> kind >> mode >> access >> owner >> file)) continue;
    if (kind == "FLOCK" && access == "WRITE" && owner == std::to_string(pid) && file == id) {
      return true;
    }
  }
  return false;
}

// The client's check of a control socket's server: a process of the caller's uid that holds
// the sandbox's lock, which only its live supervisor can (a VMM of the same uid that swapped in
// a socket of its own cannot take it while the supervisor lives, nor after, without the files
// saying so).
std::string check_server(int fd, int dir_fd) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return "SO_PEERCRED: " + errno_text();
  }
  const std::string who = "pid " + std::to_string(cred.pid) + " uid " + std::to_string(cred.uid);
  if (cred.uid != geteuid()) return who + ": not this user's";
  struct stat lock;
  if (fstatat(dir_fd, kLockName, &lock, AT_SYMLINK_NOFOLLOW) != 0) {
    return std::string("stat ") + kLockName + ": " + errno_text();
  }
  if (cred.pid <= 0 || !holds_lock(cred.pid, lock)) return who + ": does not hold the lock";
  return {};
}

}  // namespace

std::variant<UniqueFd, std::string> connect_control(int dir_fd) {
  UniqueFd at(openat(dir_fd, kControlName, O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!at) return std::string("open ") + kControlName + ": " + errno_text();
  struct stat st;
  if (fstat(at.get(), &st) != 0 || !S_ISSOCK(st.st_mode)) {
    return std::string(kControlName) + " is not a socket";
  }
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return "socket: " + errno_text();
  sockaddr_un addr;
  sockaddr_via(at.get(), &addr, nullptr);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return std::string("connect ") + kControlName + ": " + errno_text();
  }
  if (std::string why = check_server(fd.get(), dir_fd); !why.empty()) {
    return std::string(kControlName) + " is not served by this sandbox's supervisor: " + why;
  }
  return fd;
}

std::string send_request(int fd, const json::object& request) {
  std::string line = json::serialize(request) + "\n";
  size_t done = 0;
  while (done < line.size()) {
    ssize_t n = ::send(fd, line.data() + done, line.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return "send: " + errno_text();
    done += static_cast<size_t>(n);
  }
  return {};
}

std::optional<std::string> read_line(int fd, std::string* buffer, size_t limit) {
  while (true) {
    size_t nl = buffer->find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer->substr(0, nl);
      buffer->erase(0, nl + 1);
      return line;
    }
    if (buffer->size() > limit) return std::nullopt;
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::nullopt;
    buffer->append(buf, static_cast<size_t>(n));
  }
}

}  // namespace sbx::supervisor
