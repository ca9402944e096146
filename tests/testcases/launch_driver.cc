// SPDX-License-Identifier: Apache-2.0
// sbx-test-launch: a minimal caller of sbx-nsexec for the helper's integration tests. It speaks
// the wire protocol the way sbx-supervisor does (socketpair, helper end at fd 3, one LAUNCH,
// read to EOF) and prints what happened as JSON lines on stdout:
//   {"event":"launch","helper_pid":N,"vmm_pid":N,"error":null|{"step":S,"errno":E,"detail":D}}
//   {"event":"exit","pid":N,"code":C|null,"signal":S|null}   (unless --no-wait)
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "common/pidfd.h"
#include "common/protocol.h"
#include "common/unique_fd.h"
#include "tests/integration/time_scale.h"

namespace {

using sbx::UniqueFd;
namespace protocol = sbx::protocol;

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: sbx-test-launch --helper PATH (--raw FILE | --empty | --id ID --vmm PATH\n"
               "       --sandbox-dir DIR [--netns NAME] [--link NAME=TARGET]... [--env K=V]...\n"
               "       [--pidns] [--slave] [--pass-file PATH:TARGETFD]... [--files] [--jail]\n"
               "       [--device PATH]... [--read-only PATH]... [--read-write PATH]...\n"
               "       [--api-socket-dir DIR]) [--no-wait]\n"
               "       [-- VMM ARGS...]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::string helper, raw_file;
  bool wait_for_exit = true, send_empty = false;
  protocol::LaunchRequest req;
  std::vector<UniqueFd> pass_fds;
  int i = 1;
  for (; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage();
      return argv[++i];
    };
    if (a == "--") {
      ++i;
      break;
    } else if (a == "--helper") {
      helper = value();
    } else if (a == "--raw") {
      raw_file = value();
    } else if (a == "--empty") {
      send_empty = true;
    } else if (a == "--id") {
      req.id = value();
    } else if (a == "--vmm") {
      req.vmm = value();
    } else if (a == "--sandbox-dir") {
      req.sandbox_dir = value();
    } else if (a == "--netns") {
      req.netns = value();
    } else if (a == "--link") {
      std::string v = value();
      size_t eq = v.find('=');
      if (eq == std::string::npos) usage();
      req.links.push_back({v.substr(0, eq), v.substr(eq + 1)});
    } else if (a == "--env") {
      req.env.push_back(value());
    } else if (a == "--pidns") {
      req.pid_namespace = true;
    } else if (a == "--slave") {
      req.propagation_slave = true;
    } else if (a == "--pass-file") {
      std::string v = value();
      size_t colon = v.rfind(':');
      if (colon == std::string::npos) usage();
      UniqueFd fd(open(v.substr(0, colon).c_str(), O_RDONLY | O_CLOEXEC));
      if (!fd) {
        std::perror("open --pass-file");
        return 2;
      }
      pass_fds.push_back(std::move(fd));
      req.pass_fd_targets.push_back(std::atoi(v.substr(colon + 1).c_str()));
    } else if (a == "--files") {
      req.files = true;
    } else if (a == "--jail") {
      req.files = true;
      req.jail = true;
    } else if (a == "--device") {
      req.files = true;
      req.devices.push_back(value());
    } else if (a == "--read-only") {
      req.files = true;
      req.read_only.push_back(value());
    } else if (a == "--read-write") {
      req.files = true;
      req.read_write.push_back(value());
    } else if (a == "--api-socket-dir") {
      req.files = true;
      req.api_socket_dir = value();
    } else if (a == "--no-wait") {
      wait_for_exit = false;
    } else {
      usage();
    }
  }
  for (; i < argc; ++i) req.args.emplace_back(argv[i]);
  if (helper.empty()) usage();

  std::vector<uint8_t> bytes;
  if (!raw_file.empty()) {
    std::ifstream in(raw_file, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  } else if (!send_empty) {
    auto encoded = protocol::encode(req);
    if (!encoded.ok()) {
      std::fprintf(stderr, "encode: %s\n", encoded.status().message().c_str());
      return 2;
    }
    bytes = encoded.take();
  }

  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    std::perror("socketpair");
    return 2;
  }
  UniqueFd ours(sv[0]), theirs(sv[1]);
  std::fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) {
    std::perror("fork");
    return 2;
  }
  if (pid == 0) {
    if (dup2(theirs.get(), 3) != 3) _exit(120);  // dup2 clears CLOEXEC on fd 3
    char* child_argv[] = {const_cast<char*>(helper.c_str()), nullptr};
    execv(helper.c_str(), child_argv);
    _exit(121);
  }
  theirs.reset();

  if (!raw_file.empty()) {
    // A raw message may be deliberately malformed or oversize: send it exactly as it is.
    if (send(ours.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL) < 0) {
      std::fprintf(stderr, "send: %s\n", std::strerror(errno));
    }
  } else if (!send_empty) {
    std::vector<int> raw_fds;
    for (auto& fd : pass_fds) raw_fds.push_back(fd.get());
    auto st = protocol::send_datagram(ours.get(), bytes, raw_fds, sbx::Step::kReadRequest);
    if (!st.ok()) std::fprintf(stderr, "send: %s\n", st.message().c_str());
  } else {
    // --empty: a zero-length datagram, which the helper reads as "no request".
    (void)send(ours.get(), "", 0, MSG_NOSIGNAL);
  }
  pass_fds.clear();

  pid_t vmm_pid = pid;
  int landlock_abi = -1;  // -1: no confinement report came
  pid_t init_pid = -1;    // PID namespace: the namespace init (our child, CLONE_PARENT)
  bool started = false;   // PID namespace: VMM_STARTED came
  std::string error = "null";
  while (true) {
    auto d = protocol::receive_datagram(ours.get(), sbx::it::patience_ms(30000), 1,
                                        sbx::Step::kReadRequest);
    if (!d.ok()) {
      error = "{\"step\":\"driver\",\"errno\":" + std::to_string(d.status().err()) +
              ",\"detail\":" + json_string(d.status().message()) + "}";
      break;
    }
    if (d.value().eof) break;
    auto msg = protocol::decode(d.value().bytes, sbx::Step::kReadRequest);
    if (!msg.ok()) {
      error = "{\"step\":\"driver\",\"errno\":" + std::to_string(msg.status().err()) +
              ",\"detail\":" + json_string(msg.status().message()) + "}";
      break;
    }
    if (std::holds_alternative<protocol::VmmStarted>(msg.value())) {
      // PID namespace: the init executed the VMM; its pidfd names the VMM's pid as seen here.
      if (d.value().fds.size() == 1) vmm_pid = sbx::pid_of_pidfd(d.value().fds[0].get());
      started = true;
      (void)protocol::send_datagram(ours.get(), protocol::encode(protocol::StartedAck{}), {},
                                    sbx::Step::kReadRequest);
      break;
    }
    if (auto* e = std::get_if<protocol::ErrorReport>(&msg.value())) {
      error = "{\"step\":" + json_string(std::string(sbx::step_name(e->step))) +
              ",\"errno\":" + std::to_string(e->err) + ",\"detail\":" + json_string(e->detail) +
              "}";
    } else if (auto* p = std::get_if<protocol::PidReport>(&msg.value())) {
      init_pid = p->pid;
      vmm_pid = p->pid;
    } else if (auto* c = std::get_if<protocol::ConfinementReport>(&msg.value())) {
      landlock_abi = static_cast<int>(c->landlock_abi);
    }
  }
  std::printf(
      "{\"event\":\"launch\",\"helper_pid\":%d,\"vmm_pid\":%d,\"init_pid\":%d,"
      "\"landlock_abi\":%d,\"error\":%s}\n",
      pid, vmm_pid, init_pid, landlock_abi, error.c_str());
  std::fflush(stdout);
  if (!wait_for_exit) return 0;

  // Reap the helper; in PID-namespace mode the VMM is also our child (CLONE_PARENT).
  int vmm_status = 0;
  bool vmm_reaped = false;
  while (true) {
    int status;
    pid_t r = waitpid(-1, &status, 0);
    if (r < 0) break;
    if (r == (init_pid > 0 ? init_pid : vmm_pid)) {
      vmm_status = status;
      vmm_reaped = true;
    }
  }
  // The init reported the VMM's own status before it exited.
  if (started && vmm_reaped) {
    for (int tries = 0; tries < 4; ++tries) {
      auto d = protocol::receive_datagram(ours.get(), 100, 0, sbx::Step::kReadRequest);
      if (!d.ok() || d.value().eof) break;
      auto msg = protocol::decode(d.value().bytes, sbx::Step::kReadRequest);
      if (!msg.ok()) break;
      if (auto* e = std::get_if<protocol::VmmExit>(&msg.value())) {
        vmm_status = static_cast<int>(e->status);
        break;
      }
    }
  }
  if (!vmm_reaped) {
    std::printf("{\"event\":\"exit\",\"pid\":%d,\"code\":null,\"signal\":null}\n", vmm_pid);
  } else if (WIFEXITED(vmm_status)) {
    std::printf("{\"event\":\"exit\",\"pid\":%d,\"code\":%d,\"signal\":null}\n", vmm_pid,
                WEXITSTATUS(vmm_status));
  } else {
    std::printf("{\"event\":\"exit\",\"pid\":%d,\"code\":null,\"signal\":%d}\n", vmm_pid,
                WTERMSIG(vmm_status));
  }
  return 0;
}
