// SPDX-License-Identifier: Apache-2.0
// Attacks on sbx-nsexec (issue 8, "Hardening"): each test plays a hostile caller, the
// unprivileged test user, and asserts that the helper refuses (or that the attack is harmless)
// AND that the host is unchanged: the mount table, the sandbox root's listing, and no process of
// the test user left behind.
//
// Covered elsewhere and not repeated here: a policy file made group-writable is refused at
// load_policy with EPERM (helper_refusals_test.cc, PolicyWritableByGroup).
//
// Some attacks need more control than the driver gives (an exact environment, supplementary
// groups, a ptracing parent), so the test also starts the helper itself: fork, become the test
// user, the caller's socket end at fd 3, execve. The test process (root) then plays the caller.
#include <elf.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <new>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/protocol.h"
#include "common/unique_fd.h"
#include "tests/integration/helper_env.h"

namespace sbx::it {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kCapsXattr = "security.capability";
// A group the test user is not in (its own group is kTestGid).
constexpr gid_t kOtherGid = kTestGid + 1;
// A byte the tests place in a string and then turn into NUL in the encoded message.
constexpr char kNulMarker = '\x7f';

[[noreturn]] void fail_errno(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

std::optional<std::string> try_read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string exit_text(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

// Waits for `pid` (a child of this process) at most `timeout`, then SIGKILLs it; returns the
// waitpid status, or nullopt when it had to be killed.
std::optional<int> reap(pid_t pid, std::chrono::milliseconds timeout = kTimeout) {
  const auto deadline = deadline_after(timeout);
  while (true) {
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) fail_errno("waitpid " + std::to_string(pid));
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  kill(pid, SIGKILL);
  while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  return std::nullopt;
}

// Reaps zombie children of this process other than `keep` (probes killed mid-report leave
// their short-lived children to this process, the subreaper).
void reap_zombies_except(pid_t keep) {
  const std::string self = std::to_string(getpid());
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
    std::string stat = try_read("/proc/" + name + "/stat").value_or("");
    size_t paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    std::istringstream rest(stat.substr(paren + 1));
    std::string state, ppid;
    rest >> state >> ppid;
    const pid_t pid = std::stoi(name);
    if (ppid == self && state == "Z" && pid != keep) waitpid(pid, nullptr, WNOHANG);
  }
}

// In a forked child: drop to the test user with exactly `groups` as supplementary groups.
bool become_test_user(const std::vector<gid_t>& groups) {
  return setgroups(groups.size(), groups.data()) == 0 &&
         setresgid(kTestGid, kTestGid, kTestGid) == 0 &&
         setresuid(kTestUid, kTestUid, kTestUid) == 0;
}

// Runs `body` in a forked child as the test user (killed if the test process dies); the exit
// code is what `body` returns. The test process is single-threaded, so the child may allocate.
pid_t fork_as_test_user(const std::function<int()>& body) {
  pid_t pid = fork();
  if (pid < 0) fail_errno("fork");
  if (pid == 0) {
    // PDEATHSIG after the credential change, which clears it.
    if (!become_test_user({}) || prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) _exit(100);
    _exit(body());
  }
  return pid;
}

// A helper (or any program) the test started itself as the test user.
struct Spawned {
  pid_t pid = -1;
  UniqueFd control;    // the caller's end of the control socket
  int exec_errno = 0;  // why execve failed; 0 when the program ran
};

// Starts `program` as the test user the way a caller does (a SOCK_SEQPACKET socketpair, the
// program's end at fd 3) with exactly `envp` as its environment and `groups` as its supplementary
// groups; stdin and stdout on /dev/null, stderr to `stderr_path` (/dev/null when empty). An
// execve failure comes back as its errno through a close-on-exec pipe; the child then exits 121.
Spawned spawn_as_test_user(const std::string& program, const std::vector<std::string>& envp,
                           const std::vector<gid_t>& groups, const std::string& stderr_path) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) fail_errno("socketpair");
  Spawned s;
  s.control.reset(sv[0]);
  UniqueFd theirs(sv[1]);
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) fail_errno("pipe2");
  UniqueFd report_read(pipe_fds[0]), report_write(pipe_fds[1]);
  UniqueFd devnull(open("/dev/null", O_RDWR | O_CLOEXEC));
  UniqueFd err(stderr_path.empty()
                   ? fcntl(devnull.get(), F_DUPFD_CLOEXEC, 0)
                   : open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!devnull || !err) fail_errno("open stdio for " + program);
  // Built before fork: the child makes only async-signal-safe calls.
  std::vector<char*> argv{const_cast<char*>(program.c_str()), nullptr};
  std::vector<char*> env;
  env.reserve(envp.size() + 1);
  for (const auto& e : envp) env.push_back(const_cast<char*>(e.c_str()));
  env.push_back(nullptr);

  s.pid = fork();
  if (s.pid < 0) fail_errno("fork");
  if (s.pid == 0) {
    constexpr int kHigh = 100;
    int c = fcntl(theirs.get(), F_DUPFD_CLOEXEC, kHigh);
    int n = fcntl(devnull.get(), F_DUPFD_CLOEXEC, kHigh);
    int e = fcntl(err.get(), F_DUPFD_CLOEXEC, kHigh);
    int r = fcntl(report_write.get(), F_DUPFD_CLOEXEC, kHigh);
    if (c < 0 || n < 0 || e < 0 || r < 0 || dup2(n, 0) < 0 || dup2(n, 1) < 0 || dup2(e, 2) < 0 ||
        dup2(c, 3) < 0 || dup3(r, 4, O_CLOEXEC) < 0 || close_range(5, ~0U, 0) != 0) {
      _exit(120);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    int why = 0;
    if (become_test_user(groups)) {
      execve(argv[0], argv.data(), env.data());
    }
    why = errno;
    (void)!write(4, &why, sizeof(why));
    _exit(121);
  }
  report_write.reset();
  theirs.reset();
  int why = 0;
  ssize_t got;
  while ((got = read(report_read.get(), &why, sizeof(why))) < 0 && errno == EINTR) {
  }
  if (got == sizeof(why)) s.exec_errno = why;
  return s;
}

// What the caller saw on its end of the control socket.
struct Outcome {
  bool launched = false;  // EOF (or VMM_STARTED) without an ERROR: the VMM was executed
  pid_t init = -1;        // with a PID namespace: the namespace init's pid (PID_REPORT)
  std::optional<protocol::ErrorReport> error;
  std::string problem;  // a transport or decoding failure
  std::string text() const {
    if (launched) return "launched";
    if (error) {
      return std::string(step_name(error->step)) + " errno " + std::to_string(error->err) + ": " +
             error->detail;
    }
    return "problem: " + problem;
  }
};

// Sends `bytes` as the LAUNCH and reads until EOF, as the supervisor does. A failed send (the
// helper already gone) still reads what it left queued.
Outcome converse(int control, const std::vector<uint8_t>& bytes) {
  Outcome out;
  if (Status st = protocol::send_datagram(control, bytes, {}, Step::kReadRequest); !st.ok()) {
    out.problem = "send: " + st.message();
  }
  while (true) {
    auto d = protocol::receive_datagram(control, patience_ms(10000), 1, Step::kReadRequest);
    if (!d.ok()) {
      out.problem = "receive: " + d.status().message();
      return out;
    }
    if (d.value().eof) break;
    auto msg = protocol::decode(d.value().bytes, Step::kReadRequest);
    if (!msg.ok()) {
      out.problem = "decode: " + msg.status().message();
      return out;
    }
    if (auto* e = std::get_if<protocol::ErrorReport>(&msg.value())) out.error = *e;
    if (auto* p = std::get_if<protocol::PidReport>(&msg.value())) out.init = p->pid;
    // With a PID namespace the init keeps the socket: VMM_STARTED says the exec happened.
    if (std::holds_alternative<protocol::VmmStarted>(msg.value())) {
      (void)protocol::send_datagram(control, protocol::encode(protocol::StartedAck{}), {},
                                    Step::kReadRequest);
      break;
    }
  }
  out.launched = !out.error && out.problem.empty();
  return out;
}

std::vector<uint8_t> encode_or_throw(const protocol::LaunchRequest& req) {
  auto bytes = protocol::encode(req);
  if (!bytes.ok()) throw std::runtime_error("encode: " + bytes.status().message());
  return bytes.take();
}

// The encoded request with its one kNulMarker byte turned into NUL (the encoder refuses NUL, a
// hostile caller does not use the encoder).
std::vector<uint8_t> encode_with_nul(const protocol::LaunchRequest& req) {
  auto bytes = encode_or_throw(req);
  auto marker = static_cast<uint8_t>(kNulMarker);
  if (std::count(bytes.begin(), bytes.end(), marker) != 1) {
    throw std::runtime_error("encode_with_nul: the request must hold exactly one marker byte");
  }
  *std::find(bytes.begin(), bytes.end(), marker) = 0;
  return bytes;
}

// One line of /proc/PID/mountinfo: where, and what.
struct MountEntry {
  std::string point;
  std::string fstype;
  bool operator==(const MountEntry&) const = default;
};

std::string unescape_octal(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && std::isdigit(static_cast<unsigned char>(s[i + 1]))) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::vector<MountEntry> parse_mountinfo(const std::string& text) {
  std::vector<MountEntry> out;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::vector<std::string> f;
    for (std::string x; fields >> x;) f.push_back(x);
    auto dash = std::find(f.begin(), f.end(), "-");
    if (f.size() < 5 || dash == f.end() || dash + 1 == f.end()) continue;
    out.push_back({unescape_octal(f[4]), *(dash + 1)});
  }
  return out;
}

// Mounts in `inner` (a VMM's view) that the host's table does not have (as a multiset).
std::vector<MountEntry> mounts_added(const std::string& host, const std::string& inner) {
  std::map<std::pair<std::string, std::string>, int> count;
  for (const auto& m : parse_mountinfo(host)) ++count[{m.point, m.fstype}];
  std::vector<MountEntry> added;
  for (const auto& m : parse_mountinfo(inner)) {
    if (--count[{m.point, m.fstype}] < 0) added.push_back(m);
  }
  return added;
}

std::string describe(const std::vector<MountEntry>& mounts) {
  std::string out;
  for (const auto& m : mounts) out += m.point + " (" + m.fstype + ") ";
  return out.empty() ? "(none)" : out;
}

// True while `pid` sits in poll/ppoll (the helper waiting for its request).
bool in_poll(pid_t pid) {
  std::istringstream in(try_read("/proc/" + std::to_string(pid) + "/syscall").value_or(""));
  long nr = -1;
  in >> nr;
#ifdef SYS_poll
  if (nr == SYS_poll) return true;
#endif
  return nr == SYS_ppoll;
}

class AttackTest : public HelperEnvTest {
 protected:
  // The symlink/directory swap: as the test user, makes ROOT/NAME a directory and
  // ROOT/NAME-alt a symlink to /etc, then exchanges the two names (renameat2 RENAME_EXCHANGE)
  // in a tight loop, counting each swap in `swaps` when given. Returns the attacker's pid once
  // it is set up and swapping, or -1 when it could not set up.
  static pid_t start_dir_swapper(const std::string& root, const std::string& name,
                                 std::atomic<uint64_t>* swaps) {
    int ready_fds[2];
    if (pipe2(ready_fds, O_CLOEXEC) != 0) return -1;
    UniqueFd ready_read(ready_fds[0]), ready_write(ready_fds[1]);
    const std::string alt = name + "-alt";
    const pid_t attacker = fork_as_test_user([&] {
      int root_fd = open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
      if (root_fd < 0 || mkdirat(root_fd, name.c_str(), 0700) != 0 ||
          symlinkat("/etc", root_fd, alt.c_str()) != 0) {
        return 1;
      }
      if (write(ready_write.get(), "x", 1) != 1) return 2;
      for (;;) {
        if (renameat2(root_fd, name.c_str(), root_fd, alt.c_str(), RENAME_EXCHANGE) != 0) return 3;
        if (swaps != nullptr) swaps->fetch_add(1, std::memory_order_relaxed);
      }
    });
    ready_write.reset();
    pollfd pfd{ready_read.get(), POLLIN, 0};
    char byte;
    if (poll(&pfd, 1, patience_ms(10000)) != 1 || read(ready_read.get(), &byte, 1) != 1) {
      kill(attacker, SIGKILL);
      waitpid(attacker, nullptr, 0);
      return -1;
    }
    return attacker;
  }

  // What "the host is unchanged" compares.
  struct HostSnapshot {
    std::string mountinfo = HelperEnv::host_mountinfo();
    std::vector<std::string> listing = env().sandbox_root_listing();
  };

  // The host as it was: the mount table and the sandbox root's listing (after removing
  // `sandbox_dirs`, the callers' own empty dirs of successful launches: rmdir proves nothing
  // was written to them on the host), and no test-user process left.
  void expect_host_unchanged(const HostSnapshot& before,
                             const std::vector<std::string>& sandbox_dirs = {}) {
    EXPECT_TRUE(HelperEnv::wait_no_test_user_processes())
        << "left: " << ::testing::PrintToString(HelperEnv::test_user_processes());
    for (const auto& dir : sandbox_dirs) {
      EXPECT_EQ(rmdir(dir.c_str()), 0) << dir << ": " << std::strerror(errno);
    }
    EXPECT_EQ(HelperEnv::host_mountinfo(), before.mountinfo);
    EXPECT_EQ(env().sandbox_root_listing(), before.listing);
  }

  // A raw LAUNCH message for the driver's --raw.
  LaunchArgs raw_args(const std::vector<uint8_t>& bytes) {
    LaunchArgs args;
    args.raw_file = env().make_work_file(
        "attack-raw-" + std::to_string(++raw_count_) + ".bin",
        std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
    return args;
  }

  // A probe request (no netns: the tests here are about other things) for the direct spawner.
  LaunchArgs direct_probe_args(const std::string& tag) {
    LaunchArgs args = env().probe_args(tag);
    args.netns.reset();
    return args;
  }

  // A copy of the fixture's helper at bin/NAME, owner root:`gid`, `mode`, with the same file
  // capabilities when `with_caps` (copied last: chown clears them) or none.
  std::string install_helper_copy(const std::string& name, gid_t gid, mode_t mode, bool with_caps) {
    std::string path = env().dir() + "/bin/" + name;
    std::error_code ec;
    fs::copy_file(env().helper(), path, fs::copy_options::overwrite_existing, ec);
    if (ec) throw std::runtime_error("copy " + env().helper() + ": " + ec.message());
    copies_.push_back(path);
    if (chown(path.c_str(), 0, gid) != 0 || chmod(path.c_str(), mode) != 0) {
      fail_errno("chown/chmod " + path);
    }
    if (with_caps) {
      char caps[256];
      ssize_t n = getxattr(env().helper().c_str(), kCapsXattr, caps, sizeof(caps));
      if (n <= 0 || setxattr(path.c_str(), kCapsXattr, caps, static_cast<size_t>(n), 0) != 0) {
        fail_errno("copy the file capabilities to " + path);
      }
    }
    return path;
  }

  void TearDown() override {
    for (const auto& path : copies_) unlink(path.c_str());
    HelperEnvTest::TearDown();
  }

 private:
  int raw_count_ = 0;
  std::vector<std::string> copies_;
};

// ---------------------------------------------------------------------------------------------
// a. A sandbox-dir component swapped between a directory and a symlink to /etc during 1,000
// launches. The attacker is the caller itself: a process of the test user, which owns its
// entries in the sandbox root (root:sbx 1770 lets it create them, the sticky bit lets only it
// rename them), exchanging `race` (a directory) and `race-alt` (a symlink to /etc) with
// renameat2(RENAME_EXCHANGE) in a tight loop, so at every instant one name is a directory and
// the other the symlink. Every launch asks for the sandbox dir `race`. The helper must either
// refuse (make_sandbox_dir, ELOOP: it opened the symlink) or launch with its tmpfs on the
// attacker's directory, never elsewhere. The attacker swaps during each launch and is stopped
// (SIGSTOP, so the names hold still) while the test checks: the VMM's mount table (read by
// root from /proc/PID/mountinfo while the VMM runs) differs from the host's by exactly one
// tmpfs, mounted on a directory (not the symlink, not /etc) that is a direct child of the
// sandbox root. A mount follows its directory through renames, so that directory may by then
// be named `race-alt`. The host's own mount table must never change.
// Measured on the 2-core development machine with other builds running: about 10 ms per launch
// without the attacker, 15-54 ms with it (it takes a core, and every rename it makes forces
// concurrent path walks to retry): 1,000 launches in 15-54 s, 53-57 s in the ASan+UBSan build.
TEST_F(AttackTest, SymlinkSwapRaceDuringAThousandLaunches) {
  const int kLaunches = rounds_of(1000);
  const HostSnapshot before;
  const std::string dir = env().sandboxes() + "/race";
  const std::string reports = env().work() + "/race-reports";
  ASSERT_EQ(mkdir(reports.c_str(), 0700), 0);
  ASSERT_EQ(chown(reports.c_str(), kTestUid, kTestGid), 0);

  // The swap count, shared with the attacker.
  void* shared = mmap(nullptr, sizeof(std::atomic<uint64_t>), PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(shared, MAP_FAILED);
  auto* swaps = new (shared) std::atomic<uint64_t>(0);
  const std::string root = env().sandboxes();
  const pid_t attacker = start_dir_swapper(root, "race", swaps);
  ASSERT_GT(attacker, 0) << "the attacker failed to set up";

  int launched = 0, refused = 0, wrong = 0;
  const auto start = Clock::now();
  for (int i = 0; i < kLaunches && wrong < 5; ++i) {
    protocol::LaunchRequest req;
    req.id = "race-" + std::to_string(i);
    req.vmm = env().probe();
    req.args = {"--report", reports + "/" + std::to_string(i) + ".json"};
    req.env = {"SBX_TEST=1"};
    req.sandbox_dir = dir;
    req.links = {{"vmlinux", env().images() + "/vmlinux"},
                 {"rootfs.ext4", env().images() + "/rootfs.ext4"}};
    ASSERT_EQ(kill(attacker, SIGCONT), 0);
    Spawned h = spawn_as_test_user(env().helper(), {}, {}, "");
    ASSERT_EQ(h.exec_errno, 0) << std::strerror(h.exec_errno);
    const Outcome outcome = converse(h.control.get(), encode_or_throw(req));
    // A launch that did not answer in time: where the helper stands, before it is killed.
    const std::string stuck = outcome.problem.empty() ? "" : process_tree_report(h.pid);
    ASSERT_EQ(kill(attacker, SIGSTOP), 0);
    int stopped = 0;
    ASSERT_EQ(waitpid(attacker, &stopped, WUNTRACED), attacker);
    ASSERT_TRUE(WIFSTOPPED(stopped)) << "the attacker ended: " << exit_text(stopped);
    if (outcome.launched) {
      ++launched;
      // The VMM runs (the control socket closed at its exec): its mount namespace is final.
      auto inner = try_read("/proc/" + std::to_string(h.pid) + "/mountinfo");
      const std::string host = HelperEnv::host_mountinfo();
      kill(h.pid, SIGKILL);
      reap(h.pid);
      auto added = inner ? mounts_added(host, *inner) : std::vector<MountEntry>{};
      std::string why;
      struct stat st;
      if (!inner) {
        why = "its mountinfo was unreadable";
      } else if (added.size() != 1 || added[0].fstype != "tmpfs") {
        why = "expected exactly one tmpfs";
      } else if (fs::path(added[0].point).parent_path() != env().sandboxes()) {
        why = "the tmpfs is not on a direct child of the sandbox root";
      } else if (lstat(added[0].point.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) ||
                 st.st_uid != kTestUid) {
        why = "the tmpfs is not on the caller's directory";
      }
      if (!why.empty()) {
        ++wrong;
        ADD_FAILURE() << "launch " << i << ": " << why
                      << "; the VMM's mounts beyond the host's: " << describe(added);
      }
    } else {
      auto status = reap(h.pid);
      if (outcome.error && outcome.error->step == Step::kMakeSandboxDir &&
          outcome.error->err == ELOOP && status && WIFEXITED(*status) &&
          WEXITSTATUS(*status) == 125) {
        ++refused;
      } else {
        ++wrong;
        ADD_FAILURE() << "launch " << i << ": " << outcome.text() << "; helper "
                      << (status ? exit_text(*status) : "killed after the timeout") << "\n"
                      << stuck;
      }
    }
    if (HelperEnv::host_mountinfo() != before.mountinfo) {
      ADD_FAILURE() << "the host's mount table changed during launch " << i;
      break;
    }
    if (i % 100 == 99) reap_zombies_except(attacker);
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  kill(attacker, SIGKILL);
  kill(attacker, SIGCONT);
  auto attacker_status = reap(attacker);
  const uint64_t swap_count = swaps->load();
  munmap(shared, sizeof(std::atomic<uint64_t>));
  ASSERT_TRUE(attacker_status && WIFSIGNALED(*attacker_status) &&
              WTERMSIG(*attacker_status) == SIGKILL)
      << "the attacker stopped swapping on its own: "
      << (attacker_status ? exit_text(*attacker_status) : "?");

  std::cout << "[ race     ] " << launched << " launched, " << refused
            << " refused (make_sandbox_dir ELOOP), " << swap_count << " swaps, " << seconds
            << " s (" << seconds * 1000 / kLaunches << " ms per launch)\n";
  RecordProperty("launched", launched);
  RecordProperty("refused", refused);
  RecordProperty("seconds", std::to_string(seconds));
  EXPECT_EQ(launched + refused, kLaunches);
  // Both outcomes seen: the race was live, not decided before it started.
  EXPECT_GT(launched, 0);
  EXPECT_GT(refused, 0);

  // /etc is what it was: still a directory, nothing mounted on it.
  struct stat st;
  ASSERT_EQ(lstat("/etc", &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  // The attacker's own two entries go; then the host must be as it was.
  for (const char* name : {"race", "race-alt"}) {
    const std::string path = env().sandboxes() + "/" + name;
    ASSERT_EQ(lstat(path.c_str(), &st), 0) << path;
    EXPECT_EQ(S_ISLNK(st.st_mode) ? unlink(path.c_str()) : rmdir(path.c_str()), 0)
        << path << ": " << std::strerror(errno);
  }
  std::error_code ec;
  fs::remove_all(reports, ec);
  expect_host_unchanged(before);
}

// ---------------------------------------------------------------------------------------------
// a2. The jail's entries raced the same way, 1,000 launches each: a files.read_write directory
// the caller swaps with a symlink to /etc, and a device path swapped (by root: only root can
// write /dev, so this stands for a race on the host's side) with a symlink to another node.
// Each jailed launch must either be refused (validate_request, ELOOP: the helper opened the
// symlink, at its first check or at the second, in its own mount namespace) or bind exactly
// the directory or device the caller meant, read by root through /proc/PID/root while the VMM
// runs; /etc is never bound. The host's mount table never changes.
class JailRaceTest : public AttackTest {
 protected:
  struct Counts {
    int launched = 0, refused = 0, wrong = 0;
  };

  // Runs `launches` jailed launches while `attacker` swaps (SIGCONT during each launch,
  // SIGSTOP while it is checked); `check` gets the running VMM's pid and says what is wrong.
  Counts race(int launches, pid_t attacker,
              const std::function<void(protocol::LaunchRequest&)>& fill,
              const std::function<std::string(pid_t)>& check) {
    Counts c;
    const std::string host_before = HelperEnv::host_mountinfo();
    for (int i = 0; i < launches && c.wrong < 5; ++i) {
      protocol::LaunchRequest req;
      req.id = "jrace-" + std::to_string(i);
      req.vmm = env().probe();
      req.args = {"--report", "report.json"};  // in the sandbox dir: the probe stays up
      req.env = {"SBX_TEST=1"};
      req.sandbox_dir = env().sandboxes() + "/" + req.id;
      req.links = {{"vmlinux", env().images() + "/vmlinux"}};
      req.files = req.jail = true;
      req.pid_namespace = true;  // a jail needs one
      req.read_only = {"/usr"};
      fill(req);
      EXPECT_EQ(kill(attacker, SIGCONT), 0);
      Spawned h = spawn_as_test_user(env().helper(), {}, {}, "");
      if (h.exec_errno != 0) {
        ADD_FAILURE() << "spawn: " << std::strerror(h.exec_errno);
        break;
      }
      const Outcome outcome = converse(h.control.get(), encode_or_throw(req));
      const std::string stuck = outcome.problem.empty() ? "" : process_tree_report(h.pid);
      EXPECT_EQ(kill(attacker, SIGSTOP), 0);
      int stopped = 0;
      if (waitpid(attacker, &stopped, WUNTRACED) != attacker || !WIFSTOPPED(stopped)) {
        ADD_FAILURE() << "the attacker ended: " << exit_text(stopped);
        break;
      }
      if (outcome.launched) {
        ++c.launched;
        // The namespace init pivoted into the jail before it started the VMM: its root is
        // the VMM's.
        std::string why = outcome.init > 0 ? check(outcome.init) : "no PID_REPORT";
        struct stat st;
        if (why.empty() &&
            lstat(("/proc/" + std::to_string(outcome.init) + "/root/etc").c_str(), &st) == 0) {
          why = "the jail holds /etc";
        }
        if (outcome.init > 0) {
          kill(outcome.init, SIGKILL);
          reap(outcome.init);
        }
        reap(h.pid);
        if (!why.empty()) {
          ++c.wrong;
          ADD_FAILURE() << "launch " << i << ": " << why;
        }
      } else {
        // A refusal after the fork comes from the namespace's pid 1; the helper itself exited
        // 0 once it had reported that pid.
        auto status = reap(outcome.init > 0 ? outcome.init : h.pid);
        if (outcome.init > 0) reap(h.pid);
        if (outcome.error && outcome.error->step == Step::kValidateRequest &&
            outcome.error->err == ELOOP && status && WIFEXITED(*status) &&
            WEXITSTATUS(*status) == 125) {
          ++c.refused;
        } else {
          ++c.wrong;
          ADD_FAILURE() << "launch " << i << ": " << outcome.text() << "\n" << stuck;
        }
      }
      rmdir(req.sandbox_dir.c_str());
      if (HelperEnv::host_mountinfo() != host_before) {
        ADD_FAILURE() << "the host's mount table changed during launch " << i;
        break;
      }
      if (i % 100 == 99) reap_zombies_except(attacker);
    }
    kill(attacker, SIGKILL);
    kill(attacker, SIGCONT);
    auto status = reap(attacker);
    EXPECT_TRUE(status && WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL)
        << "the attacker stopped swapping on its own";
    std::cout << "[ race     ] " << c.launched << " launched, " << c.refused
              << " refused (validate_request ELOOP)\n";
    return c;
  }
};

TEST_F(JailRaceTest, ReadWriteEntrySwappedWithASymlinkDuringAThousandLaunches) {
  const int kLaunches = rounds_of(1000);
  PolicySpec policy = env().default_policy();
  policy.extra_lines = {"read_only = /usr"};
  ScopedPolicy scoped(env(), policy);
  const HostSnapshot before;
  const std::string root = env().sandboxes();
  const pid_t attacker = start_dir_swapper(root, "rwrace", nullptr);
  ASSERT_GT(attacker, 0) << "the attacker failed to set up";
  kill(attacker, SIGSTOP);
  int stopped = 0;
  ASSERT_EQ(waitpid(attacker, &stopped, WUNTRACED), attacker);
  // The directory's identity: it keeps it whatever name it has.
  struct stat dir_st;
  const std::string a = root + "/rwrace", b = root + "/rwrace-alt";
  ASSERT_EQ(lstat(a.c_str(), &dir_st), 0);
  if (S_ISLNK(dir_st.st_mode)) ASSERT_EQ(lstat(b.c_str(), &dir_st), 0);
  ASSERT_TRUE(S_ISDIR(dir_st.st_mode));
  const std::string entry = root + "/rwrace";

  Counts c = race(
      kLaunches, attacker, [&](protocol::LaunchRequest& req) { req.read_write = {entry}; },
      [&](pid_t vmm) -> std::string {
        struct stat st;
        const std::string inside = "/proc/" + std::to_string(vmm) + "/root" + entry;
        if (stat(inside.c_str(), &st) != 0) {
          return "the read_write entry is not in the jail: " + std::string(std::strerror(errno));
        }
        if (!S_ISDIR(st.st_mode) || st.st_ino != dir_st.st_ino || st.st_dev != dir_st.st_dev) {
          return "the jail's " + entry + " is not the caller's directory";
        }
        return "";
      });
  EXPECT_EQ(c.launched + c.refused, kLaunches);
  EXPECT_GT(c.launched, 0);
  EXPECT_GT(c.refused, 0);
  struct stat st;
  ASSERT_EQ(lstat("/etc", &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  for (const std::string& p : {a, b}) {
    ASSERT_EQ(lstat(p.c_str(), &st), 0) << p;
    EXPECT_EQ(S_ISLNK(st.st_mode) ? unlink(p.c_str()) : rmdir(p.c_str()), 0) << p;
  }
  expect_host_unchanged(before);
}

TEST_F(JailRaceTest, DevicePathSwappedWithASymlinkDuringAThousandLaunches) {
  const int kLaunches = rounds_of(1000);
  const std::string node = "/dev/sbx-it-race-" + std::to_string(getpid());
  const std::string alt = node + "-alt";
  PolicySpec policy = env().default_policy();
  policy.extra_lines = {"read_only = /usr", "device = " + node};
  ScopedPolicy scoped(env(), policy);
  const HostSnapshot before;
  const dev_t expected = makedev(1, 5);  // the zero device's numbers, on a node of our own
  ASSERT_EQ(mknod(node.c_str(), S_IFCHR | 0666, expected), 0) << std::strerror(errno);
  ASSERT_EQ(symlink("null", alt.c_str()), 0);
  struct Cleanup {
    std::string a, b;
    ~Cleanup() {
      unlink(a.c_str());
      unlink(b.c_str());
    }
  } cleanup{node, alt};
  const pid_t attacker = fork();
  ASSERT_GE(attacker, 0);
  if (attacker == 0) {
    for (;;) {
      if (renameat2(AT_FDCWD, node.c_str(), AT_FDCWD, alt.c_str(), RENAME_EXCHANGE) != 0) _exit(3);
    }
  }
  kill(attacker, SIGSTOP);
  int stopped = 0;
  ASSERT_EQ(waitpid(attacker, &stopped, WUNTRACED), attacker);

  Counts c = race(
      kLaunches, attacker, [&](protocol::LaunchRequest& req) { req.devices = {node}; },
      [&](pid_t vmm) -> std::string {
        struct stat st;
        const std::string inside = "/proc/" + std::to_string(vmm) + "/root" + node;
        if (lstat(inside.c_str(), &st) != 0) return "the device is not in the jail";
        if (!S_ISCHR(st.st_mode) || st.st_rdev != expected) {
          return "the jail's " + node + " is not the device the policy names";
        }
        return "";
      });
  EXPECT_EQ(c.launched + c.refused, kLaunches);
  EXPECT_GT(c.launched, 0);
  EXPECT_GT(c.refused, 0);
  expect_host_unchanged(before);
}

// ---------------------------------------------------------------------------------------------
// b. Kernel and rootfs paths that would reach outside the image roots through procfs magic
// links, `..`, or a symlinked parent: all refused at validate_request.

TEST_F(AttackTest, ImagePathsThroughProcSelf) {
  struct Case {
    const char* link;
    std::string target;
  };
  const std::vector<Case> cases = {
      // An fd the caller passes along (the kernel image, opened by the caller).
      {"vmlinux", "/proc/self/fd/4"},
      // The image root reached through the helper's own root magic link.
      {"rootfs.ext4", "/proc/self/root" + env().images() + "/rootfs.ext4"},
      {"vmlinux", "/proc/thread-self/root" + env().images() + "/vmlinux"},
      {"vmlinux", "/proc/1/root/etc/shadow"},
      {"vmlinux", "/proc/self/cwd/etc/shadow"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.target);
    LaunchArgs args = env().probe_args("procself");
    for (auto& link : args.links) {
      if (link.first == c.link) link.second = c.target;
    }
    args.pass_files = {{env().images() + "/vmlinux", 4}};
    expect_refused(args, "validate_request", EPERM);
  }
}

// Even a policy that names a procfs path as an image root does not make magic links usable:
// the root itself is opened with RESOLVE_NO_SYMLINKS and /proc/self is a symlink.
TEST_F(AttackTest, ImageRootThroughProcSelfInThePolicy) {
  PolicySpec policy = env().default_policy();
  policy.image_roots.push_back("/proc/self/root" + env().images());
  ScopedPolicy scoped(env(), policy);
  LaunchArgs args = env().probe_args("procroot");
  args.links = {{"vmlinux", "/proc/self/root" + env().images() + "/vmlinux"}};
  expect_refused(args, "validate_request", ELOOP);
}

TEST_F(AttackTest, ImagePathsWithDotDot) {
  const std::string images = env().images();
  for (const std::string& target :
       {images + "/../images/vmlinux", images + "/sub/../../../../etc/shadow", images + "/..",
        images + "/./vmlinux", images + "//vmlinux"}) {
    SCOPED_TRACE(target);
    LaunchArgs args = env().probe_args("dotdot");
    args.links = {{"vmlinux", target}};
    expect_refused(args, "validate_request", EINVAL);
  }
}

TEST_F(AttackTest, ImagePathThroughASymlinkedParentPointingOutside) {
  const std::string link = env().images() + "/etc-dir";
  ASSERT_EQ(symlink("/etc", link.c_str()), 0);
  struct Unlink {
    std::string path;
    ~Unlink() { unlink(path.c_str()); }
  } remove_after{link};
  for (const char* link_name : {"vmlinux", "rootfs.ext4"}) {
    LaunchArgs args = env().probe_args("parentlink");
    for (auto& l : args.links) {
      if (l.first == link_name) l.second = link + "/passwd";
    }
    expect_refused(args, "validate_request", ELOOP);
  }
}

// ---------------------------------------------------------------------------------------------
// c. Netns names that would leave /run/netns or truncate: `/`, `..`, 300 characters (all
// matching the policy's glob `sbx-it-*` where a glob can match, so only the name checks can
// refuse them), and NUL (a raw message: the driver's argv cannot carry NUL).

TEST_F(AttackTest, NetnsNamesThatLeaveRunNetns) {
  const std::string real = env().netns();
  const std::vector<std::string> names = {"sbx-it-x/../" + real,
                                          "sbx-it-/../../proc/1/ns/net",
                                          "..",
                                          ".",
                                          "sbx-it-" + std::string(293, 'a'),
                                          "sbx-it-" + std::string(249, 'a')};
  for (const std::string& name : names) {
    SCOPED_TRACE(name.substr(0, 40) + " (" + std::to_string(name.size()) + " bytes)");
    LaunchArgs args = env().probe_args("netns");
    args.netns = name;
    expect_refused(args, "validate_request", EINVAL);
  }
  // The boundary: 255 bytes passes the name checks and the glob, and is simply not there.
  LaunchArgs args = env().probe_args("netns255");
  args.netns = "sbx-it-" + std::string(248, 'a');
  expect_refused(args, "join_netns", ENOENT);
}

TEST_F(AttackTest, NetnsNameWithNul) {
  // Truncated at the NUL this would name the test's real netns.
  LaunchArgs args = env().probe_args("netnsnul");
  args.netns = env().netns() + kNulMarker + "/../../proc/1/ns/net";
  expect_refused(raw_args(encode_with_nul(make_request(args))), "read_request", EPROTO);
}

// ---------------------------------------------------------------------------------------------
// d. Ids and args with newlines and NULs. An id is a name (refused); an arg is data, handed to
// the VMM verbatim; NUL never gets past the decoder.

TEST_F(AttackTest, IdWithNewline) {
  for (const char* id : {"it-a\nb", "it-ok\n", "\nit", "it\r\n{\"event\":\"x\"}"}) {
    LaunchArgs args = env().probe_args("idnl");
    args.id = id;
    expect_refused(args, "validate_request", EINVAL);
  }
}

TEST_F(AttackTest, IdWithNul) {
  LaunchArgs args = env().probe_args("idnul");
  args.id = args.id + kNulMarker + "x";
  expect_refused(raw_args(encode_with_nul(make_request(args))), "read_request", EPROTO);
}

TEST_F(AttackTest, ArgWithNul) {
  LaunchArgs args = env().probe_args("argnul");
  args.vmm_args.push_back("--");
  args.vmm_args.push_back(std::string("a") + kNulMarker + "--report=/etc/shadow");
  expect_refused(raw_args(encode_with_nul(make_request(args))), "read_request", EPROTO);
}

TEST_F(AttackTest, EnvWithNul) {
  LaunchArgs args = env().probe_args("envnul");
  args.env.push_back(std::string("SBX_X=a") + kNulMarker + "LD_PRELOAD=/tmp/x.so");
  expect_refused(raw_args(encode_with_nul(make_request(args))), "read_request", EPROTO);
}

TEST_F(AttackTest, ArgsAndEnvWithNewlinesArePassedVerbatim) {
  const HostSnapshot before;
  LaunchArgs args = env().probe_args("argnl");
  const std::vector<std::string> data = {"line1\nline2", "\n", "\r\n{\"event\":\"exit\"}\n", ""};
  args.vmm_args.push_back("--");
  args.vmm_args.insert(args.vmm_args.end(), data.begin(), data.end());
  args.env.push_back("SBX_MULTI=a\nb\n");
  Launch l = env().launch(args);
  ASSERT_TRUE(l.ok()) << json::serialize(l.line) << "\n" << l.driver->stderr_text();
  json::object report = env().wait_for_report(env().report_path(args));
  std::vector<std::string> expected_argv{args.vmm};
  expected_argv.insert(expected_argv.end(), args.vmm_args.begin(), args.vmm_args.end());
  EXPECT_EQ(json_strs(report, "argv"), expected_argv);
  EXPECT_EQ(json_strs(report, "environ"), args.env);
  json::object exit = env().stop(l);
  EXPECT_EQ(exit.at("code"), json::value(0)) << json::serialize(exit);
  expect_host_unchanged(before, {args.sandbox_dir});
}

// True when the ELF file at `path` names a program interpreter (a dynamic loader).
bool has_program_interpreter(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  Elf64_Ehdr eh{};
  if (!in.read(reinterpret_cast<char*>(&eh), sizeof(eh))) return false;
  for (int i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph{};
    in.seekg(static_cast<std::streamoff>(eh.e_phoff + i * sizeof(ph)));
    if (!in.read(reinterpret_cast<char*>(&ph), sizeof(ph))) return false;
    if (ph.p_type == PT_INTERP) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// e. Loader variables in the caller's environment. The helper is a static PIE (no loader at
// all) or, in sanitizer builds, dynamic: then the file capability makes its exec a secure exec
// (AT_SECURE=1) and the loader ignores LD_PRELOAD/LD_LIBRARY_PATH/LD_AUDIT. Either way the
// helper rebuilds the environment, so the VMM gets exactly the request's. The bogus libraries
// are sharp: the control, a dynamic program in the same environment (the helper's own binary
// without the file capability when it is dynamic, /usr/bin/true when it is static), dies in the
// loader.
TEST_F(AttackTest, LoaderVariablesInTheCallersEnvironmentAreIgnored) {
  const HostSnapshot before;
  const std::string libdir = env().work() + "/ldlib";
  struct RemoveAll {
    std::string path;
    ~RemoveAll() {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  } remove_after{libdir};
  ASSERT_EQ(mkdir(libdir.c_str(), 0755), 0);
  ASSERT_EQ(chown(libdir.c_str(), kTestUid, kTestGid), 0);
  for (const char* lib : {"libcap-ng.so.0", "libseccomp.so.2", "libstdc++.so.6", "libgcc_s.so.1",
                          "libm.so.6", "libc.so.6"}) {
    std::ofstream(libdir + "/" + lib) << "not an ELF object\n";
  }
  const std::string evil = env().make_work_file("evil.so", "not an ELF object\n");
  const std::vector<std::string> hostile_env = {"LD_PRELOAD=" + evil, "LD_LIBRARY_PATH=" + libdir,
                                                "LD_AUDIT=" + evil,   "GCONV_PATH=" + libdir,
                                                "PATH=" + libdir,     "SBX_CALLER_ONLY=1"};

  // The control: without the file capability the same environment breaks the loader.
  const bool helper_is_dynamic = has_program_interpreter(env().helper());
  const std::string plain = helper_is_dynamic
                                ? install_helper_copy("sbx-nsexec-nocaps", 0, 0755, false)
                                : std::string("/usr/bin/true");
  ASSERT_TRUE(has_program_interpreter(plain)) << plain;
  const std::string control_log = env().fresh_path("control-stderr");
  Spawned control = spawn_as_test_user(plain, hostile_env, {}, control_log);
  ASSERT_EQ(control.exec_errno, 0);
  auto control_status = reap(control.pid);
  ASSERT_TRUE(control_status);
  const std::string control_stderr = try_read(control_log).value_or("");
  EXPECT_TRUE(WIFEXITED(*control_status) && WEXITSTATUS(*control_status) == 127)
      << exit_text(*control_status) << "; stderr: " << control_stderr;
  EXPECT_NE(control_stderr.find("error while loading shared libraries"), std::string::npos)
      << control_stderr;

  // The helper: the same environment, ignored.
  LaunchArgs args = direct_probe_args("ldenv");
  const std::string helper_log = env().fresh_path("helper-stderr");
  Spawned h = spawn_as_test_user(env().helper(), hostile_env, {}, helper_log);
  ASSERT_EQ(h.exec_errno, 0);
  Outcome outcome = converse(h.control.get(), encode_or_throw(make_request(args)));
  ASSERT_TRUE(outcome.launched) << outcome.text() << "; stderr: " << try_read(helper_log).value();
  json::object report = env().wait_for_report(env().report_path(args));
  EXPECT_EQ(json_strs(report, "environ"), args.env);
  kill(h.pid, SIGKILL);
  reap(h.pid);
  const std::string helper_stderr = try_read(helper_log).value_or("");
  for (const char* word : {"ld.so", "preload", "error while loading", "LD_"}) {
    EXPECT_EQ(helper_stderr.find(word), std::string::npos) << helper_stderr;
  }
  expect_host_unchanged(before, {args.sandbox_dir});
}

// ---------------------------------------------------------------------------------------------
// f. The caller ptracing the helper while it holds cap_sys_admin. The attacker is the helper's
// own parent (as a supervisor is), running as the same uid: PTRACE_ATTACH and PTRACE_SEIZE are
// refused (the helper is not dumpable, and holds capabilities its caller lacks), and so are
// the other ways into its memory or fds. A control child of the attacker shows that ptrace
// itself works here. Afterwards the helper serves the launch unharmed.
TEST_F(AttackTest, CallerCannotPtraceTheHelper) {
  const HostSnapshot before;
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd ours(sv[0]), theirs(sv[1]);
  int result_fds[2], go_fds[2];
  ASSERT_EQ(pipe2(result_fds, O_CLOEXEC), 0);
  ASSERT_EQ(pipe2(go_fds, O_CLOEXEC), 0);
  UniqueFd result_read(result_fds[0]), result_write(result_fds[1]);
  UniqueFd go_read(go_fds[0]), go_write(go_fds[1]);
  const std::string helper = env().helper();

  // The attempts, in order, and the errno each must give (0: must succeed).
  const std::vector<std::pair<std::string, int>> attempts = {
      {"PTRACE_ATTACH", EPERM},
      {"PTRACE_SEIZE", EPERM},
      {"open /proc/PID/mem", EACCES},
      {"open /proc/PID/environ", EACCES},
      {"process_vm_readv", EPERM},
      {"pidfd_getfd of fd 3", EPERM},
      {"control: PTRACE_ATTACH of a plain child", 0}};

  const pid_t attacker = fork_as_test_user([&]() -> int {
    ours.reset();
    result_read.reset();
    go_write.reset();
    pid_t h = fork();
    if (h < 0) return 1;
    if (h == 0) {
      if (dup2(theirs.get(), 3) != 3) _exit(120);
      close_range(4, ~0U, 0);
      char* argv[] = {const_cast<char*>(helper.c_str()), nullptr};
      char* envp[] = {nullptr};
      execve(argv[0], argv, envp);
      _exit(121);
    }
    theirs.reset();
    if (write(result_write.get(), &h, sizeof(h)) != sizeof(h)) return 2;
    char go;
    if (read(go_read.get(), &go, 1) != 1) return 3;
    std::vector<int> errs;
    auto record = [&](long r) { errs.push_back(r < 0 ? errno : 0); };
    record(ptrace(PTRACE_ATTACH, h, nullptr, nullptr));
    record(ptrace(PTRACE_SEIZE, h, nullptr, nullptr));
    const std::string proc = "/proc/" + std::to_string(h);
    int fd = open((proc + "/mem").c_str(), O_RDONLY | O_CLOEXEC);
    record(fd);
    if (fd >= 0) close(fd);
    fd = open((proc + "/environ").c_str(), O_RDONLY | O_CLOEXEC);
    record(fd);
    if (fd >= 0) close(fd);
    char buf[64];
    iovec local{buf, sizeof(buf)};
    iovec remote{reinterpret_cast<void*>(0x400000), sizeof(buf)};
    record(process_vm_readv(h, &local, 1, &remote, 1, 0));
    int pidfd = static_cast<int>(syscall(SYS_pidfd_open, h, 0));
    if (pidfd < 0) return 4;
    int stolen = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, 3, 0));
    record(stolen);
    if (stolen >= 0) close(stolen);
    close(pidfd);
    // The control is a fresh exec: this process changed its uid, which made it (and a plain
    // fork of it) non-dumpable; an exec of an unprivileged binary makes it dumpable again.
    // The close-on-exec pipe reports the exec.
    int exec_fds[2];
    if (pipe2(exec_fds, O_CLOEXEC) != 0) return 7;
    pid_t plain = fork();
    if (plain == 0) {
      char* sleep_argv[] = {const_cast<char*>("sleep"), const_cast<char*>("30"), nullptr};
      char* no_env[] = {nullptr};
      execve("/bin/sleep", sleep_argv, no_env);
      _exit(121);
    }
    close(exec_fds[1]);
    char ignored;
    (void)!read(exec_fds[0], &ignored, 1);
    close(exec_fds[0]);
    record(ptrace(PTRACE_ATTACH, plain, nullptr, nullptr));
    kill(plain, SIGKILL);
    waitpid(plain, nullptr, 0);
    if (write(result_write.get(), errs.data(), errs.size() * sizeof(int)) !=
        static_cast<ssize_t>(errs.size() * sizeof(int))) {
      return 5;
    }
    int status = 0;
    if (waitpid(h, &status, 0) != h) return 6;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  });
  theirs.reset();
  result_write.reset();
  go_read.reset();

  pid_t h = -1;
  ASSERT_EQ(read(result_read.get(), &h, sizeof(h)), static_cast<ssize_t>(sizeof(h)));
  // Wait until the helper holds its capability and waits for the request: exec done, asleep
  // in poll.
  const auto deadline = deadline_after(kTimeout);
  bool waiting = false;
  while (!waiting && Clock::now() < deadline) {
    std::error_code ec;
    auto status = proc_status(h);
    waiting = fs::read_symlink("/proc/" + std::to_string(h) + "/exe", ec) == helper &&
              status["State"].starts_with("S") && in_poll(h);
    if (!waiting) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(waiting) << "the helper never waited for its request";
  const std::string cap_eff = proc_status(h)["CapEff"];
  EXPECT_TRUE((std::stoull(cap_eff, nullptr, 16) >> CAP_SYS_ADMIN) & 1) << "CapEff " << cap_eff;

  ASSERT_EQ(write(go_write.get(), "g", 1), 1);
  std::vector<int> errs(attempts.size(), -1);
  const auto want = static_cast<ssize_t>(errs.size() * sizeof(int));
  ASSERT_EQ(read(result_read.get(), errs.data(), static_cast<size_t>(want)), want);
  for (size_t i = 0; i < attempts.size(); ++i) {
    EXPECT_EQ(errs[i], attempts[i].second)
        << attempts[i].first << ": " << (errs[i] ? std::strerror(errs[i]) : "succeeded");
  }
  EXPECT_EQ(proc_status(h)["TracerPid"], "0");

  // Unharmed: the same helper now launches the probe.
  LaunchArgs args = direct_probe_args("ptrace");
  Outcome outcome = converse(ours.get(), encode_or_throw(make_request(args)));
  EXPECT_TRUE(outcome.launched) << outcome.text();
  if (outcome.launched) {
    json::object report = env().wait_for_report(env().report_path(args));
    EXPECT_EQ(json_int(report, "pid"), h);
    EXPECT_EQ(json_int(report, "ppid"), attacker);
    kill(h, SIGKILL);
  }
  auto status = reap(attacker);
  ASSERT_TRUE(status);
  EXPECT_EQ(exit_text(*status), outcome.launched ? "exit 137" : "exit 125");
  expect_host_unchanged(
      before, outcome.launched ? std::vector{args.sandbox_dir} : std::vector<std::string>{});
}

// The sharper form: the caller makes itself the tracer before the exec (PTRACE_TRACEME). The
// kernel then execs the helper without its file capability, and the helper refuses at
// check_invocation; it never reads the request.
TEST_F(AttackTest, TracedExecRunsWithoutTheCapability) {
  const HostSnapshot before;
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd ours(sv[0]), theirs(sv[1]);
  const std::string helper = env().helper();
  const pid_t attacker = fork_as_test_user([&]() -> int {
    ours.reset();
    pid_t h = fork();
    if (h < 0) return 1;
    if (h == 0) {
      if (ptrace(PTRACE_TRACEME, 0, nullptr, nullptr) != 0) _exit(119);
      int null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
      if (null_fd < 0 || dup2(null_fd, 2) != 2 || dup2(theirs.get(), 3) != 3) _exit(120);
      close_range(4, ~0U, 0);
      char* argv[] = {const_cast<char*>(helper.c_str()), nullptr};
      char* envp[] = {nullptr};
      execve(argv[0], argv, envp);
      _exit(121);
    }
    theirs.reset();
    int status = 0;
    while (waitpid(h, &status, 0) == h && WIFSTOPPED(status)) {
      int sig = WSTOPSIG(status) == SIGTRAP ? 0 : WSTOPSIG(status);
      // The data argument of PTRACE_CONT is the signal to deliver, passed as a pointer.
      ptrace(PTRACE_CONT, h, nullptr,
             reinterpret_cast<void*>(static_cast<long>(sig)));  // NOLINT(performance-no-int-to-ptr)
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  });
  theirs.reset();
  LaunchArgs args = direct_probe_args("traceme");
  Outcome outcome = converse(ours.get(), encode_or_throw(make_request(args)));
  ASSERT_TRUE(outcome.error) << outcome.text();
  EXPECT_EQ(outcome.error->step, Step::kCheckInvocation) << outcome.text();
  EXPECT_EQ(outcome.error->err, EPERM) << outcome.text();
  EXPECT_NE(outcome.error->detail.find("cap_sys_admin"), std::string::npos) << outcome.text();
  auto status = reap(attacker);
  ASSERT_TRUE(status);
  EXPECT_EQ(exit_text(*status), "exit 125");
  struct stat st;
  EXPECT_NE(lstat(env().report_path(args).c_str(), &st), 0) << "the probe ran";
  expect_host_unchanged(before);
}

// ---------------------------------------------------------------------------------------------
// h. A caller not in the helper's group. Installed, the helper is root:sbx 0750: here a copy is
// root:<kOtherGid> 0750 with the file capability. The test user, not in that group, cannot
// even execute it (EACCES from execve: the helper never runs); with the group as a
// supplementary group the same copy launches.
TEST_F(AttackTest, CallerNotInTheHelpersGroup) {
  const HostSnapshot before;
  const std::string copy = install_helper_copy("sbx-nsexec-group", kOtherGid, 0750, true);

  Spawned outsider = spawn_as_test_user(copy, {}, {}, "");
  EXPECT_EQ(outsider.exec_errno, EACCES) << std::strerror(outsider.exec_errno);
  auto status = reap(outsider.pid);
  ASSERT_TRUE(status);
  EXPECT_EQ(exit_text(*status), "exit 121");  // the spawner's own code: execve failed
  // Nothing answered on the control socket: EOF, no ERROR.
  auto d =
      protocol::receive_datagram(outsider.control.get(), patience_ms(1000), 0, Step::kReadRequest);
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_TRUE(d.value().eof);

  LaunchArgs args = direct_probe_args("group");
  Spawned member = spawn_as_test_user(copy, {}, {kOtherGid}, "");
  ASSERT_EQ(member.exec_errno, 0) << std::strerror(member.exec_errno);
  Outcome outcome = converse(member.control.get(), encode_or_throw(make_request(args)));
  EXPECT_TRUE(outcome.launched) << outcome.text();
  if (outcome.launched) {
    json::object report = env().wait_for_report(env().report_path(args));
    EXPECT_EQ(json_int(report, "uid"), kTestUid);
    kill(member.pid, SIGKILL);
  }
  reap(member.pid);
  expect_host_unchanged(
      before, outcome.launched ? std::vector{args.sandbox_dir} : std::vector<std::string>{});
}

// ---------------------------------------------------------------------------------------------
// A passed fd aimed at the number of the helper's own VMM fd. The caller asks for the
// allowlisted VMM and passes, by SCM_RIGHTS, fds of a binary it owns, with PASS_FD targets
// that cover the number the helper's VMM fd had before it was kept above every target (4 plus
// the number of passed fds: 136 of these launches ran the caller's binary then), for every
// first target from 4 to 20 and 1 to 16 fds. The allowlisted VMM must run (its /proc/PID/exe,
// read by root while it runs, is the allowlisted binary) with every passed fd at its target
// (so the attack's fds did land on those numbers), or the request must be refused; the
// caller's binary never runs. Both with and without a PID namespace (where the VMM is
// executed by the namespace's init).
TEST_F(AttackTest, PassedFdsCannotReplaceTheAllowlistedVmm) {
  const HostSnapshot before;
  const std::string own = env().install_vmm_copy("callers-own-vmm", kTestUid, 0755);
  const std::string allowlisted = fs::canonical(env().probe()).string();
  std::vector<std::string> sandbox_dirs;
  int ran = 0, round = 0;
  for (int count = 1; count <= 16; ++count) {
    for (int first = 4; first <= 20; ++first) {
      for (bool pidns : {false, true}) {
        if (!round_runs(round++)) continue;
        SCOPED_TRACE("fds " + std::to_string(count) + ", targets from " + std::to_string(first) +
                     (pidns ? ", PID namespace" : ""));
        LaunchArgs args = direct_probe_args("fdswap");
        args.pid_namespace = pidns;
        for (int k = 0; k < count; ++k) args.pass_files.push_back({own, first + k});
        Launch l = env().launch(args);
        if (!l.ok()) {
          EXPECT_EQ(json_str(l.error(), "step"), "prepare_fds") << json::serialize(l.line);
          env().read_exit(l);
          continue;
        }
        sandbox_dirs.push_back(args.sandbox_dir);
        std::error_code ec;
        const auto exe = fs::read_symlink("/proc/" + std::to_string(l.vmm_pid()) + "/exe", ec);
        EXPECT_EQ(exe.string(), allowlisted) << ec.message();
        for (int k = 0; k < count; ++k) {
          const std::string at =
              "/proc/" + std::to_string(l.vmm_pid()) + "/fd/" + std::to_string(first + k);
          EXPECT_EQ(fs::read_symlink(at, ec).string(), fs::canonical(own).string())
              << at << ": " << ec.message();
        }
        ++ran;
        kill(l.vmm_pid(), SIGKILL);
        env().read_exit(l);
      }
    }
  }
  EXPECT_GT(ran, 0);
  expect_host_unchanged(before, sandbox_dirs);
}

}  // namespace
}  // namespace sbx::it
