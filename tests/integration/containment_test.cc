// SPDX-License-Identifier: Apache-2.0
// Containment of a compromised VMM: attacks run from inside a sandbox by the probe (standing in
// for a VMM a guest escaped into) against its own supervisor, a sibling VMM of the same user, the
// host's files, devices and the sandbox dir. Each attack is asserted to fail with its errno, with
// and without a PID namespace, and each sits next to a control in which the same probe code,
// without the protection, succeeds: run outside any sandbox against a dumpable process, against
// the sibling, or in a sandbox whose policy turns the layer off. So no test passes vacuously.
//
// The layers: the supervisor is not dumpable (PR_SET_DUMPABLE 0); the VMM's seccomp filter
// refuses ptrace, process_vm_*, pidfd_getfd, kcmp and PR_SET_PDEATHSIG; its Landlock domain
// scopes signals and keeps it from ptrace-mode access to anything outside the domain; with
// `files`, Landlock allows only what the spec gave; the sandbox tmpfs is noexec; the filter
// refuses every exec but the helper's own, and the key-management calls; an IPC namespace.
#include <signal.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/helper_env.h"
#include "tests/integration/supervisor_env.h"

namespace sbx::it {
namespace {

namespace json = boost::json;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// The errno an attack met (0: it worked), or -1 for null (not tried).
int64_t attack(const json::object& attacks, const char* target, const char* what) {
  const json::value& v = attacks.at("targets").as_object().at(target).as_object().at(what);
  return v.is_null() ? -1 : v.as_int64();
}

bool gone_within(pid_t pid, std::chrono::milliseconds timeout) {
  const auto deadline = deadline_after(timeout);
  while (Clock::now() < deadline) {
    if (!process_exists(pid)) return true;
    HelperEnv::wait_no_test_user_processes(std::chrono::milliseconds(20));
  }
  return !process_exists(pid);
}

class ContainmentTest : public SupervisorEnvTest {
 protected:
  // A sandboxed VMM under its own supervisor, started and ready, with its spec.
  struct Sandboxed : Running {
    ProbeSpec spec;
    pid_t pid = -1;  // the VMM's own
  };

  Sandboxed start(ProbeSpec spec) {
    Sandboxed s;
    static_cast<Running&>(s) = launch(spec);
    s.spec = std::move(spec);
    s.pid = s.vmm_pid();
    return s;
  }

  void stop(Sandboxed& s) {
    if (!s.run) return;
    s.run->terminate();
    s.run->finish();
    s.run.reset();
  }

  // The probe outside any sandbox, as the test user: the control attacker and stand-ins.
  std::unique_ptr<ChildProcess> start_outside(const std::vector<std::string>& probe_args) {
    std::vector<std::string> argv = as_test_user();
    argv.push_back(env().probe());
    argv.insert(argv.end(), probe_args.begin(), probe_args.end());
    return std::make_unique<ChildProcess>(argv, SpawnOptions{}, stderr_path("outside-probe"));
  }

  // Writes the attack file (NAME PID per line), root-owned 0644, and waits for the results.
  json::object run_attacks(const std::string& attack_file, const std::string& report,
                           const std::vector<std::pair<std::string, pid_t>>& targets) {
    std::string text;
    for (const auto& [name, pid] : targets) text += name + " " + std::to_string(pid) + "\n";
    const std::string tmp = attack_file + ".tmp";
    {
      std::ofstream out(tmp);
      out << text;
    }
    chmod(tmp.c_str(), 0644);
    fs::rename(tmp, attack_file);
    return env().wait_for_report(report + ".attacks");
  }

  std::string make_caller_dir(const std::string& stem) {
    return env().make_caller_dir(stem + "-" + std::to_string(++dirs_made_));
  }

  // The attacks from inside a sandbox, with or without a PID namespace, against the attacker's
  // own supervisor and a sibling VMM under another supervisor.
  void attacks_from_inside(bool pid_namespace) {
    const std::string mounts = host_mounts();
    const std::string abstract_name = "sbx-it-abstract-" + std::to_string(getpid());
    ProbeSpec sibling_spec = probe_spec(pid_namespace ? "sibling-pidns" : "sibling",
                                        {"--listen-abstract", abstract_name});
    sibling_spec.json["pid_namespace"] = pid_namespace;
    Sandboxed sibling = start(sibling_spec);

    const std::string attack_file = env().work() + "/attacks-" + sibling.spec.id;
    ProbeSpec attacker_spec =
        probe_spec(pid_namespace ? "attacker-pidns" : "attacker",
                   {"--attack-file", attack_file, "--connect-abstract", abstract_name});
    attacker_spec.json["pid_namespace"] = pid_namespace;
    Sandboxed attacker = start(attacker_spec);
    const int abi = layer_landlock_abi();
    EXPECT_EQ(json_int(attacker.started, "landlock_abi"), abi) << json::serialize(attacker.started);
    // The sibling's abstract socket (same netns): Landlock's scope (ABI 6) refuses the
    // connection; below it, the connection goes through (README says so per ABI).
    EXPECT_EQ(attacker.report.at("connect_abstract").as_object().at(abstract_name).as_int64(),
              abi >= 6 ? EPERM : 0);

    json::object a = run_attacks(attack_file, attacker.spec.report,
                                 {{"supervisor", attacker.run->pid()}, {"sibling", sibling.pid}});
    SCOPED_TRACE(json::serialize(a));
    for (const char* target : {"supervisor", "sibling"}) {
      SCOPED_TRACE(target);
      // The filter answers ptrace before the kernel looks for the process.
      EXPECT_EQ(attack(a, target, "ptrace"), EPERM);
      if (pid_namespace) {
        // Nothing outside the namespace has a pid inside it, nor an entry in its /proc.
        EXPECT_EQ(attack(a, target, "pidfd_open"), ESRCH);
        EXPECT_EQ(attack(a, target, "proc_root"), ENOENT);
        EXPECT_EQ(attack(a, target, "proc_mem"), ENOENT);
        EXPECT_EQ(attack(a, target, "kill"), ESRCH);
      } else {
        EXPECT_EQ(attack(a, target, "pidfd_open"), 0);
        EXPECT_EQ(attack(a, target, "pidfd_getfd"), EPERM);
        EXPECT_EQ(attack(a, target, "proc_root"), EACCES);
        EXPECT_EQ(attack(a, target, "proc_mem"), EACCES);
        // Landlock's signal scope (ABI 6); below it the signal goes through (the probe
        // catches it), which only a PID namespace, the default, prevents.
        EXPECT_EQ(attack(a, target, "kill"), abi >= 6 ? EPERM : 0);
      }
    }
    // The supervisor connected to the API socket for readiness: its pidfd comes with the
    // connection, and its fds still do not.
    ASSERT_TRUE(a.at("peer").is_object());
    const json::object& peer = a.at("peer").as_object();
    if (kernel_at_least(6, 5)) {
      EXPECT_EQ(json_int(peer, "peerpidfd"), 0);
      EXPECT_EQ(json_int(peer, "pidfd_getfd"), EPERM);
    } else {
      EXPECT_EQ(json_int(peer, "peerpidfd"), ENOPROTOOPT);  // SO_PEERPIDFD is Linux 6.5
    }

    EXPECT_TRUE(process_alive(attacker.run->pid()));
    EXPECT_TRUE(process_alive(sibling.pid));
    stop(attacker);
    stop(sibling);
    EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
    EXPECT_EQ(host_mounts(), mounts);
  }

  // --clear-pdeathsig inside a sandbox, then the supervisor SIGKILLed: the VMM must be gone.
  void pdeathsig_cannot_be_cleared(bool pid_namespace) {
    ProbeSpec spec = probe_spec(pid_namespace ? "pdeath-pidns" : "pdeath", {"--clear-pdeathsig"});
    spec.json["pid_namespace"] = pid_namespace;
    Sandboxed s = start(spec);
    EXPECT_EQ(json_int(s.report, "clear_pdeathsig"), EPERM) << json::serialize(s.report);
    // Without a PID namespace the VMM carries the parent-death signal; with one, the
    // namespace init does, and the namespace dies with it.
    EXPECT_EQ(json_int(s.report, "pdeathsig"), pid_namespace ? 0 : SIGKILL);
    ASSERT_EQ(kill(s.run->pid(), SIGKILL), 0);
    EXPECT_EQ(s.run->reap(), -SIGKILL);
    s.run.reset();
    EXPECT_TRUE(gone_within(s.pid, std::chrono::seconds(5))) << "the VMM outlived its supervisor";
    EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
  }

  // With `files`: a file the caller can read but the VMM was not given, a device it was not
  // given, an ioctl on a basic /dev node; and a binary written into the sandbox dir and into
  // its read_write dir, and into a memfd: no exec of it (the filter), directly, through the
  // dynamic loader or through /proc/self/fd. Mapping a written file for execution is refused
  // in the noexec sandbox dir, and still works in the read_write dir outside a jail (README,
  // "It can still"; in a jail that dir is noexec too: jail_test).
  void files_confine(bool pid_namespace) {
    PolicySpec policy = env().default_policy();
    policy.extra_lines = {"read_only = /usr"};
    ScopedPolicy scoped(env(), policy);
    const std::string secret = env().make_work_file("secret-" + std::to_string(pid_namespace), "s");
    const std::string rw = make_caller_dir(pid_namespace ? "files-pidns" : "files");
    ProbeSpec spec = probe_spec(pid_namespace ? "files-pidns" : "files", {}, false);
    spec.report = rw + "/report.json";
    spec.api_socket = rw + "/api.sock";
    spec.json["vmm"].as_object()["args"] =
        json::array{"--report",       spec.report, "--api-sock",     spec.api_socket,
                    "--read-file",    secret,      "--read-file",    "/usr/lib/os-release",
                    "--ioctl-device", "/dev/ptmx", "--ioctl-device", "/dev/null",
                    "--exec-written", ".",         "--exec-written", rw,
                    "--exec-memfd"};
    spec.json["api_socket"] = spec.api_socket;
    spec.json["pid_namespace"] = pid_namespace;
    spec.json["files"] =
        json::object{{"read_only", json::array{"/usr"}}, {"read_write", json::array{rw}}};
    Sandboxed s = start(spec);
    const json::object& r = s.report;
    SCOPED_TRACE(json::serialize(r));
    const json::object& reads = r.at("read_files").as_object();
    EXPECT_EQ(reads.at(secret).as_int64(), EACCES);
    EXPECT_EQ(reads.at("/usr/lib/os-release").as_int64(), 0);
    const json::object& ptmx = r.at("ioctl_devices").as_object().at("/dev/ptmx").as_object();
    EXPECT_EQ(json_int(ptmx, "open"), EACCES);
    const json::object& null = r.at("ioctl_devices").as_object().at("/dev/null").as_object();
    EXPECT_EQ(json_int(null, "open"), 0);
    // LANDLOCK_ACCESS_FS_IOCTL_DEV (ABI 5) not given; below ABI 5 the ioctl reaches the
    // driver, which refuses it (README says so per ABI).
    EXPECT_EQ(json_int(null, "ioctl"), layer_landlock_abi() >= 5 ? EACCES : ENOTTY);
    expect_no_exec(r, {".", rw});
    EXPECT_EQ(json_int(r.at("exec_written").as_object().at(".").as_object(), "mmap_exec"), EPERM);
    EXPECT_EQ(json_int(r.at("exec_written").as_object().at(rw).as_object(), "mmap_exec"), 0);
    stop(s);
    EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
  }

 private:
  int dirs_made_ = 0;
};

TEST_F(ContainmentTest, AttacksOnSupervisorAndSiblingFail) {
  attacks_from_inside(false);
}

TEST_F(ContainmentTest, AttacksOnSupervisorAndSiblingFailInAPidNamespace) {
  attacks_from_inside(true);
}

// Control: the same attacks from the same probe outside any sandbox succeed against a
// dumpable process of the user (a supervisor that had not made itself non-dumpable) and against
// the sandboxed sibling itself; against the real supervisor only the signal does, which shows
// what PR_SET_DUMPABLE 0 alone takes away.
TEST_F(ContainmentTest, ControlTheSameAttacksFromOutsideSucceed) {
  Sandboxed sibling = start(probe_spec("control-sibling"));
  const std::string standin_report = env().work() + "/standin-report.json";
  auto standin = start_outside({"--report", standin_report});
  env().wait_for_report(standin_report);
  const std::string report = env().work() + "/control-attacker.json";
  const std::string attack_file = env().work() + "/control-attacks";
  auto attacker = start_outside({"--report", report, "--attack-file", attack_file});
  env().wait_for_report(report);
  json::object a = run_attacks(
      attack_file, report,
      {{"standin", standin->pid()}, {"sibling", sibling.pid}, {"supervisor", sibling.run->pid()}});
  SCOPED_TRACE(json::serialize(a));
  for (const char* target : {"standin", "sibling"}) {
    SCOPED_TRACE(target);
    for (const char* what :
         {"ptrace", "pidfd_open", "pidfd_getfd", "proc_root", "proc_mem", "kill"}) {
      EXPECT_EQ(attack(a, target, what), 0) << what;
    }
  }
  EXPECT_EQ(attack(a, "supervisor", "ptrace"), EPERM);
  EXPECT_EQ(attack(a, "supervisor", "pidfd_getfd"), EPERM);
  EXPECT_EQ(attack(a, "supervisor", "proc_root"), EACCES);
  EXPECT_EQ(attack(a, "supervisor", "proc_mem"), EACCES);
  EXPECT_EQ(attack(a, "supervisor", "kill"), 0);
  kill(attacker->pid(), SIGTERM);
  kill(standin->pid(), SIGTERM);
  attacker->wait();
  standin->wait();
  stop(sibling);
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
}

// Control for Landlock: with `landlock = off` the sandboxed attacker can signal its supervisor
// and the sibling, open the sibling's memory and connect to its abstract unix socket; ptrace
// stays refused by the filter.
TEST_F(ContainmentTest, ControlWithoutLandlockSignalsAndMemoryGoThrough) {
  PolicySpec policy = env().default_policy();
  policy.extra_lines = {"landlock = off"};
  ScopedPolicy scoped(env(), policy);
  const std::string abstract_name = "sbx-it-abstract-nl-" + std::to_string(getpid());
  Sandboxed sibling = start(probe_spec("nolandlock-sibling", {"--listen-abstract", abstract_name}));
  EXPECT_EQ(json_int(sibling.started, "landlock_abi"), 0);
  const std::string attack_file = env().work() + "/attacks-nolandlock";
  Sandboxed attacker = start(probe_spec(
      "nolandlock-attacker", {"--attack-file", attack_file, "--connect-abstract", abstract_name}));
  EXPECT_EQ(attacker.report.at("connect_abstract").as_object().at(abstract_name).as_int64(), 0);
  json::object a = run_attacks(attack_file, attacker.spec.report,
                               {{"supervisor", attacker.run->pid()}, {"sibling", sibling.pid}});
  SCOPED_TRACE(json::serialize(a));
  EXPECT_EQ(attack(a, "supervisor", "kill"), 0);
  EXPECT_EQ(attack(a, "sibling", "kill"), 0);
  EXPECT_EQ(attack(a, "sibling", "proc_mem"), 0);
  EXPECT_EQ(attack(a, "sibling", "proc_root"), 0);
  EXPECT_EQ(attack(a, "sibling", "ptrace"), EPERM);
  // The supervisor is still not dumpable.
  EXPECT_EQ(attack(a, "supervisor", "proc_mem"), EACCES);
  stop(attacker);
  stop(sibling);
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
}

// Control for SO_PEERPIDFD: outside any sandbox, a listener gets a dumpable peer's fds. Before
// Linux 6.5 there is no SO_PEERPIDFD (ENOPROTOOPT), so no such attack either: asserted as such.
TEST_F(ContainmentTest, ControlPeerPidfdGivesADumpablePeersFds) {
  const std::string sock = env().work() + "/control-peer.sock";
  const std::string report = env().work() + "/control-listener.json";
  const std::string attack_file = env().work() + "/control-peer-attacks";
  auto listener =
      start_outside({"--report", report, "--api-sock", sock, "--attack-file", attack_file});
  env().wait_for_report(report);
  const std::string peer_report = env().work() + "/control-peer.json";
  auto peer = start_outside({"--report", peer_report, "--connect", sock});
  env().wait_for_report(peer_report);
  json::object a = run_attacks(attack_file, report, {});
  SCOPED_TRACE(json::serialize(a));
  ASSERT_TRUE(a.at("peer").is_object());
  EXPECT_EQ(json_int(a.at("peer").as_object(), "pid"), peer->pid());
  if (kernel_at_least(6, 5)) {
    EXPECT_EQ(json_int(a.at("peer").as_object(), "peerpidfd"), 0);
    EXPECT_EQ(json_int(a.at("peer").as_object(), "pidfd_getfd"), 0);
  } else {
    EXPECT_EQ(json_int(a.at("peer").as_object(), "peerpidfd"), ENOPROTOOPT);
  }
  kill(peer->pid(), SIGTERM);
  kill(listener->pid(), SIGTERM);
  peer->wait();
  listener->wait();
}

TEST_F(ContainmentTest, PdeathsigCannotBeClearedToOutliveTheSupervisor) {
  pdeathsig_cannot_be_cleared(false);
}

TEST_F(ContainmentTest, PdeathsigCannotBeClearedInAPidNamespace) {
  pdeathsig_cannot_be_cleared(true);
}

// Control: outside any sandbox, the same probe clears its parent-death signal and outlives
// its parent's SIGKILL.
TEST_F(ContainmentTest, ControlPdeathsigClearedOutsideOutlivesTheParent) {
  const std::string report = env().work() + "/control-pdeath.json";
  std::vector<std::string> argv = as_test_user();
  argv.insert(argv.end(), {"/bin/sh", "-c",
                           std::string(kSetpriv) + " --pdeathsig KILL " + env().probe() +
                               " --report " + report + " --clear-pdeathsig & echo $!; wait"});
  ChildProcess parent(argv, SpawnOptions{}, stderr_path("control-pdeath"));
  auto line = parent.read_line();
  ASSERT_TRUE(line.has_value()) << parent.stderr_text();
  const pid_t probe = std::stoi(*line);
  json::object r = env().wait_for_report(report);
  EXPECT_EQ(json_int(r, "clear_pdeathsig"), 0);
  EXPECT_EQ(json_int(r, "pdeathsig"), 0);
  ASSERT_EQ(kill(parent.pid(), SIGKILL), 0);
  parent.wait();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_TRUE(process_alive(probe)) << "the control probe died with its parent";
  kill(probe, SIGKILL);
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
}

TEST_F(ContainmentTest, FilesConfineReadsDevicesIoctlsAndExec) {
  files_confine(false);
}

TEST_F(ContainmentTest, FilesConfineReadsDevicesIoctlsAndExecInAPidNamespace) {
  files_confine(true);
}

// Control: the same probe without `files` and with /dev/ptmx reads the caller's file, opens
// and ioctls the device, and maps what it wrote outside the noexec tmpfs for execution; exec
// stays refused (the filter is not a `files` layer).
TEST_F(ContainmentTest, ControlWithoutFilesTheSameReadsSucceed) {
  const std::string secret = env().make_work_file("secret-control", "s");
  ProbeSpec spec =
      probe_spec("files-control", {"--read-file", secret, "--ioctl-device", "/dev/ptmx",
                                   "--ioctl-device", "/dev/null", "--exec-written", ".",
                                   "--exec-written", env().work(), "--exec-memfd"});
  Sandboxed s = start(spec);
  const json::object& r = s.report;
  SCOPED_TRACE(json::serialize(r));
  EXPECT_EQ(r.at("read_files").as_object().at(secret).as_int64(), 0);
  const json::object& ptmx = r.at("ioctl_devices").as_object().at("/dev/ptmx").as_object();
  EXPECT_EQ(json_int(ptmx, "open"), 0);
  EXPECT_EQ(json_int(ptmx, "ioctl"), 0);
  const json::object& null = r.at("ioctl_devices").as_object().at("/dev/null").as_object();
  EXPECT_EQ(json_int(null, "ioctl"), ENOTTY);  // reached the driver
  const json::object& exec = r.at("exec_written").as_object();
  EXPECT_EQ(json_int(exec.at(".").as_object(), "mmap_exec"), EPERM);  // the noexec tmpfs
  EXPECT_EQ(json_int(exec.at(env().work()).as_object(), "mmap_exec"), 0);
  expect_no_exec(r, {".", env().work()});
  stop(s);
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
}

// Control for exec: outside any sandbox, as the same user, the same probe executes what it
// wrote, directly and through the dynamic loader, and its memfd copy by fd and by path.
TEST_F(ContainmentTest, ControlOutsideASandboxWrittenFilesAndMemfdsExecute) {
  const std::string report = env().work() + "/control-exec.json";
  auto outside = start_outside(
      {"--report", report, "--exec-written", env().work(), "--exec-memfd", "--exit-now"});
  json::object r = env().wait_for_report(report);
  SCOPED_TRACE(json::serialize(r));
  const json::object& d = r.at("exec_written").as_object().at(env().work()).as_object();
  EXPECT_EQ(json_int(d, "exec"), 0);
  EXPECT_EQ(json_int(d, "loader"), 0);
  EXPECT_EQ(json_int(d, "mmap_exec"), 0);
  const json::object& memfd = r.at("exec_memfd").as_object();
  EXPECT_EQ(json_int(memfd, "execveat"), 0);
  EXPECT_EQ(json_int(memfd, "proc_fd"), 0);
  outside->wait();
}

// The caller's SysV IPC and keyrings, from a sandbox with and without a PID namespace and from
// a jail: a 0600 shared-memory segment of the user (another IPC namespace: no such id), a key
// in the user's keyring, and a new key there (the filter). The control, outside any sandbox,
// reads both secrets and adds the key.
class IpcTest : public ContainmentTest {
 protected:
  void SetUp() override {
    ContainmentTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    const std::string report = env().work() + "/ipc-maker.json";
    maker_ = start_outside({"--report", report, "--make-ipc"});
    json::object r = env().wait_for_report(report);
    const json::object& made = r.at("made_ipc").as_object();
    shm_id_ = json_int(made, "shm_id");
    key_id_ = json_int(made, "key_id");
    ASSERT_GE(shm_id_, 0) << json::serialize(r);
    ASSERT_GT(key_id_, 0) << json::serialize(r);
  }
  void TearDown() override {
    if (shm_id_ >= 0) shmctl(static_cast<int>(shm_id_), IPC_RMID, nullptr);
    if (maker_) {
      kill(maker_->pid(), SIGTERM);
      maker_->wait();
    }
    ContainmentTest::TearDown();
  }
  std::vector<std::string> attack_flags() const {
    return {"--shm-id", std::to_string(shm_id_), "--key-id", std::to_string(key_id_), "--add-key"};
  }
  static void expect_refused(const json::object& report) {
    SCOPED_TRACE(json::serialize(report));
    const json::object& a = report.at("ipc_attacks").as_object();
    EXPECT_EQ(json_int(a, "shmat"), EINVAL);  // no such segment in its IPC namespace
    EXPECT_EQ(json_int(a, "shm_secret"), 0);
    EXPECT_EQ(json_int(a, "keyctl_read"), EPERM);
    EXPECT_EQ(json_int(a, "key_secret"), 0);
    EXPECT_EQ(json_int(a, "add_key"), EPERM);
  }

  std::unique_ptr<ChildProcess> maker_;
  int64_t shm_id_ = -1, key_id_ = -1;
};

TEST_F(IpcTest, SysvShmAndKeyringsAreOutOfReach) {
  Sandboxed s = start(probe_spec("ipc", attack_flags()));
  expect_refused(s.report);
  stop(s);
}

TEST_F(IpcTest, SysvShmAndKeyringsAreOutOfReachInAPidNamespace) {
  ProbeSpec spec = probe_spec("ipc-pidns", attack_flags());
  spec.json["pid_namespace"] = true;
  Sandboxed s = start(spec);
  expect_refused(s.report);
  stop(s);
}

TEST_F(IpcTest, SysvShmAndKeyringsAreOutOfReachInAJail) {
  PolicySpec policy = env().default_policy();
  policy.extra_lines = {"read_only = /usr"};
  ScopedPolicy scoped(env(), policy);
  Sandboxed s = start(jailed_spec("ipc-jail", attack_flags()));
  expect_refused(s.report);
  stop(s);
}

TEST_F(IpcTest, ControlOutsideASandboxTheSameUserReadsBothAndAddsAKey) {
  const std::string report = env().work() + "/ipc-control.json";
  std::vector<std::string> flags = {"--report", report};
  for (const auto& f : attack_flags()) flags.push_back(f);
  auto outside = start_outside(flags);
  json::object r = env().wait_for_report(report);
  SCOPED_TRACE(json::serialize(r));
  const json::object& a = r.at("ipc_attacks").as_object();
  EXPECT_EQ(json_int(a, "shmat"), 0);
  EXPECT_EQ(json_int(a, "shm_secret"), 1);
  EXPECT_EQ(json_int(a, "keyctl_read"), 0);
  EXPECT_EQ(json_int(a, "key_secret"), 1);
  EXPECT_EQ(json_int(a, "add_key"), 0);
  kill(outside->pid(), SIGTERM);
  outside->wait();
}

// Metadata Landlock does not cover, of a 0600 file of the caller's that `files` did not give:
// its mode, owner and extended attributes stay as they were (the filter); its times can be
// changed (README, "It can still"). The control changes all four from outside a sandbox.
class MetadataTest : public ContainmentTest {
 protected:
  std::string caller_file(const std::string& name) {
    const std::string path = env().make_work_file(name, "private");
    EXPECT_EQ(chown(path.c_str(), kTestUid, kTestGid), 0);
    EXPECT_EQ(chmod(path.c_str(), 0600), 0);
    return path;
  }
  static mode_t mode_of(const std::string& path) {
    struct stat st {};
    stat(path.c_str(), &st);
    return st.st_mode & 07777;
  }
};

TEST_F(MetadataTest, ModeOwnerAndXattrsOfAFileNotGivenStayTimesDoNot) {
  PolicySpec policy = env().default_policy();
  policy.extra_lines = {"read_only = /usr"};
  ScopedPolicy scoped(env(), policy);
  const std::string file = caller_file("metadata-private");
  const std::string rw = make_caller_dir("metadata");
  ProbeSpec spec = probe_spec("metadata", {}, false);
  spec.report = rw + "/report.json";
  spec.json["vmm"].as_object()["args"] = json::array{"--report", spec.report, "--metadata", file};
  spec.json["files"] =
      json::object{{"read_only", json::array{"/usr"}}, {"read_write", json::array{rw}}};
  Sandboxed s = start(spec);
  SCOPED_TRACE(json::serialize(s.report));
  const json::object& m = s.report.at("metadata").as_object().at(file).as_object();
  EXPECT_EQ(json_int(m, "chmod"), EPERM);
  EXPECT_EQ(json_int(m, "chown"), EPERM);
  EXPECT_EQ(json_int(m, "setxattr"), EPERM);
  EXPECT_EQ(json_int(m, "utimensat"), 0);
  EXPECT_EQ(mode_of(file), 0600u);
  struct stat st {};
  ASSERT_EQ(stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mtim.tv_sec, 1000000000);  // what remains, as README says
  stop(s);
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
}

TEST_F(MetadataTest, ControlOutsideASandboxTheSameChangesWork) {
  const std::string file = caller_file("metadata-control");
  const std::string report = env().work() + "/metadata-control.json";
  auto outside = start_outside({"--report", report, "--metadata", file, "--exit-now"});
  json::object r = env().wait_for_report(report);
  SCOPED_TRACE(json::serialize(r));
  const json::object& m = r.at("metadata").as_object().at(file).as_object();
  EXPECT_EQ(json_int(m, "chmod"), 0);
  EXPECT_EQ(json_int(m, "chown"), 0);
  EXPECT_NE(json_int(m, "setxattr"), EPERM);  // 0 where the work dir's filesystem takes user.*
  EXPECT_EQ(json_int(m, "utimensat"), 0);
  EXPECT_EQ(mode_of(file), 0644u);
  outside->wait();
}

// Control for the device rule: given in files.devices (and the policy), /dev/ptmx opens
// and takes its ioctl under the Landlock file rules.
TEST_F(ContainmentTest, ControlAGivenDeviceOpensAndTakesIoctls) {
  PolicySpec policy = env().default_policy();
  policy.extra_lines = {"read_only = /usr", "device = /dev/ptmx"};
  ScopedPolicy scoped(env(), policy);
  const std::string rw = make_caller_dir("device-given");
  ProbeSpec spec = probe_spec("device-given", {}, false);
  spec.report = rw + "/report.json";
  spec.json["vmm"].as_object()["args"] =
      json::array{"--report", spec.report, "--ioctl-device", "/dev/ptmx"};
  spec.json["files"] = json::object{{"devices", json::array{"/dev/ptmx"}},
                                    {"read_only", json::array{"/usr"}},
                                    {"read_write", json::array{rw}}};
  Sandboxed s = start(spec);
  SCOPED_TRACE(json::serialize(s.report));
  const json::object& ptmx = s.report.at("ioctl_devices").as_object().at("/dev/ptmx").as_object();
  EXPECT_EQ(json_int(ptmx, "open"), 0);
  EXPECT_EQ(json_int(ptmx, "ioctl"), 0);
  stop(s);
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
}

}  // namespace
}  // namespace sbx::it
