// SPDX-License-Identifier: Apache-2.0
// The control socket, DIR/<id>/control.sock: JSON lines between a live supervisor and its
// owner's commands (`events --follow`, `stop`, `wait`), documented in docs/control.md. Both ends
// check the other: the server takes only its own uid's processes outside every sandbox, and a
// client talks only to the process that holds the sandbox's lock.
#pragma once

#include <poll.h>
#include <sys/types.h>

#include <boost/json.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/unique_fd.h"

namespace sbx::supervisor {

// Bounds on what a client can make the supervisor hold.
inline constexpr size_t kControlMaxRequest = 4096;       // bytes in one request line
inline constexpr int kControlMaxRequests = 32;           // requests on one connection
inline constexpr size_t kControlMaxClients = 16;         // connections at once
inline constexpr size_t kControlMaxPending = 64 * 1024;  // unsent bytes before a reader is dropped

// Who may talk to a supervisor. A sandbox's processes have the caller's uid, so the uid alone
// proves nothing: the peer must also share this process's PID and mount namespaces (every
// sandbox has a mount namespace of its own, and by default a PID namespace), and be neither in
// the sandbox's session nor in its cgroup.
struct PeerRules {
  uid_t uid = 0;
  pid_t sandbox_session = 0;   // 0: none yet
  std::string sandbox_cgroup;  // as /proc/PID/cgroup's "0::" line names it; empty: none
};

// "" when the peer of the connected unix socket `fd` passes `rules`, else why not (with its pid).
std::string check_peer(int fd, const PeerRules& rules);

// The "0::" cgroup of `pid` as this process sees it, or "".
std::string cgroup_v2_of(pid_t pid);

class ControlServer {
 public:
  // What the requests act on: the supervisor's loop.
  class Handler {
   public:
    virtual ~Handler() = default;
    virtual boost::json::object state() = 0;
    // Starts the stop ladder (budget `timeout_ms` if given); "" or why it cannot.
    virtual std::string stop(std::optional<uint32_t> timeout_ms) = 0;
  };

  // Binds and listens at `name` under the directory `dir_fd` (through its /proc/self/fd link,
  // so the path's length does not matter), non-blocking, close-on-exec.
  static std::variant<ControlServer, std::string> listen_in(int dir_fd, const char* name,
                                                            const std::string& id);

  ControlServer(ControlServer&&) = default;
  ControlServer& operator=(ControlServer&&) = default;

  void set_rules(PeerRules rules) { rules_ = std::move(rules); }

  // The fds to poll (appended to `fds`) and, after poll, their handling: `fds[first..]` are the
  // ones this call appended last time.
  void add_poll_fds(std::vector<pollfd>* fds) const;
  void handle(const std::vector<pollfd>& fds, size_t first, Handler& handler);

  // An event the supervisor wrote: kept for replay, sent to followers; `exited` ends every
  // follow and answers every wait.
  void publish(const std::string& line, bool exited);

  // Before the supervisor exits: what is queued goes out within `budget_ms`, then every
  // connection closes.
  void flush_and_close(int budget_ms);

 private:
  struct Client {
    UniqueFd fd;
    std::string in, out;
    int requests = 0;
    bool follow = false, waiting = false, close_after_flush = false;
    // Once its last line is out: the write side shut and what it still sends read and
    // discarded until its EOF or this deadline. Closing on unread input would reset the
    // connection and lose that last line (an error, a refusal) on the way.
    int64_t drain_until = 0;
  };
  ControlServer(UniqueFd listener, std::string id)
      : listener_(std::move(listener)), id_(std::move(id)) {}
  void accept_clients();
  void serve(Client& c, Handler& handler);
  void answer(Client& c, const std::string& line, Handler& handler);
  void send(Client& c, const std::string& line);
  void flush(Client& c);
  static void drain(Client& c);

  UniqueFd listener_;
  std::string id_;
  PeerRules rules_;
  std::vector<Client> clients_;
  std::vector<std::string> events_;
  bool exited_ = false;
};

// A command's connection to a live supervisor: DIR/<id>/control.sock reached from `dir_fd`
// (DIR/<id>) with no symlink followed, and served by a process of the caller's uid that holds
// DIR/<id>/lock (the live supervisor, not a VMM that put a socket of its own there).
std::variant<UniqueFd, std::string> connect_control(int dir_fd);

// Sends one request line; "" or why not.
std::string send_request(int fd, const boost::json::object& request);
// The next line from `fd` (a socket or a pipe, blocking), or nullopt at EOF or past `limit`
// bytes.
std::optional<std::string> read_line(int fd, std::string* buffer, size_t limit = 1 << 20);

}  // namespace sbx::supervisor
