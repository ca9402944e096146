// SPDX-License-Identifier: Apache-2.0
// What the VMM sees when sbx-nsexec launches it (issue 3, "helper/": the VMM it execs has ...):
// each test launches the probe VMM through the setcap'd helper as the unprivileged test user and
// asserts one fact from the probe's report. Also the helper's own command line and invocation
// checks, and the root caller.
#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/protocol.h"
#include "tests/integration/helper_env.h"

namespace sbx::it {
namespace {

namespace json = boost::json;

constexpr const char* kNoCaps = "0000000000000000";

// The probe launched and its report read; the launch must have succeeded.
struct ProbeRun {
  Launch launch;
  json::object report;
};

ProbeRun start_probe(HelperEnv& env, const LaunchArgs& args) {
  ProbeRun run{env.launch(args), {}};
  if (!run.launch.ok()) {
    throw std::runtime_error("the helper refused the launch: " + json::serialize(run.launch.line) +
                             "\nstderr: " + run.launch.driver->stderr_text());
  }
  run.report = env.wait_for_report(env.report_path(args));
  return run;
}

// SIGTERM, then the probe must exit 0 (its SIGTERM handler) and the driver with it.
void stop_probe(HelperEnv& env, ProbeRun& run) {
  json::object exit = env.stop(run.launch);
  EXPECT_EQ(json_int(exit, "code"), 0) << json::serialize(exit);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) out.push_back(item);
  return out;
}

bool has_token(const std::string& options, const std::string& token) {
  for (const auto& t : split(options, ',')) {
    if (t == token) return true;
  }
  return false;
}

ino_t inode_of(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) throw std::runtime_error("stat " + path);
  return st.st_ino;
}

// The probe opens its API socket before it lists its fds (the socket would show up as fd 3), so
// the fd facts are checked on a probe run without one.
void drop_api_sock(LaunchArgs* args) {
  auto& a = args->vmm_args;
  for (size_t i = 0; i + 1 < a.size(); ++i) {
    if (a[i] == "--api-sock") {
      a.erase(a.begin() + static_cast<std::ptrdiff_t>(i),
              a.begin() + static_cast<std::ptrdiff_t>(i) + 2);
      return;
    }
  }
}

class HelperFactsTest : public HelperEnvTest {};

// Fact: CapInh = CapPrm = CapEff = CapAmb = 0; CapBnd full.
TEST_F(HelperFactsTest, CapabilitySetsAreEmpty) {
  auto args = env().probe_args("caps");
  ProbeRun run = start_probe(env(), args);
  EXPECT_EQ(json_str(run.report, "cap_inh"), kNoCaps);
  EXPECT_EQ(json_str(run.report, "cap_prm"), kNoCaps);
  EXPECT_EQ(json_str(run.report, "cap_eff"), kNoCaps);
  EXPECT_EQ(json_str(run.report, "cap_amb"), kNoCaps);
  // The bounding set stays full: dropping from it takes CAP_SETPCAP, which the helper does not
  // hold. It only caps what an execve may add, and the VMM can neither exec (its filter:
  // SeccompFilterTest, expect_no_exec) nor gain anything by one (no_new_privs, below).
  EXPECT_NE(json_str(run.report, "cap_bnd"), kNoCaps);
  stop_probe(env(), run);
}

// Fact: NoNewPrivs 1.
TEST_F(HelperFactsTest, NoNewPrivsIsSet) {
  auto args = env().probe_args("nnp");
  ProbeRun run = start_probe(env(), args);
  EXPECT_EQ(json_int(run.report, "no_new_privs"), 1);
  EXPECT_EQ(json_int(run.report, "status_no_new_privs"), 1);
  stop_probe(env(), run);
}

// Fact: Seccomp 2 with mount umount2 pivot_root unshare setns move_mount open_tree fsopen
// fsmount fsconfig denied (EPERM).
TEST_F(HelperFactsTest, SeccompFilterDeniesMountAndNamespaceSyscalls) {
  auto args = env().probe_args("seccomp");
  ProbeRun run = start_probe(env(), args);
  EXPECT_EQ(json_int(run.report, "seccomp_mode"), 2);
  const auto& denied = run.report.at("denied_syscalls").as_object();
  for (const char* name : {"mount", "umount2", "pivot_root", "unshare", "setns", "move_mount",
                           "open_tree", "fsopen", "fsmount", "fsconfig", "unshare_newuser"}) {
    EXPECT_EQ(json_int(denied, name), EPERM) << name;
  }
  EXPECT_EQ(denied.size(), 11u) << json::serialize(denied);
  stop_probe(env(), run);
}

// Fact: the named netns.
TEST_F(HelperFactsTest, JoinsTheNamedNetns) {
  auto args = env().probe_args("netns");
  ProbeRun run = start_probe(env(), args);
  const auto netns_inode = static_cast<int64_t>(inode_of("/run/netns/" + env().netns()));
  EXPECT_EQ(json_int(run.report, "netns_inode"), netns_inode);
  EXPECT_NE(json_int(run.report, "netns_inode"),
            static_cast<int64_t>(inode_of("/proc/self/ns/net")));
  stop_probe(env(), run);
}

// Fact: the named netns, as `ip netns exec` shows it: /sys belongs to it (only its lo).
TEST_F(HelperFactsTest, SysfsBelongsToTheJoinedNetns) {
  auto args = env().probe_args("sysfs");
  ProbeRun run = start_probe(env(), args);
  EXPECT_EQ(json_strs(run.report, "sys_class_net"), std::vector<std::string>{"lo"});
  stop_probe(env(), run);
}

// Fact: the named netns, as `ip netns exec` shows it: /etc/netns/NAME/* bound over /etc/*.
TEST_F(HelperFactsTest, EtcNetnsFilesAreBoundOverEtc) {
  auto args = env().probe_args("etc");
  ProbeRun run = start_probe(env(), args);
  EXPECT_NE(json_str(run.report, "etc_hosts").find(env().hosts_marker()), std::string::npos)
      << json_str(run.report, "etc_hosts");
  stop_probe(env(), run);
}

// Fact: cwd == the sandbox dir.
TEST_F(HelperFactsTest, CwdIsTheSandboxDir) {
  auto args = env().probe_args("cwd");
  ProbeRun run = start_probe(env(), args);
  EXPECT_EQ(json_str(run.report, "cwd"), args.sandbox_dir);
  stop_probe(env(), run);
}

// Fact: the sandbox dir is a tmpfs (nosuid,nodev), size capped, mode 0700, owned by the caller.
TEST_F(HelperFactsTest, SandboxDirIsACappedTmpfs) {
  auto args = env().probe_args("tmpfs");
  ProbeRun run = start_probe(env(), args);
  const auto* mount = run.report.at("cwd_mount").if_object();
  ASSERT_NE(mount, nullptr) << "no mount at the sandbox dir: " << json::serialize(run.report);
  EXPECT_EQ(json_str(*mount, "fstype"), "tmpfs");
  const std::string mount_options = json_str(*mount, "mount_options");
  EXPECT_TRUE(has_token(mount_options, "nosuid")) << mount_options;
  EXPECT_TRUE(has_token(mount_options, "nodev")) << mount_options;
  const std::string super_options = json_str(*mount, "super_options");
  for (const char* opt : {"size=8192k", "mode=700", "uid=64123", "gid=64123"}) {
    EXPECT_TRUE(has_token(super_options, opt)) << opt << " not in " << super_options;
  }
  const auto& statfs = run.report.at("cwd_statfs").as_object();
  EXPECT_EQ(json_int(statfs, "f_type"), static_cast<int64_t>(TMPFS_MAGIC));
  EXPECT_EQ(json_int(statfs, "size_bytes"), 8 * 1024 * 1024);
  stop_probe(env(), run);
}

// Fact: the sandbox dir is mode 0700 and owned by the caller.
TEST_F(HelperFactsTest, SandboxDirIsOwnedByTheCallerMode0700) {
  auto args = env().probe_args("stat");
  ProbeRun run = start_probe(env(), args);
  const auto& st = run.report.at("cwd_stat").as_object();
  EXPECT_EQ(json_int(st, "mode"), 0700);
  EXPECT_EQ(json_int(st, "uid"), kTestUid);
  EXPECT_EQ(json_int(st, "gid"), kTestGid);
  stop_probe(env(), run);
}

// Fact: the tmpfs holds the links, and nothing else.
TEST_F(HelperFactsTest, SandboxDirHoldsExactlyTheLinks) {
  auto args = env().probe_args("links");
  ProbeRun run = start_probe(env(), args);
  json::object expected{{"vmlinux", env().images() + "/vmlinux"},
                        {"rootfs.ext4", env().images() + "/rootfs.ext4"}};
  EXPECT_EQ(run.report.at("links").as_object(), expected)
      << json::serialize(run.report.at("links"));
  stop_probe(env(), run);
}

// Fact: a private mount namespace which the host's mount namespace never sees.
TEST_F(HelperFactsTest, HostNeverSeesTheSandboxMount) {
  const std::string before = HelperEnv::host_mountinfo();
  auto args = env().probe_args("hostview");
  ProbeRun run = start_probe(env(), args);
  const std::string during = HelperEnv::host_mountinfo();
  EXPECT_NE(json_int(run.report, "mntns_inode"),
            static_cast<int64_t>(inode_of("/proc/self/ns/mnt")));
  // From the host the sandbox dir is the empty directory under the tmpfs.
  EXPECT_TRUE(std::filesystem::is_empty(args.sandbox_dir));
  stop_probe(env(), run);
  const std::string after = HelperEnv::host_mountinfo();
  EXPECT_EQ(during, before);
  EXPECT_EQ(after, before);
  EXPECT_EQ(during.find(args.sandbox_dir), std::string::npos) << during;
  EXPECT_EQ(during.find(env().sandboxes()), std::string::npos) << during;
}

// Fact: pid == pgid == sid (and the VMM is the helper's pid: exec, not fork).
TEST_F(HelperFactsTest, VmmLeadsItsOwnSessionAndProcessGroup) {
  auto args = env().probe_args("session");
  ProbeRun run = start_probe(env(), args);
  const int64_t pid = json_int(run.report, "pid");
  EXPECT_EQ(pid, run.launch.vmm_pid());
  EXPECT_EQ(run.launch.vmm_pid(), run.launch.helper_pid());
  EXPECT_EQ(json_int(run.report, "pgid"), pid);
  EXPECT_EQ(json_int(run.report, "sid"), pid);
  stop_probe(env(), run);
}

// Fact: only fds 0-2 (and those the request passes).
TEST_F(HelperFactsTest, OnlyStdioIsOpen) {
  auto args = env().probe_args("fds");
  drop_api_sock(&args);
  ProbeRun run = start_probe(env(), args);
  EXPECT_EQ(json_ints(run.report, "fds"), (std::vector<int64_t>{0, 1, 2}))
      << json::serialize(run.report.at("fd_targets"));
  stop_probe(env(), run);
}

// Fact: only fds 0-2 and those the request passes, at their targets.
TEST_F(HelperFactsTest, PassedFdLandsAtItsTarget) {
  const std::string passed = env().make_work_file("passed.txt", "passed\n");
  auto args = env().probe_args("passfd");
  drop_api_sock(&args);
  args.pass_files = {{passed, 7}};
  ProbeRun run = start_probe(env(), args);
  EXPECT_EQ(json_ints(run.report, "fds"), (std::vector<int64_t>{0, 1, 2, 7}))
      << json::serialize(run.report.at("fd_targets"));
  EXPECT_EQ(json_str(run.report.at("fd_targets").as_object(), "7"), passed);
  stop_probe(env(), run);
}

// Fact: only fds 0-2: an fd inherited from the caller's caller (no O_CLOEXEC) stops at the
// helper.
TEST_F(HelperFactsTest, InheritedFdDoesNotReachTheVmm) {
  const std::string leaked = env().make_work_file("leaked.txt", "leaked\n");
  int opened = open(leaked.c_str(), O_RDONLY);  // deliberately without O_CLOEXEC
  ASSERT_GE(opened, 0);
  const int fd = fcntl(opened, F_DUPFD, 42);  // F_DUPFD: no close-on-exec either
  close(opened);
  ASSERT_GE(fd, 0);
  auto args = env().probe_args("inherit");
  drop_api_sock(&args);
  args.inherit_fds = {fd};
  ProbeRun run = start_probe(env(), args);
  close(fd);
  // The premise: the driver (the helper's caller) really holds it.
  std::error_code ec;
  auto held = std::filesystem::read_symlink(
      "/proc/" + std::to_string(run.launch.driver->pid()) + "/fd/" + std::to_string(fd), ec);
  EXPECT_EQ(held.string(), leaked) << ec.message();
  EXPECT_EQ(json_ints(run.report, "fds"), (std::vector<int64_t>{0, 1, 2}))
      << json::serialize(run.report.at("fd_targets"));
  stop_probe(env(), run);
}

// Fact: an environment that is exactly the request's.
TEST_F(HelperFactsTest, EnvironmentIsExactlyTheRequest) {
  auto args = env().probe_args("environ");
  args.env = {"SBX_TEST=1", "PATH=/usr/bin", "LANG=C.UTF-8", "EMPTY="};
  ProbeRun run = start_probe(env(), args);
  EXPECT_EQ(json_strs(run.report, "environ"), args.env);
  std::vector<std::string> argv = {args.vmm};
  argv.insert(argv.end(), args.vmm_args.begin(), args.vmm_args.end());
  EXPECT_EQ(json_strs(run.report, "argv"), argv);
  stop_probe(env(), run);
}

// Fact: the VMM runs as the caller (uid/gid 64123), never as root.
TEST_F(HelperFactsTest, RunsAsTheCaller) {
  auto args = env().probe_args("ids");
  ProbeRun run = start_probe(env(), args);
  for (const char* key : {"uid", "euid"}) EXPECT_EQ(json_int(run.report, key), kTestUid) << key;
  for (const char* key : {"gid", "egid"}) EXPECT_EQ(json_int(run.report, key), kTestGid) << key;
  stop_probe(env(), run);
}

// Sequence step 3: PR_SET_PDEATHSIG re-armed, so the VMM dies with its supervisor.
TEST_F(HelperFactsTest, ParentDeathSignalIsSigkill) {
  auto args = env().probe_args("pdeathsig");
  ProbeRun run = start_probe(env(), args);
  EXPECT_EQ(json_int(run.report, "pdeathsig"), SIGKILL);
  stop_probe(env(), run);
}

// Sequence step 9 and the policy's rlimit_nofile.
TEST_F(HelperFactsTest, RlimitNofileComesFromThePolicy) {
  auto args = env().probe_args("rlimit");
  ProbeRun run = start_probe(env(), args);
  EXPECT_EQ(json_ints(run.report, "rlimit_nofile"), (std::vector<int64_t>{512, 512}));
  stop_probe(env(), run);
}

// A limit below the numbers the helper keeps its own fds at (256 and up) still launches, with
// and without a PID namespace: the helper moves its fds before it lowers the limit.
TEST_F(HelperFactsTest, ALowRlimitNofileStillLaunches) {
  PolicySpec policy = env().default_policy();
  policy.rlimit_nofile = 64;
  ScopedPolicy scoped(env(), policy);
  for (bool pidns : {false, true}) {
    auto args = env().probe_args(pidns ? "rlimit-low-pidns" : "rlimit-low");
    args.pid_namespace = pidns;
    ProbeRun run = start_probe(env(), args);
    EXPECT_EQ(json_ints(run.report, "rlimit_nofile"), (std::vector<int64_t>{64, 64}));
    stop_probe(env(), run);
  }
}

// The helper resets signal dispositions and the mask: a caller's SIG_IGN does not reach the VMM.
TEST_F(HelperFactsTest, SignalDispositionsAreReset) {
  auto args = env().probe_args("signals");
  args.ignore_sigterm = true;
  ProbeRun run = start_probe(env(), args);
  // The premise: the driver (the helper's caller) runs with SIGTERM ignored.
  const std::string ignored = proc_status(run.launch.driver->pid())["SigIgn"];
  ASSERT_FALSE(ignored.empty());
  EXPECT_TRUE((std::stoull(ignored, nullptr, 16) >> (SIGTERM - 1)) & 1) << ignored;
  EXPECT_EQ(json_str(run.report, "sigterm_disposition"), "default");
  EXPECT_EQ(json_str(run.report, "blocked_signals"), kNoCaps);
  stop_probe(env(), run);
}

// Sequence step 5 with CLONE_NEWPID: pid 1 of the namespace is the forwarding init (the
// helper's own code, not dumpable, no capabilities), the VMM its child, pid 2; both pids are
// reported to the caller as the caller sees them.
TEST_F(HelperFactsTest, PidNamespaceRunsTheVmmUnderAForwardingInit) {
  auto args = env().probe_args("pidns");
  args.pid_namespace = true;
  ProbeRun run = start_probe(env(), args);
  const pid_t init = static_cast<pid_t>(json_int(run.launch.line, "init_pid"));
  EXPECT_NE(init, run.launch.helper_pid());
  EXPECT_NE(run.launch.vmm_pid(), init);
  EXPECT_EQ(json_int(run.report, "pid"), 2);
  EXPECT_EQ(json_int(run.report, "ppid"), 1);
  EXPECT_EQ(json_int(run.report, "pgid"), 1);
  EXPECT_EQ(json_int(run.report, "sid"), 1);
  EXPECT_NE(json_int(run.report, "pidns_inode"),
            static_cast<int64_t>(inode_of("/proc/self/ns/pid")));
  std::ifstream vmm_comm("/proc/" + std::to_string(run.launch.vmm_pid()) + "/comm");
  std::string comm;
  std::getline(vmm_comm, comm);
  EXPECT_EQ(comm, "sbx-probe-vmm");
  std::ifstream init_comm("/proc/" + std::to_string(init) + "/comm");
  std::getline(init_comm, comm);
  EXPECT_EQ(json_str(run.report, "proc_pid1_comm"), comm);
  EXPECT_EQ(comm, "sbx-nsexec");
  // The init: no capabilities, not dumpable (root reads it from outside).
  auto status = proc_status(init);
  EXPECT_EQ(status["CapEff"], "0000000000000000");
  EXPECT_EQ(status["CapPrm"], "0000000000000000");
  struct stat st;
  // A non-dumpable process's /proc/PID files belong to root; the control is the VMM, the
  // same user's dumpable process in the same namespace, whose files are the user's.
  ASSERT_EQ(stat(("/proc/" + std::to_string(init) + "/mem").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  ASSERT_EQ(stat(("/proc/" + std::to_string(run.launch.vmm_pid()) + "/mem").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, static_cast<uid_t>(kTestUid));
  stop_probe(env(), run);
}

// Nothing changed on the host: once the VMM exits no process of the caller remains and the
// host's mount table is as it was.
TEST_F(HelperFactsTest, NothingRemainsAfterTheVmmExits) {
  const std::string before = HelperEnv::host_mountinfo();
  auto args = env().probe_args("after");
  ProbeRun run = start_probe(env(), args);
  stop_probe(env(), run);  // the exit line, then the driver reaped
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes())
      << "left: " << ::testing::PrintToString(HelperEnv::test_user_processes());
  EXPECT_EQ(HelperEnv::host_mountinfo(), before);
}

// Safe when the caller is root: refused unless the policy says allow_root_vmm = true.
TEST_F(HelperFactsTest, RootCallerIsRefusedByDefault) {
  auto args = env().probe_args("root-refused");
  args.as_root = true;
  args.vmm_args = {"--report", env().root_work() + "/report-" + args.id + ".json"};
  Launch l = env().launch(args);
  ASSERT_FALSE(l.ok()) << json::serialize(l.line);
  EXPECT_EQ(json_str(l.error(), "step"), "validate_request");
  EXPECT_EQ(json_int(l.error(), "errno"), EPERM);
  json::object exit = env().read_exit(l);
  EXPECT_EQ(json_int(exit, "code"), 125) << json::serialize(exit);
}

// Safe when the caller is root: with allow_root_vmm the VMM runs as uid 0 with every set empty,
// the bounding set included (root had CAP_SETPCAP to drop it).
TEST_F(HelperFactsTest, RootCallerWithAllowRootVmmHasNoCapabilitiesAtAll) {
  PolicySpec policy = env().default_policy();
  policy.allow_root_vmm = true;
  ScopedPolicy scoped(env(), policy);
  auto args = env().probe_args("root-allowed");
  args.as_root = true;
  args.vmm_args = {"--report", env().root_work() + "/report-" + args.id + ".json"};
  ProbeRun run = start_probe(env(), args);
  EXPECT_EQ(json_int(run.report, "uid"), 0);
  for (const char* key : {"cap_inh", "cap_prm", "cap_eff", "cap_bnd", "cap_amb"}) {
    EXPECT_EQ(json_str(run.report, key), kNoCaps) << key;
  }
  EXPECT_EQ(json_int(run.report, "no_new_privs"), 1);
  EXPECT_EQ(json_int(run.report, "seccomp_mode"), 2);
  stop_probe(env(), run);
}

// ---------------------------------------------------------------------------------------------
// The helper's command line: --version, --check-policy, and any other way of running it.

class HelperInvocationTest : public HelperEnvTest {
 protected:
  // Runs the helper with `args` and `options` as the test user; expects a non-zero exit, an
  // explanation containing `why` on stderr, and nothing changed on the host.
  void expect_refused_invocation(const std::vector<std::string>& args, const SpawnOptions& options,
                                 const std::string& why) {
    const std::string mounts = HelperEnv::host_mountinfo();
    const auto listing = env().sandbox_root_listing();
    auto helper = env().spawn_helper(args, options, false);
    for (const auto& [child_fd, parent_fd] : options.fd_map) close(parent_fd);
    const std::string out = helper->read_all();
    auto status = helper->wait();
    ASSERT_TRUE(status.has_value()) << "the helper did not exit";
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) != 0) << "status " << *status;
    EXPECT_NE(helper->stderr_text().find(why), std::string::npos) << helper->stderr_text();
    EXPECT_EQ(out, "");
    EXPECT_EQ(HelperEnv::host_mountinfo(), mounts);
    EXPECT_EQ(env().sandbox_root_listing(), listing);
    EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
  }

  // A SEQPACKET pair with a valid LAUNCH for the probe queued on it, as a supervisor would
  // send; returns {test end, helper end}.
  std::pair<int, int> control_pair_with_request(LaunchArgs* args) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    *args = env().probe_args("queued");
    auto bytes = protocol::encode(make_request(*args));
    EXPECT_TRUE(bytes.ok());
    EXPECT_EQ(send(sv[0], bytes.value().data(), bytes.value().size(), 0),
              static_cast<ssize_t>(bytes.value().size()));
    return {sv[0], sv[1]};
  }
};

TEST_F(HelperInvocationTest, VersionExitsZero) {
  auto helper = env().spawn_helper({"--version"}, {}, false);
  const std::string out = helper->read_all();
  auto status = helper->wait();
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "status " << *status;
  EXPECT_TRUE(out.starts_with("sbx-nsexec ")) << out;
  EXPECT_NE(out.find(env().policy_path()), std::string::npos) << out;
}

TEST_F(HelperInvocationTest, WithoutFd3ItExplainsItselfAndDoesNothing) {
  expect_refused_invocation({}, {}, "fd 3 is not open");
}

TEST_F(HelperInvocationTest, RegularFileAsFd3IsRefused) {
  const std::string file = env().make_work_file("not-a-socket", "x\n");
  int fd = open(file.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  SpawnOptions options;
  options.fd_map = {{3, fd}};
  expect_refused_invocation({}, options, "fd 3 is not a socket");
}

TEST_F(HelperInvocationTest, StreamSocketAsFd3IsRefused) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  SpawnOptions options;
  options.fd_map = {{3, sv[1]}};
  expect_refused_invocation({}, options, "not a SOCK_SEQPACKET socket");
  char c;
  EXPECT_EQ(recv(sv[0], &c, 1, MSG_DONTWAIT), 0) << "the helper wrote to a stream socket";
  close(sv[0]);
}

// An extra argument is refused even with a valid request waiting on a real control socket:
// the helper reads nothing, reports nothing and launches nothing.
TEST_F(HelperInvocationTest, ExtraArgumentIsRefused) {
  LaunchArgs args;
  auto [ours, theirs] = control_pair_with_request(&args);
  SpawnOptions options;
  options.fd_map = {{3, theirs}};
  expect_refused_invocation({"--launch"}, options, "usage: sbx-nsexec");
  // The helper exited with the request unread: the kernel reports that as ECONNRESET (once),
  // then EOF. No message may come.
  char buf[256];
  ssize_t n = recv(ours, buf, sizeof(buf), MSG_DONTWAIT);
  if (n < 0 && errno == ECONNRESET) n = recv(ours, buf, sizeof(buf), MSG_DONTWAIT);
  EXPECT_EQ(n, 0) << (n < 0 ? std::strerror(errno) : "the helper sent a message");
  close(ours);
  EXPECT_FALSE(std::filesystem::exists(env().report_path(args)));
  EXPECT_FALSE(std::filesystem::exists(args.sandbox_dir));
}

TEST_F(HelperInvocationTest, CheckPolicyPrintsThePolicy) {
  auto helper = env().spawn_helper({"--check-policy"}, {}, true);
  const std::string out = helper->read_all();
  auto status = helper->wait();
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
      << "status " << *status << ": " << helper->stderr_text();
  const std::string expected = "# " + env().policy_path() + "\n" + "vmm = " + env().probe() + "\n" +
                               "sandbox_root = " + env().sandboxes() + "\n" +
                               "image_root = " + env().images() + "\n" +
                               "netns = sbx-it-*\n"
                               "tmpfs_size_mb = 8\n"
                               "rlimit_nofile = 512\n"
                               "allow_root_vmm = false\n"
                               "audit = best_effort\n"
                               "landlock = best_effort\n"
                               "jail = optional\n";
  EXPECT_EQ(out, expected);
}

TEST_F(HelperInvocationTest, CheckPolicyNamesFileAndLineOfAnError) {
  PolicySpec policy = env().default_policy();
  // The header comment is line 1; then vmm, sandbox_root, image_root, netns, tmpfs_size_mb,
  // rlimit_nofile, allow_root_vmm (lines 2-8); the bad line is line 9.
  policy.extra_lines = {"tmpfs_size_mb = 8"};
  ScopedPolicy scoped(env(), policy);
  auto helper = env().spawn_helper({"--check-policy"}, {}, true);
  const std::string out = helper->read_all();
  auto status = helper->wait();
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) != 0) << "status " << *status;
  EXPECT_EQ(out, "");
  const std::string err = helper->stderr_text();
  EXPECT_NE(err.find(env().policy_path() + ":9:"), std::string::npos) << err;
  EXPECT_NE(err.find("given twice"), std::string::npos) << err;
}

}  // namespace
}  // namespace sbx::it
