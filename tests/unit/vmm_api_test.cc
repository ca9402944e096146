// SPDX-License-Identifier: Apache-2.0
// The graceful-stop clients against in-process fake peers on a real unix socket: replies
// dribbled one byte at a time, peers that never answer (the deadline holds), refused
// connections, QMP events interleaved with replies, and non-2xx HTTP answers; and the checks
// that keep a request inside the sandbox: no symlink followed, the listener in the sandbox's
// session, a socket and nothing else.
#include "supervisor/vmm_api.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>

namespace sbx::supervisor {
namespace {

// A one-connection unix socket server running `serve(conn_fd)` on its own thread.
class FakePeer {
 public:
  explicit FakePeer(std::function<void(int)> serve) {
    char tmpl[] = "/tmp/sbx-api-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    path_ = dir_ + "/api.sock";
    listener_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path_.c_str(), path_.size());
    EXPECT_EQ(bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(listen(listener_, 4), 0);
    thread_ = std::thread([this, serve] {
      int conn = accept(listener_, nullptr, nullptr);
      if (conn >= 0) {
        serve(conn);
        close(conn);
      }
    });
  }
  ~FakePeer() {
    shutdown(listener_, SHUT_RDWR);
    thread_.join();
    close(listener_);
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  std::string dir_, path_;
  int listener_ = -1;
  std::thread thread_;
};

// The session the tests name as the sandbox's: this process's own, which the fake peers share.
// Where its leader is outside this PID namespace (getsid gives 0, as under a CI runner that
// starts the tests in a PID namespace of their own), the process first makes a session of its
// own, as the supervisor makes one for each sandbox.
pid_t own_session() {
  static const pid_t session = [] {
    pid_t s = getsid(0);
    return s > 0 ? s : setsid();
  }();
  EXPECT_GT(session, 0) << "no visible session: " << std::strerror(errno);
  return session;
}

std::string read_request(int fd) {
  std::string buf;
  char c;
  while (buf.find("\r\n\r\n") == std::string::npos && read(fd, &c, 1) == 1) buf += c;
  size_t cl = buf.find("Content-Length: ");
  size_t len = cl == std::string::npos ? 0 : std::strtoul(buf.c_str() + cl + 16, nullptr, 10);
  std::string body(len, '\0');
  size_t got = 0;
  while (got < len) {
    ssize_t n = read(fd, body.data() + got, len - got);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  return buf + body;
}

void dribble(int fd, const std::string& text) {
  for (char c : text) {
    // The client may close as soon as it has what it needs: no SIGPIPE for the rest.
    if (send(fd, &c, 1, MSG_NOSIGNAL) != 1) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

std::string read_line(int fd) {
  std::string line;
  char c;
  while (read(fd, &c, 1) == 1 && c != '\n') line += c;
  return line;
}

TEST(HttpRequest, SendsTheRequestAndAcceptsA2xxAnswerReadByteByByte) {
  std::string seen;
  {
    FakePeer peer([&](int fd) {
      seen = read_request(fd);
      dribble(fd, "HTTP/1.1 204 No Content\r\n\r\n");
    });
    ApiResult r = http_request(peer.path(), own_session(), "PUT", "/actions",
                               "{\"action_type\":\"SendCtrlAltDel\"}", 2000);
    EXPECT_TRUE(r.ok) << r.detail;
    EXPECT_EQ(r.detail, "HTTP/1.1 204 No Content");
  }
  EXPECT_TRUE(seen.starts_with("PUT /actions HTTP/1.1\r\n")) << seen;
  EXPECT_NE(seen.find("Content-Length: 32\r\n"), std::string::npos) << seen;
  EXPECT_TRUE(seen.ends_with("{\"action_type\":\"SendCtrlAltDel\"}")) << seen;
}

TEST(HttpRequest, Non2xxIsAFailure) {
  FakePeer peer([](int fd) {
    read_request(fd);
    dribble(fd, "HTTP/1.1 400 Bad Request\r\n\r\n");
  });
  ApiResult r = http_request(peer.path(), own_session(), "PUT", "/api/v1/vmm.shutdown", "", 2000);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.detail, "HTTP/1.1 400 Bad Request");
}

TEST(HttpRequest, APeerThatNeverAnswersCostsNoMoreThanTheDeadline) {
  FakePeer peer([](int fd) {
    read_request(fd);
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
  });
  auto start = std::chrono::steady_clock::now();
  ApiResult r = http_request(peer.path(), own_session(), "PUT", "/actions", "{}", 150);
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.detail, "timed out");
  EXPECT_LT(took, std::chrono::milliseconds(500));  // loose: the deadline was 150 ms
}

TEST(HttpRequest, EofBeforeAStatusLineIsAFailure) {
  FakePeer peer([](int fd) {
    read_request(fd);
    dribble(fd, "HTTP/1.1 2");
  });
  EXPECT_FALSE(http_request(peer.path(), own_session(), "PUT", "/actions", "{}", 2000).ok);
}

TEST(HttpRequest, MissingSocketFailsAtOnce) {
  ApiResult r = http_request("/nonexistent/sbx.sock", own_session(), "PUT", "/actions", "", 2000);
  EXPECT_FALSE(r.ok);
  EXPECT_FALSE(r.refused);  // absent, not someone else's
  EXPECT_NE(r.detail.find("open /nonexistent/sbx.sock"), std::string::npos) << r.detail;
}

// The VMM may write its socket's directory: a symlink there to a socket that does accept (a
// sibling's) is not followed, and nothing reaches that socket.
TEST(HttpRequest, ASymlinkToAnotherSocketIsRefusedAndNothingIsSent) {
  bool connected = false;
  std::string link;
  {
    FakePeer peer([&](int) { connected = true; });
    link = peer.path() + ".link";
    ASSERT_EQ(symlink(peer.path().c_str(), link.c_str()), 0);
    ApiResult r = http_request(link, own_session(), "PUT", "/actions", "{}", 2000);
    EXPECT_FALSE(r.ok);
    EXPECT_TRUE(r.refused);
    EXPECT_NE(r.detail.find("a symlink: not followed"), std::string::npos) << r.detail;
    // Control: the same socket by its own path is served.
    EXPECT_TRUE(api_socket_accepts(peer.path(), own_session(), 2000, &r.detail)) << r.detail;
    unlink(link.c_str());  // before the peer removes its directory
  }
  EXPECT_TRUE(connected);  // by the control only: a peer takes one connection
}

// A directory on the way that is a symlink is refused the same way.
TEST(HttpRequest, ASymlinkedParentIsRefused) {
  FakePeer peer([](int) {});
  const std::string dir_link = peer.path() + ".d";
  const std::string dir = peer.path().substr(0, peer.path().rfind('/'));
  ASSERT_EQ(symlink(dir.c_str(), dir_link.c_str()), 0);
  std::string why;
  EXPECT_FALSE(api_socket_accepts(dir_link + "/api.sock", own_session(), 2000, &why));
  EXPECT_NE(why.find("a symlink: not followed"), std::string::npos) << why;
  unlink(dir_link.c_str());
  EXPECT_TRUE(api_socket_accepts(peer.path(), own_session(), 2000, &why)) << why;  // unblocks it
}

// A socket served from another session (not the sandbox's) gets a connection but no request.
TEST(HttpRequest, APeerOfAnotherSessionIsRefusedAndNothingIsSent) {
  std::string seen = "unset";
  {
    FakePeer peer([&](int fd) { seen = read_request(fd); });
    const pid_t other = own_session() == 1 ? 2 : 1;
    ApiResult r = http_request(peer.path(), other, "PUT", "/actions", "{}", 2000);
    EXPECT_FALSE(r.ok);
    EXPECT_TRUE(r.refused);
    EXPECT_NE(r.detail.find("not by a process of this sandbox"), std::string::npos) << r.detail;
    EXPECT_NE(r.detail.find("pid " + std::to_string(getpid())), std::string::npos) << r.detail;
  }
  EXPECT_EQ(seen, "");  // the connection closed with nothing sent
}

// Not a socket: refused before any connect.
TEST(HttpRequest, AFileInPlaceOfTheSocketIsRefused) {
  char tmpl[] = "/tmp/sbx-api-file-XXXXXX";
  int fd = mkstemp(tmpl);
  ASSERT_GE(fd, 0);
  close(fd);
  ApiResult r = qmp_command(tmpl, own_session(), "quit", 2000);
  unlink(tmpl);
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(r.refused);
  EXPECT_NE(r.detail.find("is not a socket"), std::string::npos) << r.detail;
}

TEST(QmpCommand, HandshakeThenQuitWithEventsInBetween) {
  std::string commands;
  {
    FakePeer peer([&](int fd) {
      dribble(fd, "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n");
      commands += read_line(fd) + "|";
      dribble(fd, "{\"event\": \"NIC_RX_FILTER_CHANGED\"}\r\n{\"return\": {}}\r\n");
      commands += read_line(fd);
      dribble(fd, "{\"return\": {}}\r\n");
    });
    ApiResult r = qmp_command(peer.path(), own_session(), "quit", 2000);
    EXPECT_TRUE(r.ok) << r.detail;
  }
  EXPECT_EQ(commands, "{\"execute\":\"qmp_capabilities\"}\r|{\"execute\":\"quit\"}\r");
}

TEST(QmpCommand, QuitThatClosesBeforeReplyingCounts) {
  FakePeer peer([](int fd) {
    dribble(fd, "{\"QMP\": {}}\r\n");
    read_line(fd);
    dribble(fd, "{\"return\": {}}\r\n");
    read_line(fd);
  });
  EXPECT_TRUE(qmp_command(peer.path(), own_session(), "quit", 2000).ok);
}

TEST(QmpCommand, ErrorReplyIsAFailure) {
  FakePeer peer([](int fd) {
    dribble(fd, "{\"QMP\": {}}\r\n");
    read_line(fd);
    dribble(fd, "{\"return\": {}}\r\n");
    read_line(fd);
    dribble(fd, "{\"error\": {\"class\": \"GenericError\"}}\r\n");
  });
  ApiResult r = qmp_command(peer.path(), own_session(), "system_powerdown", 2000);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.detail.find("GenericError"), std::string::npos);
}

TEST(QmpCommand, NoGreetingIsAFailureWithinTheDeadline) {
  FakePeer peer([](int) { std::this_thread::sleep_for(std::chrono::milliseconds(600)); });
  auto start = std::chrono::steady_clock::now();
  ApiResult r = qmp_command(peer.path(), own_session(), "quit", 150);
  EXPECT_FALSE(r.ok);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(500));
}

TEST(QmpCommand, NotQmpIsRefused) {
  FakePeer peer([](int fd) { dribble(fd, "HTTP/1.1 200 OK\r\n"); });
  ApiResult r = qmp_command(peer.path(), own_session(), "quit", 2000);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.detail.find("greeting"), std::string::npos) << r.detail;
}

}  // namespace
}  // namespace sbx::supervisor
