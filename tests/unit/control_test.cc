// SPDX-License-Identifier: Apache-2.0
// The control socket's server against clients in the same process, over a real unix socket:
// every request, the replay and follow of events, a wait answered at `exited`, the bounds
// (size, count, unread output) and a refused peer, each leaving the server serving.
#include "supervisor/control.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "supervisor/state_dir.h"

namespace sbx::supervisor {
namespace {

namespace json = boost::json;

class FakeHandler : public ControlServer::Handler {
 public:
  json::object state() override { return json::object{{"state", stopping ? "stopping" : "ready"}}; }
  std::string stop(std::optional<uint32_t> timeout_ms) override {
    stopping = true;
    budget = timeout_ms;
    ++stops;
    return {};
  }
  bool stopping = false;
  std::optional<uint32_t> budget;
  int stops = 0;
};

class ControlServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sbx-control-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_path_ = tmpl;
    dir_.reset(open(tmpl, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    auto made = ControlServer::listen_in(dir_.get(), kControlName, "t");
    ASSERT_TRUE(std::holds_alternative<ControlServer>(made)) << std::get<std::string>(made);
    server_.emplace(std::move(std::get<ControlServer>(made)));
    server_->set_rules(PeerRules{getuid(), 0, {}});
  }
  void TearDown() override {
    server_.reset();
    unlinkat(dir_.get(), kControlName, 0);
    rmdir(dir_path_.c_str());
  }

  UniqueFd connect_client() {
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const std::string path = dir_path_ + "/" + kControlName;
    std::memcpy(addr.sun_path, path.c_str(), path.size());
    EXPECT_EQ(connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    return fd;
  }

  // Runs the server's side for a few rounds of its poll loop.
  void pump(int rounds = 5) {
    for (int i = 0; i < rounds; ++i) {
      std::vector<pollfd> fds;
      server_->add_poll_fds(&fds);
      poll(fds.data(), fds.size(), 20);
      server_->handle(fds, 0, handler_);
    }
  }

  static void send_text(int fd, const std::string& text) {
    ASSERT_EQ(send(fd, text.data(), text.size(), MSG_NOSIGNAL), static_cast<ssize_t>(text.size()));
  }

  // The lines the client has been sent so far, and whether the server closed.
  static std::vector<std::string> lines(int fd, bool* closed = nullptr) {
    std::string text;
    char buf[65536];
    bool eof = false;
    while (true) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 50) != 1) break;
      ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (n <= 0) {
        eof = true;
        break;
      }
      text.append(buf, static_cast<size_t>(n));
    }
    if (closed != nullptr) *closed = eof;
    std::vector<std::string> out;
    size_t at = 0, nl;
    while ((nl = text.find('\n', at)) != std::string::npos) {
      out.push_back(text.substr(at, nl - at));
      at = nl + 1;
    }
    return out;
  }

  std::string dir_path_;
  UniqueFd dir_;
  std::optional<ControlServer> server_;
  FakeHandler handler_;
};

TEST_F(ControlServerTest, StateStopAndUnknownRequests) {
  UniqueFd c = connect_client();
  send_text(c.get(),
            "{\"op\":\"state\"}\n{\"op\":\"stop\",\"timeout_ms\":1500}\n{\"op\":\"nope\"}\n");
  pump();
  auto got = lines(c.get());
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0], "{\"state\":\"ready\",\"ok\":true}");
  EXPECT_EQ(got[1], "{\"state\":\"stopping\",\"ok\":true}");
  EXPECT_EQ(got[2], "{\"ok\":false,\"error\":\"unknown op nope\"}");
  EXPECT_EQ(handler_.budget, 1500u);
  EXPECT_EQ(handler_.stops, 1);
}

TEST_F(ControlServerTest, EventsReplayedThenFollowedToExitedThenClosed) {
  server_->publish("{\"event\":\"started\"}", false);
  UniqueFd once = connect_client(), follower = connect_client(), waiter = connect_client();
  send_text(once.get(), "{\"op\":\"events\"}\n");
  send_text(follower.get(), "{\"op\":\"events\",\"follow\":true}\n");
  send_text(waiter.get(), "{\"op\":\"wait\"}\n");
  pump();
  bool closed = false;
  EXPECT_EQ(lines(once.get(), &closed), std::vector<std::string>{"{\"event\":\"started\"}"});
  EXPECT_TRUE(closed);
  EXPECT_EQ(lines(follower.get(), &closed), std::vector<std::string>{"{\"event\":\"started\"}"});
  EXPECT_FALSE(closed);
  EXPECT_TRUE(lines(waiter.get(), &closed).empty());
  EXPECT_FALSE(closed);
  server_->publish("{\"event\":\"ready\"}", false);
  server_->publish("{\"event\":\"exited\"}", true);
  pump();
  EXPECT_EQ(lines(follower.get(), &closed),
            (std::vector<std::string>{"{\"event\":\"ready\"}", "{\"event\":\"exited\"}"}));
  EXPECT_TRUE(closed);
  EXPECT_EQ(lines(waiter.get(), &closed), std::vector<std::string>{"{\"event\":\"exited\"}"});
  EXPECT_TRUE(closed);
}

TEST_F(ControlServerTest, AnOversizedRequestIsRefusedAndClosedAndTheServerServesOn) {
  UniqueFd c = connect_client();
  send_text(c.get(), std::string(kControlMaxRequest + 10, 'x') + "\n");
  pump();
  bool closed = false;
  auto got = lines(c.get(), &closed);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_NE(got[0].find("request longer than 4096 bytes"), std::string::npos);
  EXPECT_TRUE(closed);
  UniqueFd next = connect_client();
  send_text(next.get(), "{\"op\":\"state\"}\n");
  pump();
  EXPECT_EQ(lines(next.get()).size(), 1u);
}

TEST_F(ControlServerTest, MalformedRequestsGetAnErrorEachAndTheConnectionStays) {
  UniqueFd c = connect_client();
  send_text(c.get(),
            "[1]\n{\"op\":7}\n{\"op\":\"events\",\"follow\":\"yes\"}\n{\"op\":\"state\"}\n");
  pump();
  auto got = lines(c.get());
  ASSERT_EQ(got.size(), 4u);
  EXPECT_NE(got[0].find("not a JSON object"), std::string::npos);
  EXPECT_NE(got[1].find("op: missing, or not a string"), std::string::npos);
  EXPECT_NE(got[2].find("follow: not a boolean"), std::string::npos);
  EXPECT_EQ(got[3], "{\"state\":\"ready\",\"ok\":true}");
}

TEST_F(ControlServerTest, TheRequestCountIsBounded) {
  UniqueFd c = connect_client();
  std::string many;
  for (int i = 0; i <= kControlMaxRequests; ++i) many += "{\"op\":\"state\"}\n";
  send_text(c.get(), many);
  pump();
  bool closed = false;
  auto got = lines(c.get(), &closed);
  ASSERT_EQ(got.size(), static_cast<size_t>(kControlMaxRequests) + 1);
  EXPECT_NE(got.back().find("more than 32 requests"), std::string::npos);
  EXPECT_TRUE(closed);
}

// A follower that never reads is dropped once 64 KiB wait for it: publishing never blocks.
TEST_F(ControlServerTest, AReaderThatDoesNotReadIsDroppedNotWaitedFor) {
  UniqueFd slow = connect_client();
  int small = 4096;
  setsockopt(slow.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  send_text(slow.get(), "{\"op\":\"events\",\"follow\":true}\n");
  pump();
  const std::string big = "{\"event\":\"x\",\"pad\":\"" + std::string(8000, 'p') + "\"}";
  for (int i = 0; i < 200; ++i) server_->publish(big, false);  // returns: never blocks
  pump();
  // Dropped: the connection ends (EOF or reset) once what was buffered is read.
  char buf[65536];
  ssize_t n;
  size_t total = 0;
  while ((n = recv(slow.get(), buf, sizeof(buf), 0)) > 0) total += static_cast<size_t>(n);
  EXPECT_LT(total, 200 * big.size()) << "every event reached a reader that did not read";
  UniqueFd next = connect_client();
  send_text(next.get(), "{\"op\":\"state\"}\n");
  pump();
  EXPECT_EQ(lines(next.get()).size(), 1u);
}

TEST_F(ControlServerTest, APeerOfAnotherUidIsRefusedWithTheReason) {
  server_->set_rules(PeerRules{getuid() + 1, 0, {}});
  UniqueFd c = connect_client();
  send_text(c.get(), "{\"op\":\"stop\"}\n");
  pump();
  bool closed = false;
  auto got = lines(c.get(), &closed);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_NE(got[0].find("refused: pid " + std::to_string(getpid())), std::string::npos) << got[0];
  EXPECT_NE(got[0].find("not the owner's uid"), std::string::npos) << got[0];
  EXPECT_EQ(handler_.stops, 0);
  // Control: the owner's rules, the same request, acted on.
  server_->set_rules(PeerRules{getuid(), 0, {}});
  UniqueFd owner = connect_client();
  send_text(owner.get(), "{\"op\":\"stop\"}\n");
  pump();
  EXPECT_EQ(lines(owner.get()).size(), 1u);
  EXPECT_EQ(handler_.stops, 1);
}

}  // namespace
}  // namespace sbx::supervisor
