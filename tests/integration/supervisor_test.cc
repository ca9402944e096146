// SPDX-License-Identifier: Apache-2.0
// `sbx-supervisor run` and `check` end to end (issue 4, "Tests"): the real binary driven as the
// unprivileged test user, launching the probe VMM through the setcap'd helper copy. Each test
// asserts facts: the events, the exit status, /proc scans for processes of the test user, the
// host mount table and the sandbox root.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "tests/integration/helper_env.h"
#include "tests/integration/supervisor_env.h"

namespace sbx::it {
namespace {

namespace json = boost::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

int64_t elapsed_ms(Clock::time_point since) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - since).count();
}

std::string left_processes() {
  return ::testing::PrintToString(HelperEnv::test_user_processes());
}

class SupervisorRunTest : public SupervisorEnvTest {
 protected:
  // The started/ready facts every successful launch shares.
  void expect_started_and_ready(const Running& r, const ProbeSpec& spec) {
    EXPECT_EQ(json_str(r.started, "id"), spec.id);
    EXPECT_GT(json_int(r.started, "pid"), 1);
    const json::value* pidns = spec.json.if_contains("pid_namespace");
    if (pidns == nullptr || pidns->as_bool()) {
      // The VMM runs under the namespace init, which leads the process group.
      EXPECT_NE(json_int(r.started, "pgid"), json_int(r.started, "pid"));
      EXPECT_EQ(getpgid(r.vmm_pid()), json_int(r.started, "pgid"));
      EXPECT_EQ(json_int(r.report, "pid"), 2);
    } else {
      EXPECT_EQ(json_int(r.started, "pgid"), json_int(r.started, "pid"));
    }
    EXPECT_EQ(json_str(r.ready, "id"), spec.id);
    EXPECT_GE(json_int(r.ready, "t_ms"), json_int(r.started, "t_ms"));
  }

  // Test 2 and test 10: the probe and three children ignore SIGTERM; only SIGKILL at the end
  // of a 1500 ms budget stops them.
  void expect_killed_after_timeout(const std::vector<std::string>& extra) {
    constexpr int64_t kBudgetMs = 1500;
    const HostSnapshot before = snapshot();
    ProbeSpec spec = probe_spec("ignore", {"--ignore-sigterm", "--children", "3"});
    spec.json["stop_timeout_ms"] = kBudgetMs;
    Running r = launch(spec, extra);
    expect_started_and_ready(r, spec);
    std::vector<pid_t> all{static_cast<pid_t>(json_int(r.report, "pid"))};
    for (int64_t c : json_ints(r.report, "children")) all.push_back(static_cast<pid_t>(c));
    ASSERT_EQ(all.size(), 4u);
    EXPECT_EQ(all[0], r.vmm_pid());
    for (pid_t pid : all) EXPECT_EQ(getpgid(pid), r.vmm_pid()) << "pid " << pid;
    ASSERT_TRUE(wait_sigterm_disposition(all, /*ignored=*/true));

    const auto sent = Clock::now();
    r.run->terminate();
    json::object term = r.run->expect_event("stopping");
    json::object kill = r.run->expect_event("stopping", milliseconds(kBudgetMs + 10000));
    json::object exited = r.run->expect_event("exited");
    const int64_t wall_ms = elapsed_ms(sent);
    const int code = r.run->finish();

    EXPECT_EQ(json_str(term, "why"), "SIGTERM");
    EXPECT_EQ(json_str(term, "step"), "sigterm");
    EXPECT_EQ(json_str(kill, "why"), "SIGTERM");
    EXPECT_EQ(json_str(kill, "step"), "sigkill");
    // t_ms are whole milliseconds read at different instants: the sigterm event may be stamped
    // up to 1 ms after the ladder started. The wall clock below has no such slack.
    constexpr int64_t kQuantumMs = 1;
    EXPECT_GE(json_int(kill, "t_ms") - json_int(term, "t_ms"), kBudgetMs - kQuantumMs);
    EXPECT_EQ(json_str(exited, "outcome"), "killed_after_timeout") << json::serialize(exited);
    EXPECT_EQ(json_int(exited, "signal"), SIGKILL);
    EXPECT_EQ(json_int(exited, "exit_status"), 137);
    const int64_t stop_ms = json_int(exited, "t_ms") - json_int(term, "t_ms");
    EXPECT_GE(stop_ms, kBudgetMs - kQuantumMs) << "killed before the budget was spent";
    EXPECT_LT(stop_ms, kBudgetMs + patience_ms(3000));
    EXPECT_GE(wall_ms, kBudgetMs) << "killed before the budget was spent";
    EXPECT_EQ(code, 137) << r.run->stderr_text();
    EXPECT_EQ(r.run->count("exited"), 1);
    expect_nothing_left(before);
    for (pid_t pid : all) EXPECT_FALSE(process_exists(pid)) << "pid " << pid << " survived";
    EXPECT_FALSE(path_exists(spec.sandbox_dir));
    EXPECT_FALSE(path_exists(spec.api_socket));
  }
};

// 1. A VMM that exits on SIGTERM: stopped well under the budget, outcome exited (code 0, the
// probe's SIGTERM handler), supervisor exit status 0, nothing left.
TEST_F(SupervisorRunTest, VmmThatExitsOnSigtermStopsWellUnderTheBudget) {
  const HostSnapshot before = snapshot();
  ProbeSpec spec = probe_spec("sigterm");
  spec.json["stop_timeout_ms"] = 10000;
  Running r = launch(spec);
  expect_started_and_ready(r, spec);
  EXPECT_EQ(json_int(r.report, "pid"), r.vmm_pid());
  EXPECT_EQ(json_int(r.report, "pgid"), r.vmm_pid());
  EXPECT_TRUE(path_exists(spec.sandbox_dir));
  ASSERT_TRUE(wait_sigterm_disposition({r.vmm_pid()}, /*ignored=*/false));

  const auto sent = Clock::now();
  r.run->terminate();
  json::object stopping = r.run->expect_event("stopping");
  json::object exited = r.run->expect_event("exited");
  const int64_t wall_ms = elapsed_ms(sent);
  const int code = r.run->finish();

  EXPECT_EQ(json_str(stopping, "id"), spec.id);
  EXPECT_EQ(json_str(stopping, "why"), "SIGTERM");
  EXPECT_EQ(json_str(stopping, "step"), "sigterm");
  EXPECT_EQ(json_str(exited, "id"), spec.id);
  EXPECT_EQ(json_str(exited, "outcome"), "exited") << json::serialize(exited);
  EXPECT_EQ(json_int(exited, "code"), 0);
  EXPECT_EQ(json_int(exited, "exit_status"), 0);
  // Under the budget: no SIGKILL step. On the host also in time; under emulation the bound
  // stretches with every other wait.
  EXPECT_EQ(r.run->count("stopping"), 1) << "a SIGKILL step";
  EXPECT_LT(json_int(exited, "t_ms") - json_int(stopping, "t_ms"), patience_ms(5000));
  EXPECT_LT(wall_ms, patience_ms(5000));
  EXPECT_EQ(code, 0) << r.run->stderr_text();
  EXPECT_EQ(r.run->count("exited"), 1);
  expect_nothing_left(before);
  EXPECT_FALSE(process_exists(r.vmm_pid()));
  EXPECT_FALSE(path_exists(spec.sandbox_dir)) << "the sandbox dir was not removed";
  EXPECT_FALSE(path_exists(spec.api_socket)) << "the API socket was not removed";
}

// 2. A VMM that ignores SIGTERM, with three children in its group that ignore it too.
TEST_F(SupervisorRunTest, VmmAndChildrenIgnoringSigtermAreKilledAfterTheBudget) {
  expect_killed_after_timeout({});
}

// 10. The same through kill(-pgid), the path for kernels without PIDFD_SIGNAL_PROCESS_GROUP.
TEST_F(SupervisorRunTest, KillSignalModeGivesTheSameOutcome) {
  expect_killed_after_timeout({"--signal-mode", "kill"});
}

// 3. pid_namespace: a child that left the process group with setsid() and ignores SIGTERM is
// gone after the stop, because killing the namespace init kills the namespace.
TEST_F(SupervisorRunTest, PidNamespaceTakesASetsidChildAlong) {
  const HostSnapshot before = snapshot();
  ProbeSpec spec = probe_spec("pidns-setsid", {"--ignore-sigterm", "--setsid-child"});
  spec.json["pid_namespace"] = true;
  spec.json["stop_timeout_ms"] = 1500;
  Running r = launch(spec);
  expect_started_and_ready(r, spec);
  EXPECT_FALSE(r.report.at("setsid_child").is_null());
  // The report's pids are the namespace's: find the three processes from here.
  const pid_t init = static_cast<pid_t>(json_int(r.started, "pgid"));
  std::vector<pid_t> inside = live_test_user_processes_except(r.run->pid());
  ASSERT_EQ(inside.size(), 3u) << "expected the init, the VMM and its setsid child: "
                               << ::testing::PrintToString(inside);
  pid_t child = -1;
  for (pid_t p : inside) {
    if (p != init && p != r.vmm_pid()) child = p;
  }
  ASSERT_GT(child, 0);
  EXPECT_EQ(session_of(child), child) << "the child did not leave the VMM's session";
  EXPECT_NE(getpgid(child), r.vmm_pid());
  ASSERT_TRUE(wait_sigterm_disposition({r.vmm_pid(), child}, /*ignored=*/true));

  r.run->terminate();
  json::object term = r.run->expect_event("stopping");
  json::object kill = r.run->expect_event("stopping", milliseconds(15000));
  json::object exited = r.run->expect_event("exited");
  const int code = r.run->finish();

  EXPECT_EQ(json_str(term, "step"), "sigterm");
  EXPECT_EQ(json_str(kill, "step"), "sigkill");
  EXPECT_EQ(json_str(exited, "outcome"), "killed_after_timeout") << json::serialize(exited);
  EXPECT_EQ(json_int(exited, "signal"), SIGKILL);
  EXPECT_EQ(code, 137) << r.run->stderr_text();
  expect_nothing_left(before);
  EXPECT_FALSE(process_exists(child)) << "the setsid child survived";
  EXPECT_FALSE(process_exists(r.vmm_pid()));
  EXPECT_FALSE(path_exists(spec.sandbox_dir));
}

// A VMM that exits at once under the default PID namespace: the started event still names its
// pid (the init keeps it unreaped until the supervisor has read it), and the outcome is its
// own exit code. Twenty times, as the exit races the supervisor's read.
TEST_F(SupervisorRunTest, AVmmThatExitsAtOnceUnderTheInitIsReportedWithItsPid) {
  for (int i = 0; i < 20; ++i) {
    SCOPED_TRACE("run " + std::to_string(i));
    ProbeSpec spec = probe_spec("exit-now", {"--exit-now", "--exit-code", "3"}, false);
    spec.json.erase("pid_namespace");
    auto run = start_run(write_spec(spec.json));
    json::object started = run->expect_event("started");
    run->expect_event("ready");  // no API socket: ready at once
    json::object exited = run->expect_event("exited");
    EXPECT_EQ(run->finish(), 3) << run->stderr_text();
    EXPECT_GT(json_int(started, "pid"), 1) << json::serialize(started);
    EXPECT_NE(json_int(started, "pid"), json_int(started, "pgid"));
    EXPECT_EQ(json_str(exited, "outcome"), "exited") << json::serialize(exited);
    EXPECT_EQ(json_int(exited, "code"), 3);
  }
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
}

// 4. The supervisor SIGKILLed while the VMM runs: the VMM dies of its parent-death signal.
TEST_F(SupervisorRunTest, SupervisorKilledTakesTheVmmAlong) {
  const std::string mounts = host_mounts();
  ProbeSpec spec = probe_spec("sup-killed");
  Running r = launch(spec);
  expect_started_and_ready(r, spec);
  ASSERT_TRUE(wait_sigterm_disposition({r.vmm_pid()}, /*ignored=*/false));
  ASSERT_EQ(kill(r.run->pid(), SIGKILL), 0);
  EXPECT_EQ(r.run->reap(), -SIGKILL);
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes()) << "left: " << left_processes();
  EXPECT_FALSE(process_exists(r.vmm_pid()));
  EXPECT_EQ(host_mounts(), mounts);
}

// 4, PID-namespace variant: the namespace init dies with the supervisor and takes its two
// children along.
TEST_F(SupervisorRunTest, SupervisorKilledTakesThePidNamespaceAlong) {
  const std::string mounts = host_mounts();
  ProbeSpec spec = probe_spec("sup-killed-pidns", {"--children", "2"});
  spec.json["pid_namespace"] = true;
  Running r = launch(spec);
  expect_started_and_ready(r, spec);
  std::vector<pid_t> inside = live_test_user_processes_except(r.run->pid());
  EXPECT_EQ(inside.size(), 4u) << "the init, the VMM and its two children: "
                               << ::testing::PrintToString(inside);
  ASSERT_TRUE(wait_sigterm_disposition({r.vmm_pid()}, /*ignored=*/false));
  ASSERT_EQ(kill(r.run->pid(), SIGKILL), 0);
  EXPECT_EQ(r.run->reap(), -SIGKILL);
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes()) << "left: " << left_processes();
  for (pid_t pid : inside) EXPECT_FALSE(process_exists(pid)) << "pid " << pid << " survived";
  EXPECT_EQ(host_mounts(), mounts);
}

// Control for the two above and for the jail's: without a PID namespace, the VMM's setsid()
// child outlives a SIGKILLed supervisor (the VMM itself dies of its parent-death signal, which
// its children do not inherit). README's "not supported" line says so.
TEST_F(SupervisorRunTest, ControlWithoutAPidNamespaceASetsidChildOutlivesAKilledSupervisor) {
  ProbeSpec spec = probe_spec("sup-killed-escapee", {"--setsid-child"});
  spec.json["pid_namespace"] = false;
  Running r = launch(spec);
  const pid_t escapee = static_cast<pid_t>(json_int(r.report, "setsid_child"));
  ASSERT_GT(escapee, 0) << json::serialize(r.report);
  ASSERT_TRUE(wait_sigterm_disposition({r.vmm_pid()}, /*ignored=*/false));
  ASSERT_EQ(kill(r.run->pid(), SIGKILL), 0);
  EXPECT_EQ(r.run->reap(), -SIGKILL);
  EXPECT_TRUE(wait_not_alive(r.vmm_pid())) << "the VMM outlived its supervisor";
  // The escapee had the same time to die of anything sent along with the VMM's signal.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_TRUE(process_alive(escapee)) << "the setsid child died with the supervisor";
  kill(escapee, SIGKILL);
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes()) << "left: " << left_processes();
}

// 5. Setup failing at five helper steps: setup_failed with the step, errno and detail, exit
// status 125, nothing left.
TEST_F(SupervisorRunTest, SetupFailsAtValidateRequest) {
  ProbeSpec spec = probe_spec("fail-validate");
  spec.json["netns"] = "other-" + std::to_string(getpid());  // not allowed by the policy
  expect_setup_failed(spec, "validate_request", EPERM);
  EXPECT_FALSE(path_exists(spec.sandbox_dir));
}

TEST_F(SupervisorRunTest, SetupFailsAtJoinNetns) {
  ProbeSpec spec = probe_spec("fail-netns");
  spec.json["netns"] = "sbx-it-missing-" + std::to_string(getpid());  // allowed, absent
  expect_setup_failed(spec, "join_netns", ENOENT);
  EXPECT_FALSE(path_exists(spec.sandbox_dir));
}

TEST_F(SupervisorRunTest, SetupFailsAtMakeSandboxDir) {
  ProbeSpec spec = probe_spec("fail-symlink");
  // The sandbox dir is a symlink to a directory the test user owns.
  ASSERT_EQ(symlink(env().work().c_str(), spec.sandbox_dir.c_str()), 0) << std::strerror(errno);
  expect_setup_failed(spec, "make_sandbox_dir", ELOOP);
  struct stat st;
  ASSERT_EQ(lstat(spec.sandbox_dir.c_str(), &st), 0) << "the supervisor removed the symlink";
  EXPECT_TRUE(S_ISLNK(st.st_mode));
}

TEST_F(SupervisorRunTest, SetupFailsAtLoadPolicy) {
  struct RestoreMode {
    std::string path;
    ~RestoreMode() { chmod(path.c_str(), 0644); }
  } restore{env().policy_path()};
  ASSERT_EQ(chmod(env().policy_path().c_str(), 0664), 0) << std::strerror(errno);
  ProbeSpec spec = probe_spec("fail-policy");
  json::object ev = expect_setup_failed(spec, "load_policy", EPERM);
  EXPECT_NE(json_str(ev, "detail").find("writable"), std::string::npos) << json::serialize(ev);
  EXPECT_FALSE(path_exists(spec.sandbox_dir));
}

TEST_F(SupervisorRunTest, SetupFailsAtOpenVmm) {
  const std::string vmm = env().install_vmm_copy("probe-user-owned", kTestUid, 0755);
  PolicySpec policy = env().default_policy();
  policy.vmms.push_back(vmm);
  ScopedPolicy scoped(env(), policy);
  ProbeSpec spec = probe_spec("fail-owner");
  spec.json["vmm"].as_object()["binary"] = vmm;
  expect_setup_failed(spec, "open_vmm", EPERM);
  EXPECT_FALSE(path_exists(spec.sandbox_dir));
}

// 6. VMM allowlisted but missing: 127, as a shell would.
TEST_F(SupervisorRunTest, VmmMissingExits127) {
  const std::string vmm = env().dir() + "/bin/probe-missing";
  PolicySpec policy = env().default_policy();
  policy.vmms.push_back(vmm);
  ScopedPolicy scoped(env(), policy);
  ProbeSpec spec = probe_spec("missing");
  spec.json["vmm"].as_object()["binary"] = vmm;
  expect_setup_failed(spec, "open_vmm", ENOENT, 127);
  EXPECT_FALSE(path_exists(spec.sandbox_dir));
}

// 6. VMM allowlisted but not executable: 126, as a shell would.
TEST_F(SupervisorRunTest, VmmNotExecutableExits126) {
  const std::string vmm = env().install_vmm_copy("probe-noexec", 0, 0644);
  PolicySpec policy = env().default_policy();
  policy.vmms.push_back(vmm);
  ScopedPolicy scoped(env(), policy);
  ProbeSpec spec = probe_spec("noexec");
  spec.json["vmm"].as_object()["binary"] = vmm;
  expect_setup_failed(spec, "open_vmm", EACCES, 126);
  EXPECT_FALSE(path_exists(spec.sandbox_dir));
}

// 7. An fd the supervisor's caller left open without O_CLOEXEC reaches the supervisor but not
// the VMM. (No API socket here: the probe's listening socket would be fd 3 of its report.)
// A caller whose hard RLIMIT_NOFILE is 4095 or less, where the helper cannot place the VMM's
// exec fd: `doctor` fails `rlimit.nofile` and names the fix, and a launch fails at
// prepare_fds with EMFILE, naming the limit, and leaves nothing behind.
TEST_F(SupervisorRunTest, AHardFileLimitNotAbove4095FailsDoctorAndTheLaunch) {
  std::vector<std::string> low = as_test_user();
  low.insert(low.end(), {"/usr/bin/prlimit", "--nofile=1024:4095", "--", supervisor()});
  std::vector<std::string> doctor = low;
  doctor.insert(doctor.end(), {"doctor", "--json", "--helper", env().helper()});
  ChildProcess d(doctor, {}, stderr_path("doctor-low-nofile"));
  const std::string out = d.read_all();
  d.wait();
  json::object report = json::parse(out).as_object();
  bool seen = false;
  for (const auto& c : report.at("checks").as_array()) {
    const json::object& check = c.as_object();
    if (check.at("name") != "rlimit.nofile") continue;
    seen = true;
    EXPECT_EQ(check.at("status"), "fail") << out;
    EXPECT_TRUE(check.at("needed").as_bool());
    EXPECT_NE(json_str(check, "detail").find("hard RLIMIT_NOFILE 4095"), std::string::npos) << out;
    EXPECT_NE(json_str(check, "fix").find("LimitNOFILE="), std::string::npos) << out;
  }
  EXPECT_TRUE(seen) << out;
  EXPECT_FALSE(report.at("ok").as_bool());

  ProbeSpec spec = probe_spec("low-nofile");
  const HostSnapshot before = snapshot();
  std::vector<std::string> run_argv = low;
  run_argv.insert(run_argv.end(),
                  {"run", "--spec", write_spec(spec.json), "--helper", env().helper()});
  SupervisorRun run(run_argv, {}, stderr_path("run-low-nofile"));
  json::object ev = run.expect_event("exited");
  EXPECT_EQ(json_str(ev, "step"), "prepare_fds") << json::serialize(ev);
  EXPECT_EQ(json_int(ev, "errno"), EMFILE);
  EXPECT_NE(json_str(ev, "detail").find("hard RLIMIT_NOFILE (4095)"), std::string::npos)
      << json::serialize(ev);
  EXPECT_EQ(run.finish(), 125);
  expect_nothing_left(before);
  EXPECT_FALSE(path_exists(spec.report));
}

// A kernel without one of the features sbx needs, made here by a filter that answers the
// syscall with ENOSYS (mount_setattr, Linux 5.12, the newest needed; close_range, 5.9, which
// the helper uses first): the launch fails at check_invocation naming the feature and the
// version, before the helper touches anything, and doctor's `kernel` check fails the same way.
// The control is the same root run without the filter, which gets past check_invocation.
TEST_F(SupervisorRunTest, AKernelWithoutANeededFeatureIsRefusedNamingItAndItsVersion) {
  const char* without = std::getenv("SBX_TEST_WITHOUT_SYSCALL");
  ASSERT_NE(without, nullptr) << "SBX_TEST_WITHOUT_SYSCALL is not set (run through ctest)";
  const std::string spec_path = write_spec(probe_spec("old-kernel").json);
  const std::pair<const char*, const char*> missing[] = {
      {"mount_setattr", "mount_setattr (Linux 5.12)"}, {"close_range", "close_range (Linux 5.9)"}};
  for (const auto& [syscall_name, named] : missing) {
    SCOPED_TRACE(syscall_name);
    SupervisorRun run({without, syscall_name, "--", supervisor(), "run", "--allow-root", "--spec",
                       spec_path, "--helper", env().helper()},
                      {}, stderr_path(std::string("old-kernel-") + syscall_name));
    json::object ev = run.expect_event("exited");
    EXPECT_EQ(json_str(ev, "step"), "check_invocation") << json::serialize(ev);
    EXPECT_EQ(json_int(ev, "errno"), ENOSYS);
    EXPECT_NE(json_str(ev, "detail").find(std::string("this kernel lacks ") + named),
              std::string::npos)
        << json::serialize(ev);
    EXPECT_NE(json_str(ev, "detail").find("sbx needs Linux 5.12 or newer"), std::string::npos);
    EXPECT_EQ(run.finish(), 125);

    ChildProcess doctor(
        {without, syscall_name, "--", supervisor(), "doctor", "--json", "--helper", env().helper()},
        {}, stderr_path(std::string("old-kernel-doctor-") + syscall_name));
    const std::string out = doctor.read_all();
    doctor.wait();
    json::object report = json::parse(out).as_object();
    const json::object& kernel = report.at("checks").as_array().at(0).as_object();
    EXPECT_EQ(kernel.at("name"), "kernel") << out;
    EXPECT_EQ(kernel.at("status"), "fail") << out;
    EXPECT_NE(json_str(kernel, "detail").find(std::string("lacks ") + named), std::string::npos)
        << out;
  }
  // Control: the same run without the filter passes the check (and is refused later, for the
  // policy's root rule).
  SupervisorRun run(
      {supervisor(), "run", "--allow-root", "--spec", spec_path, "--helper", env().helper()}, {},
      stderr_path("new-kernel"));
  json::object ev = run.expect_event("exited");
  EXPECT_NE(json_str(ev, "step"), "check_invocation") << json::serialize(ev);
  run.finish();
  Output doctor = run_supervisor({"doctor", "--json", "--helper", env().helper()});
  json::object report = json::parse(doctor.out).as_object();
  EXPECT_EQ(report.at("checks").as_array().at(0).as_object().at("status"), "ok") << doctor.out;
}

TEST_F(SupervisorRunTest, FdWithoutCloexecDoesNotReachTheVmm) {
  const HostSnapshot before = snapshot();
  const std::string marker = env().make_work_file("inherited-marker", "x\n");
  UniqueFd leaked(open(marker.c_str(), O_RDONLY));  // deliberately without O_CLOEXEC
  ASSERT_TRUE(leaked) << std::strerror(errno);
  ASSERT_EQ(fcntl(leaked.get(), F_GETFD) & FD_CLOEXEC, 0);
  SpawnOptions options;
  options.inherit = {leaked.get()};
  ProbeSpec spec = probe_spec("fd-leak", {}, /*with_api_socket=*/false);
  Running r = launch(spec, {}, options);
  expect_started_and_ready(r, spec);
  // The premise: the supervisor itself holds the fd.
  char target[4096] = {};
  const std::string fd_link =
      "/proc/" + std::to_string(r.run->pid()) + "/fd/" + std::to_string(leaked.get());
  ASSERT_GT(readlink(fd_link.c_str(), target, sizeof(target) - 1), 0)
      << "the supervisor did not inherit fd " << leaked.get();
  EXPECT_EQ(std::string(target), marker);

  EXPECT_EQ(json_ints(r.report, "fds"), (std::vector<int64_t>{0, 1, 2}))
      << json::serialize(r.report.at("fd_targets"));
  ASSERT_TRUE(wait_sigterm_disposition({r.vmm_pid()}, /*ignored=*/false));
  r.run->terminate();
  r.run->expect_event("stopping");
  json::object exited = r.run->expect_event("exited");
  EXPECT_EQ(json_str(exited, "outcome"), "exited") << json::serialize(exited);
  EXPECT_EQ(r.run->finish(), 0) << r.run->stderr_text();
  expect_nothing_left(before);
}

// 8. 200 launch/stop cycles, one supervisor process each: nothing accumulates on the host, and
// the supervisor holds the same number of fds at `ready` every time.
TEST_F(SupervisorRunTest, TwoHundredLaunchStopCyclesLeaveNothingBehind) {
  const int kCycles = rounds_of(200);
  const HostSnapshot before = snapshot();
  const auto start = Clock::now();
  int first_fd_count = -1;
  for (int i = 1; i <= kCycles; ++i) {
    ProbeSpec spec = probe_spec("cycle");
    auto run = start_run(write_spec(spec.json));
    json::object started = run->expect_event("started");
    run->expect_event("ready");
    const int fds = fd_count(run->pid());
    if (i == 1) first_fd_count = fds;
    ASSERT_EQ(fds, first_fd_count) << "cycle " << i << ": the supervisor's fd count changed";
    const pid_t vmm = static_cast<pid_t>(json_int(started, "pid"));
    ASSERT_TRUE(wait_sigterm_disposition({vmm}, /*ignored=*/false)) << "cycle " << i;
    run->terminate();
    run->expect_event("stopping");
    json::object exited = run->expect_event("exited");
    ASSERT_EQ(json_str(exited, "outcome"), "exited")
        << "cycle " << i << ": " << json::serialize(exited);
    ASSERT_EQ(run->finish(), 0) << "cycle " << i << ": " << run->stderr_text();
    ASSERT_EQ(run->count("exited"), 1) << "cycle " << i;
    ASSERT_TRUE(HelperEnv::wait_no_test_user_processes())
        << "cycle " << i << ": left: " << left_processes();
    ASSERT_EQ(host_mounts(), before.mountinfo) << "cycle " << i;
    ASSERT_EQ(env().sandbox_root_listing(), before.sandbox_root) << "cycle " << i;
    ASSERT_FALSE(path_exists(spec.api_socket)) << "cycle " << i;
  }
  const int64_t total_ms = elapsed_ms(start);
  std::cout << "[ timing   ] " << kCycles << " cycles in " << total_ms << " ms ("
            << total_ms / kCycles << " ms each); supervisor fds at ready: " << first_fd_count
            << "\n";
  RecordProperty("cycles_ms", static_cast<int>(total_ms));
}

// 9, 11, 12: the command line, through the real binary.
class SupervisorCliTest : public SupervisorRunTest {
 protected:
  // `check` must refuse `spec` (exit non-zero) with `field` named on stderr.
  void expect_check_refuses(const json::object& spec, const std::string& field) {
    Output o = run_supervisor({"check", "--spec", write_spec(spec)});
    EXPECT_NE(o.code, 0) << o.out;
    EXPECT_GT(o.code, 0) << "killed by signal " << -o.code;
    EXPECT_TRUE(o.out.empty()) << o.out;
    EXPECT_NE(o.err.find("spec: " + field + ":"), std::string::npos) << o.err;
  }

  // `check` of a spec of `kind`: the argv it prints.
  std::vector<std::string> checked_argv(const std::string& kind, const std::string& sock) {
    ProbeSpec spec = probe_spec("check-" + kind, {}, /*with_api_socket=*/false);
    auto& vmm = spec.json["vmm"].as_object();
    vmm["kind"] = kind;
    vmm["args"] = json::array{"--extra"};
    spec.json["api_socket"] = sock;
    Output o = run_supervisor({"check", "--spec", write_spec(spec.json)});
    EXPECT_EQ(o.code, 0) << o.err;
    json::value v = json::parse(o.out);
    if (!v.is_object()) throw std::runtime_error("check printed no JSON object: " + o.out);
    EXPECT_EQ(json_str(v.as_object(), "kind"), kind);
    std::vector<std::string> argv = json_strs(v.as_object(), "argv");
    return argv;
  }
};

TEST_F(SupervisorCliTest, CheckRefusesAnUnknownKey) {
  ProbeSpec spec = probe_spec("unknown-key");
  spec.json["frobnicate"] = true;
  expect_check_refuses(spec.json, "frobnicate");
}

TEST_F(SupervisorCliTest, CheckRefusesABadId) {
  ProbeSpec spec = probe_spec("bad-id");
  spec.json["id"] = "no spaces/or slashes";
  expect_check_refuses(spec.json, "id");
}

TEST_F(SupervisorCliTest, CheckRefusesLdPreloadInEnv) {
  ProbeSpec spec = probe_spec("ld-preload");
  spec.json["env"].as_object()["LD_PRELOAD"] = "/tmp/evil.so";
  expect_check_refuses(spec.json, "env.LD_PRELOAD");
}

TEST_F(SupervisorCliTest, CheckRefusesARelativeSandboxDir) {
  ProbeSpec spec = probe_spec("relative");
  spec.json["sandbox_dir"] = "sandboxes/relative";
  expect_check_refuses(spec.json, "sandbox_dir");
}

// `run` with an invalid spec: 125 before anything is spawned or created.
TEST_F(SupervisorCliTest, RunRefusesAnInvalidSpecWithoutSpawning) {
  const HostSnapshot before = snapshot();
  ProbeSpec spec = probe_spec("run-invalid");
  spec.json["frobnicate"] = true;
  auto run = start_run(write_spec(spec.json));
  const int code = run->finish();
  EXPECT_EQ(code, 125) << run->stderr_text();
  EXPECT_TRUE(run->events().empty()) << events_text(run->events());
  EXPECT_NE(run->stderr_text().find("frobnicate"), std::string::npos) << run->stderr_text();
  EXPECT_FALSE(path_exists(spec.sandbox_dir));
  EXPECT_FALSE(path_exists(spec.report)) << "the probe ran";
  expect_nothing_left(before);
}

// 11. Root without --allow-root: refused with a message, nothing spawned.
TEST_F(SupervisorCliTest, RootWithoutAllowRootIsRefused) {
  const HostSnapshot before = snapshot();
  ProbeSpec spec = probe_spec("as-root");
  auto run = start_run(write_spec(spec.json), {}, {}, /*as_root=*/true);
  const int code = run->finish();
  EXPECT_EQ(code, 125) << run->stderr_text();
  EXPECT_NE(run->stderr_text().find("--allow-root"), std::string::npos) << run->stderr_text();
  EXPECT_TRUE(run->events().empty()) << events_text(run->events());
  EXPECT_FALSE(path_exists(spec.sandbox_dir));
  EXPECT_FALSE(path_exists(spec.report)) << "the probe ran";
  expect_nothing_left(before);
}

TEST_F(SupervisorCliTest, VersionAndHelpExitZero) {
  Output version = run_supervisor({"--version"});
  EXPECT_EQ(version.code, 0) << version.err;
  EXPECT_TRUE(version.out.starts_with("sbx-supervisor ")) << version.out;
  Output help = run_supervisor({"--help"});
  EXPECT_EQ(help.code, 0) << help.err;
  EXPECT_NE(help.out.find("sbx-supervisor run --spec"), std::string::npos) << help.out;
}

// 12. `check` prints the argv with each kind's API flag.
TEST_F(SupervisorCliTest, CheckArgvForFirecrackerHasApiSock) {
  const std::string sock = env().work() + "/fc.sock";
  EXPECT_EQ(checked_argv("firecracker", sock),
            (std::vector<std::string>{env().probe(), "--api-sock", sock, "--extra"}));
}

TEST_F(SupervisorCliTest, CheckArgvForCloudHypervisorHasApiSocketPath) {
  const std::string sock = env().work() + "/ch.sock";
  EXPECT_EQ(checked_argv("cloud-hypervisor", sock),
            (std::vector<std::string>{env().probe(), "--api-socket", "path=" + sock, "--extra"}));
}

TEST_F(SupervisorCliTest, CheckArgvForQemuHasQmp) {
  const std::string sock = env().work() + "/qmp.sock";
  EXPECT_EQ(checked_argv("qemu", sock),
            (std::vector<std::string>{env().probe(), "-qmp", "unix:" + sock + ",server=on,wait=off",
                                      "--extra"}));
}

}  // namespace
}  // namespace sbx::it

namespace sbx::it {
namespace {

// --log-format json: every stderr line is one JSON object with the stable keys ts, level, id,
// msg, and the lifecycle (launch, running, stopping, outcome) is logged with the sandbox id.
TEST_F(SupervisorEnvTest, JsonLogIsOneObjectPerLineWithStableKeys) {
  ProbeSpec spec = probe_spec("jsonlog");
  auto run = start_run(write_spec(spec.json), {"--log-format", "json"});
  run->expect_event("started");
  run->expect_event("ready");
  ASSERT_TRUE(env().wait_for_report(spec.report).contains("pid"));
  run->terminate();
  EXPECT_EQ(run->finish(), 0);
  std::istringstream lines(run->stderr_text());
  std::string line;
  std::vector<std::string> messages;
  while (std::getline(lines, line)) {
    boost::system::error_code ec;
    json::value v = json::parse(line, ec);
    ASSERT_FALSE(ec) << "not JSON: " << line;
    ASSERT_TRUE(v.is_object()) << line;
    const json::object& o = v.as_object();
    EXPECT_EQ(o.size(), 4u) << line;
    for (const char* key : {"ts", "level", "id", "msg"}) {
      ASSERT_TRUE(o.contains(key) && o.at(key).is_string()) << key << " in " << line;
    }
    EXPECT_EQ(json_str(o, "id"), spec.id);
    messages.push_back(json_str(o, "msg"));
  }
  auto logged = [&](const std::string& prefix) {
    for (const auto& m : messages) {
      if (m.rfind(prefix, 0) == 0) return true;
    }
    return false;
  };
  EXPECT_TRUE(logged("launching ")) << run->stderr_text();
  EXPECT_TRUE(logged("VMM running as pid "));
  EXPECT_TRUE(logged("stopping: SIGTERM"));
  EXPECT_TRUE(logged("outcome exited"));
}

}  // namespace
}  // namespace sbx::it
