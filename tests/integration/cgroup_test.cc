// SPDX-License-Identifier: Apache-2.0
// `sbx-supervisor run` with a cgroup (issue 14, "Tests"), on this machine's real cgroup2 mount:
// a subtree delegated to the test user, the supervisor in a leaf of it, the sandboxes' parent
// beside that leaf. Asserted from /proc and the cgroup directories: the VMM and its children
// are in <parent>/<id>; a setsid() escapee without a PID namespace is gone after the stop (by
// cgroup.kill and by the cgroup.procs path); usage.cpu_usec is positive for a VMM that burns
// CPU; the directory is removed; the refusals happen before anything is spawned. And `doctor`
// reports this machine's real state.
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "tests/integration/helper_env.h"
#include "tests/integration/supervisor_env.h"

#ifndef LANDLOCK_CREATE_RULESET_VERSION
#define LANDLOCK_CREATE_RULESET_VERSION (1U << 0)
#endif

namespace sbx::it {
namespace {

namespace json = boost::json;
using std::chrono::milliseconds;

class CgroupRunTest : public SupervisorEnvTest {
 protected:
  void SetUp() override {
    SupervisorEnvTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    cgroup_ = std::make_unique<DelegatedCgroup>();
    run_supervisor_in_cgroup(cgroup_->leaf());
  }
  void TearDown() override {
    SupervisorEnvTest::TearDown();  // kills what the test user left, the supervisor included
    run_supervisor_in_cgroup("");
    cgroup_.reset();
  }

  ProbeSpec cgroup_probe(const std::string& tag, const std::vector<std::string>& flags,
                         json::object cgroup = {}) {
    ProbeSpec spec = probe_spec(tag, flags);
    if (!cgroup.contains("parent")) cgroup["parent"] = cgroup_->parent();
    spec.json["cgroup"] = cgroup;
    return spec;
  }

  std::string sandbox_cgroup(const ProbeSpec& spec) const {
    return cgroup_->parent() + "/" + spec.id;
  }

  // setup_failed at create_cgroup with `err` (expect_setup_failed: one event, exit 125,
  // nothing left), and no usage reported, no report, no sandbox dir, no sandbox cgroup.
  // Returns the event's detail.
  std::string expect_refused(const ProbeSpec& spec, int err) {
    json::object ev = expect_setup_failed(spec, "create_cgroup", err);
    EXPECT_FALSE(ev.contains("usage")) << "no cgroup was made";
    EXPECT_FALSE(path_exists(spec.report)) << "the VMM ran";
    EXPECT_FALSE(path_exists(spec.sandbox_dir)) << "the helper ran";
    EXPECT_FALSE(path_exists(sandbox_cgroup(spec)));
    return json_str(ev, "detail");
  }

  // The escapee test, through cgroup.kill (`extra` empty) or the cgroup.procs path.
  // `how`: the kill the supervisor reports it used ("cgroup.kill" or "each pid in
  // cgroup.procs"); the cgroup is empty after it, before the supervisor reaps its leftovers.
  void expect_setsid_escapee_killed(const std::vector<std::string>& extra, const std::string& how) {
    ProbeSpec spec = cgroup_probe("escapee", {"--ignore-sigterm", "--setsid-child"});
    spec.json["pid_namespace"] = false;
    spec.json["stop_timeout_ms"] = 1000;
    auto run = start_run(write_spec(spec.json), extra);
    json::object started = run->expect_event("started");
    run->expect_event("ready");
    json::object report = env().wait_for_report(spec.report);
    const pid_t vmm = static_cast<pid_t>(json_int(started, "pid"));
    const pid_t escapee = static_cast<pid_t>(json_int(report, "setsid_child"));
    const std::string inside = cgroup_->proc_path(sandbox_cgroup(spec));
    EXPECT_EQ(cgroup_of(vmm), inside);
    EXPECT_EQ(cgroup_of(escapee), inside);
    EXPECT_EQ(session_of(escapee), escapee) << "the child did not leave the VMM's session";
    EXPECT_NE(getpgid(escapee), vmm);
    ASSERT_TRUE(wait_sigterm_disposition({vmm, escapee}, /*ignored=*/true));

    run->terminate();
    EXPECT_EQ(json_str(run->expect_event("stopping"), "step"), "sigterm");
    EXPECT_EQ(json_str(run->expect_event("stopping", milliseconds(10000)), "step"), "sigkill");
    json::object exited = run->expect_event("exited");
    const int code = run->finish();
    EXPECT_EQ(json_str(exited, "outcome"), "killed_after_timeout") << json::serialize(exited);
    EXPECT_EQ(code, 137) << run->stderr_text();
    EXPECT_FALSE(exited.contains("cgroup_left")) << json::serialize(exited);
    EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
    EXPECT_FALSE(process_exists(escapee)) << "the setsid child survived";
    EXPECT_FALSE(process_exists(vmm));
    EXPECT_FALSE(path_exists(sandbox_cgroup(spec))) << "the cgroup was not removed";
    const std::string log = run->stderr_text();
    EXPECT_NE(log.find("killed what was left in " + sandbox_cgroup(spec) + " with " + how),
              std::string::npos)
        << log;
    EXPECT_EQ(log.find("still populated"), std::string::npos) << log;
  }

  std::unique_ptr<DelegatedCgroup> cgroup_;
};

// The VMM and its children start inside <parent>/<id>; the supervisor stays in its leaf; on
// the stop the exited event carries the usage (cpu_usec positive: the probe burned 300 ms of
// CPU; the rest null, as this machine's cgroup2 has no memory or pids controller) and the
// directory is gone.
TEST_F(CgroupRunTest, VmmAndChildrenRunInTheSandboxCgroupWhichIsRemovedWithUsageReported) {
  ProbeSpec spec = cgroup_probe("inside", {"--children", "2", "--burn-ms", "300"});
  auto run = start_run(write_spec(spec.json));
  json::object started = run->expect_event("started");
  run->expect_event("ready");
  json::object report = env().wait_for_report(spec.report);
  const pid_t vmm = static_cast<pid_t>(json_int(started, "pid"));
  const std::string inside = cgroup_->proc_path(sandbox_cgroup(spec));
  EXPECT_EQ(cgroup_of(vmm), inside);
  std::vector<int64_t> children = json_ints(report, "children");
  ASSERT_EQ(children.size(), 2u);
  for (int64_t c : children) EXPECT_EQ(cgroup_of(static_cast<pid_t>(c)), inside) << "pid " << c;
  EXPECT_EQ(cgroup_of(run->pid()), cgroup_->proc_path(cgroup_->leaf()));
  EXPECT_EQ(trimmed(read_text_or_empty(cgroup_->parent() + "/cgroup.procs")), "")
      << "the parent holds none";
  ASSERT_TRUE(wait_sigterm_disposition({vmm}, /*ignored=*/false));

  run->terminate();
  run->expect_event("stopping");
  json::object exited = run->expect_event("exited");
  const int code = run->finish();
  EXPECT_EQ(json_str(exited, "outcome"), "exited") << json::serialize(exited);
  EXPECT_EQ(code, 0) << run->stderr_text();
  ASSERT_TRUE(exited.contains("usage")) << json::serialize(exited);
  const json::object& usage = exited.at("usage").as_object();
  ASSERT_TRUE(usage.at("cpu_usec").is_number()) << json::serialize(exited);
  EXPECT_GE(usage.at("cpu_usec").to_number<int64_t>(), 250000) << json::serialize(exited);
  const std::string controllers = read_text_or_empty(cgroup_->parent() + "/cgroup.controllers");
  if (controllers.find("memory") == std::string::npos) {
    EXPECT_TRUE(usage.at("memory_peak_bytes").is_null());
    EXPECT_TRUE(usage.at("oom_kills").is_null());
  }
  if (controllers.find("pids") == std::string::npos) EXPECT_TRUE(usage.at("pids_peak").is_null());
  EXPECT_FALSE(exited.contains("cgroup_left")) << json::serialize(exited);
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
  EXPECT_FALSE(path_exists(sandbox_cgroup(spec))) << "the cgroup was not removed";
  for (int64_t c : children) EXPECT_FALSE(process_exists(static_cast<pid_t>(c)));
  const std::string log = run->stderr_text();
  EXPECT_NE(log.find("helper spawned into " + sandbox_cgroup(spec)), std::string::npos) << log;
  EXPECT_EQ(log.find("helper moved into"), std::string::npos) << log;
}

// The helper spawned and then moved into the cgroup (the path for kernels without
// CLONE_INTO_CGROUP): the VMM still starts inside.
TEST_F(CgroupRunTest, HelperMovedIntoTheCgroupWhereClone3CannotSpawnIntoIt) {
  ProbeSpec spec = cgroup_probe("moved", {"--children", "1"});
  auto run = start_run(write_spec(spec.json), {"--cgroup-enter", "move"});
  json::object started = run->expect_event("started");
  run->expect_event("ready");
  json::object report = env().wait_for_report(spec.report);
  const std::string inside = cgroup_->proc_path(sandbox_cgroup(spec));
  EXPECT_EQ(cgroup_of(static_cast<pid_t>(json_int(started, "pid"))), inside);
  const std::vector<int64_t> children = json_ints(report, "children");
  ASSERT_EQ(children.size(), 1u);
  EXPECT_EQ(cgroup_of(static_cast<pid_t>(children[0])), inside);
  run->terminate();
  run->expect_event("stopping");
  run->expect_event("exited");
  EXPECT_EQ(run->finish(), 0) << run->stderr_text();
  const std::string log = run->stderr_text();
  EXPECT_NE(log.find("helper moved into " + sandbox_cgroup(spec)), std::string::npos) << log;
  EXPECT_EQ(log.find("helper spawned into"), std::string::npos) << log;
  EXPECT_FALSE(path_exists(sandbox_cgroup(spec)));
}

// --cgroup-parent on the command line gives a spec without `cgroup` its cgroup.
TEST_F(CgroupRunTest, CgroupParentOnTheCommandLine) {
  ProbeSpec spec = probe_spec("cli-parent");
  auto run = start_run(write_spec(spec.json), {"--cgroup-parent", cgroup_->parent()});
  json::object started = run->expect_event("started");
  run->expect_event("ready");
  env().wait_for_report(spec.report);
  const pid_t vmm = static_cast<pid_t>(json_int(started, "pid"));
  EXPECT_EQ(cgroup_of(vmm), cgroup_->proc_path(sandbox_cgroup(spec)));
  run->terminate();
  run->expect_event("stopping");
  json::object exited = run->expect_event("exited", milliseconds(15000));
  EXPECT_EQ(run->finish(), 0) << run->stderr_text();
  EXPECT_TRUE(exited.contains("usage")) << json::serialize(exited);
  EXPECT_FALSE(path_exists(sandbox_cgroup(spec)));
}

// Without a PID namespace a setsid() child leaves the VMM's session and process group; the
// cgroup still holds it, and the stop kills it.
TEST_F(CgroupRunTest, SetsidEscapeeIsGoneAfterTheStop) {
  expect_setsid_escapee_killed({}, "cgroup.kill");
}

// The same through the path for kernels without cgroup.kill: SIGKILL to each pid listed in
// cgroup.procs until it is empty.
TEST_F(CgroupRunTest, SetsidEscapeeIsGoneAfterTheStopWithoutCgroupKill) {
  expect_setsid_escapee_killed({"--cgroup-kill-mode", "procs"}, "each pid in cgroup.procs");
}

// A compromised VMM against the cgroup tree its uid owns (the delegation makes every cgroup
// under the parent the caller's), without netns, `files` or jail: a limit of its own cgroup,
// leaving its cgroup for a sibling's through cgroup.procs, and cgroup.kill of another
// sandbox. Every write fails (no cgroup mount in its namespace), nothing changed, and it sees
// itself at the root of its cgroup namespace. The control below makes the same writes from
// outside any sandbox, as the same user, and each one works.
class CgroupfsAttackTest : public CgroupRunTest {
 protected:
  // Without a netns the helper detaches the cgroup mounts itself; with one, the fresh /sys it
  // mounts (as `ip netns exec` does) has none below it.
  void attack(bool with_netns);
};

TEST_F(CgroupfsAttackTest, AVmmReachesNoCgroupfsToKillASiblingLeaveItsCgroupOrLiftItsLimits) {
  attack(false);
}

TEST_F(CgroupfsAttackTest, AVmmInANetnsReachesNoCgroupfsEither) {
  attack(true);
}

void CgroupfsAttackTest::attack(bool with_netns) {
  const std::string tag = with_netns ? "-netns" : "";
  // An mqueue mount of the host's IPC namespace besides the cgroup ones: the VMM has none.
  const std::string mq = env().dir() + "/mqueue" + tag;
  std::filesystem::create_directories(mq);
  ASSERT_EQ(mount("mqueue", mq.c_str(), "mqueue", 0, nullptr), 0) << strerror(errno);
  struct Unmount {
    std::string path;
    ~Unmount() { umount2(path.c_str(), MNT_DETACH); }
  } unmount{mq};
  const std::string host = read_text_or_empty("/proc/self/mountinfo");
  ASSERT_NE(host.find(" - cgroup2 "), std::string::npos) << "the control: the host has them";
  ASSERT_NE(host.find(" - mqueue "), std::string::npos);
  Running victim = launch(cgroup_probe("victim" + tag, {}));
  Running sibling = launch(cgroup_probe("sibling" + tag, {}));
  ProbeSpec attacker_spec = cgroup_probe("attacker" + tag, {});
  if (!with_netns) attacker_spec.json.erase("netns");
  const std::string own = sandbox_cgroup(attacker_spec);
  const std::vector<std::string> writes = {
      own + "/cgroup.max.descendants=0",
      cgroup_->parent() + "/" + json_str(sibling.started, "id") + "/cgroup.procs=0",
      cgroup_->parent() + "/" + json_str(victim.started, "id") + "/cgroup.kill=1"};
  auto& args = attacker_spec.json["vmm"].as_object()["args"].as_array();
  for (const auto& w : writes) {
    args.emplace_back("--write");
    args.emplace_back(w);
  }
  args.emplace_back("--check-path");
  args.emplace_back(cgroup_->parent());
  Running attacker = launch(attacker_spec);
  const json::object& r = attacker.report;
  SCOPED_TRACE(json::serialize(r));
  for (const auto& w : writes) {
    EXPECT_EQ(r.at("writes").as_object().at(w.substr(0, w.find('='))).as_int64(), ENOENT) << w;
  }
  EXPECT_EQ(r.at("check_paths").as_object().at(cgroup_->parent()).as_int64(), ENOENT);
  for (const auto& type : r.at("mount_types").as_array()) {
    EXPECT_NE(type, "cgroup");
    EXPECT_NE(type, "cgroup2");
    EXPECT_NE(type, "mqueue");
  }
  // Its cgroup namespace is rooted at its own cgroup: every hierarchy shows "/".
  const std::string self_cgroup(r.at("self_cgroup").as_string());
  std::istringstream lines(self_cgroup);
  for (std::string line; std::getline(lines, line);) {
    EXPECT_TRUE(line.size() >= 2 && line.substr(line.size() - 2) == ":/") << line;
  }
  // Nothing changed: the victim runs, the attacker is still in its cgroup, its limit as made.
  EXPECT_TRUE(process_alive(victim.vmm_pid()));
  EXPECT_EQ(cgroup_of(attacker.vmm_pid()), cgroup_->proc_path(own));
  EXPECT_EQ(trimmed(read_text_or_empty(own + "/cgroup.max.descendants")), "max");
  for (Running* s : {&attacker, &sibling, &victim}) {
    s->run->terminate();
    EXPECT_EQ(s->run->finish(), 0) << s->run->stderr_text();
  }
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
}

TEST_F(CgroupfsAttackTest, ControlTheSameCgroupWritesFromOutsideASandboxWork) {
  Running victim = launch(cgroup_probe("ctl-victim", {}));
  Running sibling = launch(cgroup_probe("ctl-sibling", {}));
  Running target = launch(cgroup_probe("ctl-target", {}));
  const std::string target_cgroup = cgroup_->parent() + "/" + json_str(target.started, "id");
  const std::vector<std::string> writes = {
      target_cgroup + "/cgroup.max.descendants=0",
      cgroup_->parent() + "/" + json_str(sibling.started, "id") + "/cgroup.procs=0",
      cgroup_->parent() + "/" + json_str(victim.started, "id") + "/cgroup.kill=1"};
  // The probe as the same user, started in the supervisors' leaf (inside the delegation, as a
  // sandbox is), outside any sandbox.
  const std::string report = env().work() + "/control-cgroup.json";
  std::vector<std::string> argv = {"/bin/sh", "-c", "echo $$ > \"$0\"/cgroup.procs && exec \"$@\"",
                                   cgroup_->leaf()};
  for (const auto& a : as_test_user()) argv.push_back(a);
  argv.insert(argv.end(), {env().probe(), "--report", report});
  for (const auto& w : writes) argv.insert(argv.end(), {"--write", w});
  ChildProcess outside(argv, SpawnOptions{}, env().fresh_path("control-cgroup.stderr"));
  json::object r = env().wait_for_report(report);
  SCOPED_TRACE(json::serialize(r));
  for (const auto& w : writes) {
    EXPECT_EQ(r.at("writes").as_object().at(w.substr(0, w.find('='))).as_int64(), 0) << w;
  }
  EXPECT_EQ(trimmed(read_text_or_empty(target_cgroup + "/cgroup.max.descendants")), "0");
  EXPECT_EQ(cgroup_of(outside.pid()),
            cgroup_->proc_path(cgroup_->parent() + "/" + json_str(sibling.started, "id")));
  json::object victim_exit = victim.run->expect_event("exited");
  EXPECT_EQ(json_int(victim_exit, "signal"), SIGKILL) << json::serialize(victim_exit);
  victim.run->finish();
  kill(outside.pid(), SIGKILL);
  outside.wait();
  for (Running* s : {&sibling, &target}) {
    s->run->terminate();
    s->run->finish();
  }
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
}

// memory_max needs the memory controller, which this machine's cgroup2 lacks (it is bound to
// v1): refused naming it, before anything is spawned, and the parent's subtree_control kept.
TEST_F(CgroupRunTest, MemoryMaxIsRefusedNamingTheMemoryControllerAndNothingIsSpawned) {
  const std::string controllers = read_text_or_empty(cgroup_->parent() + "/cgroup.controllers");
  ASSERT_EQ(controllers.find("memory"), std::string::npos)
      << "this machine's cgroup2 has the memory controller: the refusal cannot be shown here";
  const std::string subtree = read_text_or_empty(cgroup_->parent() + "/cgroup.subtree_control");
  ProbeSpec spec = cgroup_probe("memory", {}, json::object{{"memory_max", 268435456}});
  std::string detail = expect_refused(spec, EOPNOTSUPP);
  EXPECT_NE(detail.find("the memory controller"), std::string::npos) << detail;
  EXPECT_NE(detail.find("cgroup.memory_max"), std::string::npos) << detail;
  EXPECT_NE(detail.find(cgroup_->parent() + "/cgroup.controllers"), std::string::npos) << detail;
  EXPECT_EQ(read_text_or_empty(cgroup_->parent() + "/cgroup.subtree_control"), subtree);
}

TEST_F(CgroupRunTest, AParentHoldingAProcessIsRefused) {
  std::string busy = cgroup_->make_child("busy", true);
  ChildProcess sleeper({"/bin/sleep", "60"}, {}, env().fresh_path("sleep.stderr"));
  DelegatedCgroup::move(sleeper.pid(), busy);
  ProbeSpec spec = cgroup_probe("busy", {}, json::object{{"parent", busy}});
  std::string detail = expect_refused(spec, EBUSY);
  EXPECT_NE(detail.find(busy + " holds processes"), std::string::npos) << detail;
  EXPECT_NE(detail.find(std::to_string(sleeper.pid())), std::string::npos) << detail;
  EXPECT_FALSE(path_exists(busy + "/" + spec.id));
}

TEST_F(CgroupRunTest, AParentNotOnCgroup2IsRefused) {
  ProbeSpec spec = cgroup_probe("tmpfs", {}, json::object{{"parent", env().work()}});
  std::string detail = expect_refused(spec, EINVAL);
  EXPECT_NE(detail.find(env().work() + " is not on a cgroup2 mount"), std::string::npos) << detail;
  EXPECT_FALSE(path_exists(env().work() + "/" + spec.id));
}

TEST_F(CgroupRunTest, AParentTheUserCannotWriteIsRefused) {
  std::string theirs = cgroup_->make_child("not-delegated", false);
  ProbeSpec spec = cgroup_probe("nowrite", {}, json::object{{"parent", theirs}});
  std::string detail = expect_refused(spec, EACCES);
  EXPECT_NE(detail.find(theirs + " is not writable by this user"), std::string::npos) << detail;
}

// ---------------------------------------------------------------------------------------------
// doctor

// Whether uid/gid kTestUid may read and write `path`, from its owner and mode (no ACLs here).
bool test_user_may_rw(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return false;
  if (st.st_uid == kTestUid) return (st.st_mode & 0600) == 0600;
  if (st.st_gid == kTestGid) return (st.st_mode & 060) == 060;
  return (st.st_mode & 06) == 06;
}

const json::object& check_named(const json::object& doctor, const std::string& name) {
  for (const auto& c : doctor.at("checks").as_array()) {
    if (c.as_object().at("name").as_string() == name) return c.as_object();
  }
  throw std::runtime_error("no check named " + name + " in " + json::serialize(doctor));
}

TEST_F(CgroupRunTest, DoctorReportsThisMachineAndItsJsonParses) {
  Output o = run_supervisor(
      {"doctor", "--json", "--helper", env().helper(), "--cgroup-parent", cgroup_->parent()});
  boost::system::error_code ec;
  json::value v = json::parse(o.out, ec);
  ASSERT_FALSE(ec) << "not JSON: " << o.out << "\nstderr: " << o.err;
  const json::object& doctor = v.as_object();
  auto status = [&](const std::string& name) {
    return std::string(check_named(doctor, name).at("status").as_string());
  };
  auto detail = [&](const std::string& name) {
    return std::string(check_named(doctor, name).at("detail").as_string());
  };

  EXPECT_EQ(status("helper.installed"), "ok");
  EXPECT_EQ(status("helper.executable"), "ok");
  EXPECT_EQ(status("helper.capabilities"), "ok");
  EXPECT_EQ(detail("helper.capabilities"), "cap_sys_admin,cap_audit_write+ep");
  EXPECT_EQ(status("helper.not_setuid"), "ok");
  EXPECT_EQ(status("policy"), "ok") << detail("policy");
  EXPECT_NE(detail("policy").find(env().policy_path()), std::string::npos) << detail("policy");

  const bool kvm = test_user_may_rw("/dev/kvm");
  EXPECT_EQ(status("dev.kvm"), kvm ? "ok" : "fail") << detail("dev.kvm");
  EXPECT_EQ(status("dev.net_tun"), test_user_may_rw("/dev/net/tun") ? "ok" : "warn");
  const bool uffd = test_user_may_rw("/dev/userfaultfd") ||
                    trimmed(read_text_or_empty("/proc/sys/vm/unprivileged_userfaultfd")) == "1";
  EXPECT_EQ(status("userfaultfd"), uffd ? "ok" : "warn") << detail("userfaultfd");

  // The supervisor runs with the limits it inherits from the test (setpriv keeps them).
  rlimit nofile{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &nofile), 0);
  EXPECT_EQ(status("rlimit.nofile"), nofile.rlim_max > 4095 ? "ok" : "fail");
  EXPECT_EQ(
      detail("rlimit.nofile").rfind("hard RLIMIT_NOFILE " + std::to_string(nofile.rlim_max), 0), 0u)
      << detail("rlimit.nofile");
  const long abi =
      syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  if (abi >= 1) {
    EXPECT_EQ(status("landlock"), "ok");
    EXPECT_TRUE(detail("landlock").starts_with("ABI " + std::to_string(abi))) << detail("landlock");
  } else {
    EXPECT_EQ(status("landlock"), "warn");
  }
  struct stat st;
  if (stat("/proc/sys/kernel/yama/ptrace_scope", &st) != 0) {
    EXPECT_EQ(status("yama.ptrace_scope"), "warn");
  } else {
    std::string scope = trimmed(read_text_or_empty("/proc/sys/kernel/yama/ptrace_scope"));
    EXPECT_EQ(status("yama.ptrace_scope"), scope == "0" ? "warn" : "ok");
  }

  EXPECT_EQ(status("cgroup.v2_mount"), "ok");
  EXPECT_NE(detail("cgroup.v2_mount").find("cgroup2 at " + cgroup_->mount()), std::string::npos);
  std::string mount_controllers =
      trimmed(read_text_or_empty(cgroup_->mount() + "/cgroup.controllers"));
  EXPECT_NE(detail("cgroup.v2_mount").find("controllers: " + mount_controllers), std::string::npos)
      << detail("cgroup.v2_mount");
  EXPECT_EQ(status("cgroup.parent"), "ok") << detail("cgroup.parent");
  std::string parent_controllers =
      trimmed(read_text_or_empty(cgroup_->parent() + "/cgroup.controllers"));
  EXPECT_NE(detail("cgroup.parent")
                .find("available: " +
                      (parent_controllers.empty() ? std::string("none") : parent_controllers)),
            std::string::npos)
      << detail("cgroup.parent");
  EXPECT_EQ(status("cgroup.placement"), "ok") << detail("cgroup.placement");
  EXPECT_EQ(status("netns"), path_exists("/run/netns") ? "ok" : "warn");

  // Exit 0 exactly when no needed check failed.
  bool needed_ok = true;
  for (const auto& c : doctor.at("checks").as_array()) {
    const auto& obj = c.as_object();
    if (obj.at("needed").as_bool() && obj.at("status").as_string() == "fail") needed_ok = false;
    if (obj.at("status").as_string() != "ok") {
      EXPECT_TRUE(obj.at("fix").is_string()) << json::serialize(obj);
    }
  }
  EXPECT_EQ(doctor.at("ok").as_bool(), needed_ok);
  EXPECT_EQ(o.code, needed_ok ? 0 : 1) << o.out;
  EXPECT_EQ(needed_ok, kvm) << "on this machine only /dev/kvm can fail: " << o.out;
}

TEST_F(CgroupRunTest, DoctorTextLinesAndANotDelegatedParent) {
  std::string theirs = cgroup_->make_child("not-delegated", false);
  Output o = run_supervisor({"doctor", "--helper", env().helper(), "--cgroup-parent", theirs});
  EXPECT_EQ(o.code, 1) << o.out;
  std::istringstream lines(o.out);
  std::string line, previous;
  bool saw_parent = false;
  while (std::getline(lines, line)) {
    if (line.starts_with("      fix: ")) {
      EXPECT_FALSE(previous.starts_with("OK")) << "a fix for an OK line: " << o.out;
    } else if (!line.starts_with("this host")) {
      EXPECT_TRUE(line.starts_with("OK    ") || line.starts_with("WARN  ") ||
                  line.starts_with("FAIL  "))
          << line;
    }
    if (line.starts_with("FAIL  cgroup.parent: ") &&
        line.find("not writable by this user (not delegated to it)") != std::string::npos) {
      saw_parent = true;
      EXPECT_NE(line.find(theirs), std::string::npos) << line;
      std::string fix;
      std::getline(lines, fix);
      EXPECT_NE(fix.find("chown"), std::string::npos) << fix;
      line = fix;
    }
    previous = line;
  }
  EXPECT_TRUE(saw_parent) << o.out;
}

}  // namespace
}  // namespace sbx::it
