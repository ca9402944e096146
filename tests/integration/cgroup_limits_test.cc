// SPDX-License-Identifier: Apache-2.0
// The cgroup limits enforced, where cgroup v2 holds the controllers: Debian 12's own kernels
// booted by scripts/kernel-test.sh (cgroup2 alone, every controller on), or any host whose
// cgroup2 mount has memory, pids, cpu, cpuset and io. Each limit is hit by a real probe VMM
// under the unprivileged supervisor, in a systemd-style delegation (README: a parent owned by
// the user, the supervisor in a leaf beside it), next to the same probe without the limit.
// scripts/test.sh runs this binary on the host only when its cgroup2 has those controllers
// (this development machine's hybrid cgroups do not), and always in the kernel guests: a
// missing controller is a failure here, never a skip.
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cerrno>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "tests/integration/helper_env.h"
#include "tests/integration/supervisor_env.h"

namespace sbx::it {
namespace {

namespace json = boost::json;

// A key's number in a flat-keyed cgroup file ("nr_throttled 12"); -1 if absent.
int64_t keyed(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string k;
  int64_t v;
  while (in >> k >> v) {
    if (k == key) return v;
  }
  return -1;
}

class CgroupLimitsTest : public SupervisorEnvTest {
 protected:
  void SetUp() override {
    SupervisorEnvTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    cgroup_ = std::make_unique<DelegatedCgroup>();
    // What systemd does for a unit with Delegate=yes: the controllers on in the delegated
    // cgroup's subtree_control, so the user's own subtree (the sandboxes' parent) has them.
    const std::string available = read_text_or_empty(cgroup_->root() + "/cgroup.controllers");
    for (const char* c : {"memory", "pids", "cpu", "cpuset", "io"}) {
      ASSERT_NE((" " + trimmed(available) + " ").find(std::string(" ") + c + " "),
                std::string::npos)
          << c << " is not available in " << cgroup_->root()
          << " (cgroup.controllers: " << available << "): this binary needs cgroup v2 with it";
      std::ofstream(cgroup_->root() + "/cgroup.subtree_control") << "+" << c;
    }
    run_supervisor_in_cgroup(cgroup_->leaf());
  }
  void TearDown() override {
    SupervisorEnvTest::TearDown();
    run_supervisor_in_cgroup("");
    cgroup_.reset();
  }

  ProbeSpec limited(const std::string& tag, const std::vector<std::string>& flags,
                    json::object limits) {
    ProbeSpec spec = probe_spec(tag, flags);
    limits["parent"] = cgroup_->parent();
    spec.json["cgroup"] = limits;
    return spec;
  }
  std::string cgroup_dir(const ProbeSpec& spec) const { return cgroup_->parent() + "/" + spec.id; }

  // Runs a probe that exits on its own after its report (--exit-now) to its end: the exited
  // event.
  json::object run_to_exit(const ProbeSpec& spec) {
    auto run = start_run(write_spec(spec.json));
    run->expect_event("started");
    json::object exited;
    for (;;) {
      json::object ev = run->next_event(std::chrono::seconds(120));
      if (json_str(ev, "event") == "exited") {
        exited = ev;
        break;
      }
    }
    run->finish();
    EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
    return exited;
  }

  static int64_t usage(const json::object& exited, const char* key) {
    const json::value& v = exited.at("usage").as_object().at(key);
    return v.is_null() ? -1 : v.to_number<int64_t>();
  }

  std::unique_ptr<DelegatedCgroup> cgroup_;
};

TEST_F(CgroupLimitsTest, MemoryMaxOomKillsAVmmThatTouchesMore) {
  json::object ev = run_to_exit(limited("oom", {"--touch-mib", "256", "--exit-now"},
                                        {{"memory_max", 64 << 20}, {"memory_swap_max", 0}}));
  SCOPED_TRACE(json::serialize(ev));
  EXPECT_EQ(json_str(ev, "outcome"), "signaled");
  EXPECT_EQ(json_int(ev, "signal"), SIGKILL);
  EXPECT_GE(usage(ev, "oom_kills"), 1);
  EXPECT_LE(usage(ev, "memory_peak_bytes"), 64 << 20);
}

TEST_F(CgroupLimitsTest, ControlWithoutMemoryMaxTheSameVmmExitsZero) {
  json::object ev = run_to_exit(limited("no-oom", {"--touch-mib", "256", "--exit-now"},
                                        {{"memory_max", "max"}, {"memory_swap_max", 0}}));
  SCOPED_TRACE(json::serialize(ev));
  EXPECT_EQ(json_str(ev, "outcome"), "exited");
  EXPECT_EQ(json_int(ev, "code"), 0);
  EXPECT_GE(usage(ev, "memory_peak_bytes"), int64_t{256} << 20);
  EXPECT_EQ(usage(ev, "oom_kills"), 0);
}

// pids.max 8 counts every task of the cgroup: the probe and 7 children; the next fork fails.
TEST_F(CgroupLimitsTest, PidsMaxEightFailsTheForkPastItWithEagain) {
  ProbeSpec spec = limited("pids", {"--fork-until-fail", "32"}, {{"pids_max", 8}});
  Running r = launch(spec);
  SCOPED_TRACE(json::serialize(r.report));
  const json::object& forks = r.report.at("forks").as_object();
  EXPECT_EQ(json_int(forks, "made"), 7);
  EXPECT_EQ(json_int(forks, "errno"), EAGAIN);
  r.run->terminate();
  r.run->finish();
  json::object ev = r.run->events().back();
  EXPECT_EQ(usage(ev, "pids_peak"), 8) << json::serialize(ev);
}

TEST_F(CgroupLimitsTest, ControlWithoutPidsMaxEveryForkSucceeds) {
  Running r = launch(limited("no-pids", {"--fork-until-fail", "32"}, {{"pids_max", "max"}}));
  const json::object& forks = r.report.at("forks").as_object();
  EXPECT_EQ(json_int(forks, "made"), 32);
  EXPECT_EQ(json_int(forks, "errno"), 0);
  r.run->terminate();
  r.run->finish();
  EXPECT_GE(usage(r.run->events().back(), "pids_peak"), 33);
}

// cpu.max "10000 100000": 10% of one CPU. A VMM spinning 1 s of wall time gets about 0.1 s of
// it; over its whole life (its start, slow under emulation, included) the cgroup's usage
// stays within 10% of the time it ran, and cpu.stat shows the throttling.
TEST_F(CgroupLimitsTest, CpuMaxThrottlesAVmmSpinningOneSecond) {
  ProbeSpec spec = limited("cpu", {"--spin-wall-ms", "1000"}, {{"cpu_max", "10000 100000"}});
  Running r = launch(spec);
  EXPECT_LE(json_int(r.report, "spin_cpu_ms"), 150) << json::serialize(r.report);
  const std::string stat = read_text_or_empty(cgroup_dir(spec) + "/cpu.stat");
  EXPECT_GT(keyed(stat, "nr_throttled"), 0) << stat;
  EXPECT_GT(keyed(stat, "throttled_usec"), 0) << stat;
  r.run->terminate();
  r.run->finish();
  json::object ev = r.run->events().back();
  // t_ms counts from the launch request: the VMM ran no longer than that.
  EXPECT_LE(usage(ev, "cpu_usec"), json_int(ev, "t_ms") * 1000 / 10 + 50000) << json::serialize(ev);
}

TEST_F(CgroupLimitsTest, ControlWithoutCpuMaxTheSameSpinGetsItsSecond) {
  ProbeSpec spec = limited("no-cpu", {"--spin-wall-ms", "1000"}, {{"cpu_max", "max 100000"}});
  Running r = launch(spec);
  EXPECT_GE(json_int(r.report, "spin_cpu_ms"), 500) << json::serialize(r.report);
  const std::string stat = read_text_or_empty(cgroup_dir(spec) + "/cpu.stat");
  EXPECT_EQ(keyed(stat, "nr_throttled"), 0) << stat;
  r.run->terminate();
  r.run->finish();
  EXPECT_GE(usage(r.run->events().back(), "cpu_usec"), 500000);
}

TEST_F(CgroupLimitsTest, CpusetCpusZeroPinsTheVmm) {
  Running r = launch(limited("cpuset", {}, {{"cpuset_cpus", "0"}}));
  EXPECT_EQ(json_str(r.report, "cpus_allowed_list"), "0");
  r.run->terminate();
  r.run->finish();
}

TEST_F(CgroupLimitsTest, ControlWithoutCpusetTheVmmMayRunOnEveryCpu) {
  Running r = launch(limited("no-cpuset", {}, {{"pids_max", "max"}}));
  EXPECT_EQ(json_str(r.report, "cpus_allowed_list"),
            "0-" + std::to_string(sysconf(_SC_NPROCESSORS_ONLN) - 1));
  r.run->terminate();
  r.run->finish();
}

// The limits with no simple effect to provoke: written, and read back while the VMM runs.
TEST_F(CgroupLimitsTest, TheOtherLimitsAreInPlaceWhileTheVmmRuns) {
  ProbeSpec spec = limited("others", {},
                           {{"memory_high", 96 << 20},
                            {"memory_swap_max", 0},
                            {"cpu_weight", 50},
                            {"io_weight", 200},
                            {"pids_max", 64}});
  Running r = launch(spec);
  const std::string dir = cgroup_dir(spec);
  EXPECT_EQ(trimmed(read_text_or_empty(dir + "/memory.high")), std::to_string(96 << 20));
  EXPECT_EQ(trimmed(read_text_or_empty(dir + "/memory.swap.max")), "0");
  EXPECT_EQ(trimmed(read_text_or_empty(dir + "/cpu.weight")), "50");
  EXPECT_EQ(read_text_or_empty(dir + "/io.weight").rfind("default 200", 0), 0u);
  EXPECT_EQ(trimmed(read_text_or_empty(dir + "/pids.max")), "64");
  EXPECT_EQ(cgroup_of(r.vmm_pid()), cgroup_->proc_path(dir));
  r.run->terminate();
  EXPECT_EQ(r.run->finish(), 0);
}

}  // namespace
}  // namespace sbx::it
