// SPDX-License-Identifier: Apache-2.0
// The cgroup code against a temporary directory laid out like cgroupfs: the exact files and
// values the limits write, the controllers enabled in the parent, the parent refusals (with
// nothing created), the usage files, and the exited event's `usage` and `cgroup_left`.
#include "supervisor/cgroup.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "supervisor/events.h"
#include "supervisor/spec.h"

namespace sbx::supervisor {
namespace {

namespace fs = std::filesystem;

// The files the kernel makes in a cgroup with every controller enabled (a subset, and a few
// that sbx must never write, so a stray write would show).
const char* const kKernelFiles[] = {
    "cgroup.procs",
    "cgroup.events",
    "cgroup.kill",
    "cgroup.freeze",
    "memory.max",
    "memory.high",
    "memory.low",
    "memory.min",
    "memory.swap.max",
    "memory.swap.high",
    "memory.oom.group",
    "cpu.max",
    "cpu.max.burst",
    "cpu.weight",
    "cpu.weight.nice",
    "pids.max",
    "cpuset.cpus",
    "cpuset.mems",
    "cpuset.cpus.partition",
    "io.weight",
    "io.max",
};

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

void put(const std::string& path, const std::string& content) {
  std::ofstream(path) << content;
}

class FakeCgroupfs : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sbx-cgroup-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    parent_ = root_ + "/parent";
    ASSERT_EQ(mkdir(parent_.c_str(), 0755), 0);
    put(parent_ + "/cgroup.controllers", "cpuset cpu io memory hugetlb pids\n");
    put(parent_ + "/cgroup.subtree_control", "");
    put(parent_ + "/cgroup.procs", "");
  }
  void TearDown() override { fs::remove_all(root_); }

  // A child directory with empty kernel files, as mkdir in cgroupfs makes it.
  std::string make_kernel_child(const std::string& name) {
    std::string dir = parent_ + "/" + name;
    EXPECT_EQ(mkdir(dir.c_str(), 0755), 0);
    for (const char* f : kKernelFiles) put(dir + "/" + f, "");
    return dir;
  }

  // Every non-empty file in `dir`: name -> content.
  static std::map<std::string, std::string> written(const std::string& dir) {
    std::map<std::string, std::string> out;
    for (const auto& e : fs::directory_iterator(dir)) {
      std::string c = slurp(e.path());
      if (!c.empty()) out[e.path().filename()] = c;
    }
    return out;
  }

  static CgroupSpec full_spec(const std::string& parent) {
    CgroupSpec c;
    c.parent = parent;
    c.memory_max = "536870912";
    c.memory_high = "469762048";
    c.memory_swap_max = "0";
    c.cpu_max = "50000 100000";
    c.cpu_weight = 100;
    c.pids_max = "256";
    c.cpuset_cpus = "2-3";
    c.cpuset_mems = "0";
    c.io_weight = 100;
    return c;
  }

  static SandboxCgroup::Options fake() { return {false, CgroupKillMode::kAuto}; }

  std::string root_, parent_;
};

TEST_F(FakeCgroupfs, LimitsAreWrittenToExactlyTheKernelFilesWithTheirValues) {
  std::string dir = make_kernel_child("vm-1");
  UniqueFd fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(fd);
  ASSERT_FALSE(write_cgroup_limits(fd.get(), dir, full_spec(parent_)));
  std::map<std::string, std::string> want{
      {"memory.max", "536870912"}, {"memory.high", "469762048"}, {"memory.swap.max", "0"},
      {"cpu.max", "50000 100000"}, {"cpu.weight", "100"},        {"pids.max", "256"},
      {"cpuset.cpus", "2-3"},      {"cpuset.mems", "0"},         {"io.weight", "default 100"},
  };
  EXPECT_EQ(written(dir), want);
}

TEST_F(FakeCgroupfs, OnlyTheLimitsGivenAreWritten) {
  std::string dir = make_kernel_child("vm-2");
  UniqueFd fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  CgroupSpec c;
  c.memory_max = "max";
  c.pids_max = "64";
  ASSERT_FALSE(write_cgroup_limits(fd.get(), dir, c));
  std::map<std::string, std::string> want{{"memory.max", "max"}, {"pids.max", "64"}};
  EXPECT_EQ(written(dir), want);
}

TEST_F(FakeCgroupfs, AMissingKernelFileIsAnErrorNamingItAndIsNotCreated) {
  std::string dir = parent_ + "/bare";
  ASSERT_EQ(mkdir(dir.c_str(), 0755), 0);
  UniqueFd fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  CgroupSpec c;
  c.cpu_weight = 50;
  auto e = write_cgroup_limits(fd.get(), dir, c);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->err, ENOENT);
  EXPECT_NE(e->detail.find(dir + "/cpu.weight"), std::string::npos) << e->detail;
  EXPECT_NE(e->detail.find("'50'"), std::string::npos) << e->detail;
  EXPECT_FALSE(fs::exists(dir + "/cpu.weight"));
}

TEST_F(FakeCgroupfs, ControllersTheLimitsNeedAreEnabledInOneWrite) {
  UniqueFd fd(open(parent_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  const auto needed = cgroup_controllers_needed(full_spec(parent_));
  EXPECT_EQ(needed, (std::vector<std::string>{"memory", "cpu", "pids", "cpuset", "io"}));
  ASSERT_FALSE(enable_cgroup_controllers(fd.get(), parent_, needed));
  EXPECT_EQ(slurp(parent_ + "/cgroup.subtree_control"), "+memory +cpu +pids +cpuset +io");
}

TEST_F(FakeCgroupfs, ControllersAlreadyOnAreNotWrittenAgain) {
  put(parent_ + "/cgroup.subtree_control", "cpu memory\n");
  UniqueFd fd(open(parent_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_FALSE(enable_cgroup_controllers(fd.get(), parent_, {"memory", "cpu"}));
  EXPECT_EQ(slurp(parent_ + "/cgroup.subtree_control"), "cpu memory\n");
  // Only the missing ones, in one write ("+pids +cpu" over the 7 bytes of "memory\n").
  put(parent_ + "/cgroup.subtree_control", "memory\n");
  ASSERT_FALSE(enable_cgroup_controllers(fd.get(), parent_, {"memory", "pids", "cpu"}));
  EXPECT_EQ(slurp(parent_ + "/cgroup.subtree_control"), "+pids +cpu");
}

TEST_F(FakeCgroupfs, NoLimitsNoControllerWrite) {
  CgroupSpec c;
  c.parent = parent_;
  auto made = SandboxCgroup::create(c, "vm-3", fake());
  ASSERT_TRUE(std::holds_alternative<SandboxCgroup>(made)) << std::get<CgroupError>(made).detail;
  EXPECT_EQ(slurp(parent_ + "/cgroup.subtree_control"), "");
  EXPECT_TRUE(fs::is_directory(parent_ + "/vm-3"));
  auto& cg = std::get<SandboxCgroup>(made);
  EXPECT_EQ(cg.path(), parent_ + "/vm-3");
  EXPECT_FALSE(cg.remove(100));
  EXPECT_FALSE(fs::exists(parent_ + "/vm-3"));
}

TEST_F(FakeCgroupfs, AControllerTheParentLacksIsRefusedByNameAndNothingIsMade) {
  put(parent_ + "/cgroup.controllers", "hugetlb\n");
  CgroupSpec c;
  c.parent = parent_;
  c.memory_max = "1048576";
  auto made = SandboxCgroup::create(c, "vm-4", fake());
  auto* e = std::get_if<CgroupError>(&made);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->err, EOPNOTSUPP);
  EXPECT_NE(e->detail.find("the memory controller"), std::string::npos) << e->detail;
  EXPECT_NE(e->detail.find("cgroup.memory_max"), std::string::npos) << e->detail;
  EXPECT_NE(e->detail.find(parent_ + "/cgroup.controllers"), std::string::npos) << e->detail;
  EXPECT_NE(e->detail.find("available: hugetlb"), std::string::npos) << e->detail;
  EXPECT_FALSE(fs::exists(parent_ + "/vm-4"));
  EXPECT_EQ(slurp(parent_ + "/cgroup.subtree_control"), "");
}

TEST_F(FakeCgroupfs, AParentHoldingProcessesIsRefused) {
  put(parent_ + "/cgroup.procs", "4242\n");
  CgroupSpec c;
  c.parent = parent_;
  auto made = SandboxCgroup::create(c, "vm-5", fake());
  auto* e = std::get_if<CgroupError>(&made);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->err, EBUSY);
  EXPECT_NE(e->detail.find(parent_ + " holds processes"), std::string::npos) << e->detail;
  EXPECT_FALSE(fs::exists(parent_ + "/vm-5"));
}

TEST_F(FakeCgroupfs, AParentNotOnCgroup2IsRefused) {
  CgroupSpec c;
  c.parent = parent_;
  auto made = SandboxCgroup::create(c, "vm-6", SandboxCgroup::Options{});
  auto* e = std::get_if<CgroupError>(&made);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->err, EINVAL);
  EXPECT_NE(e->detail.find(parent_ + " is not on a cgroup2 mount"), std::string::npos) << e->detail;
  EXPECT_FALSE(fs::exists(parent_ + "/vm-6"));
}

TEST_F(FakeCgroupfs, AMissingParentIsRefusedWithItsPath) {
  CgroupSpec c;
  c.parent = root_ + "/nope";
  auto made = SandboxCgroup::create(c, "vm-7", fake());
  auto* e = std::get_if<CgroupError>(&made);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->err, ENOENT);
  EXPECT_NE(e->detail.find(root_ + "/nope"), std::string::npos) << e->detail;
}

TEST_F(FakeCgroupfs, AnExistingSandboxCgroupIsRefused) {
  ASSERT_EQ(mkdir((parent_ + "/vm-8").c_str(), 0755), 0);
  CgroupSpec c;
  c.parent = parent_;
  auto made = SandboxCgroup::create(c, "vm-8", fake());
  auto* e = std::get_if<CgroupError>(&made);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->err, EEXIST);
  EXPECT_NE(e->detail.find("mkdir " + parent_ + "/vm-8"), std::string::npos) << e->detail;
  EXPECT_TRUE(fs::is_directory(parent_ + "/vm-8")) << "someone else's directory was removed";
}

// A limit write that fails after the mkdir (here: the plain directory has no kernel files)
// removes the new directory again.
TEST_F(FakeCgroupfs, AFailedLimitWriteLeavesNoDirectory) {
  CgroupSpec c;
  c.parent = parent_;
  c.pids_max = "10";
  auto made = SandboxCgroup::create(c, "vm-9", fake());
  auto* e = std::get_if<CgroupError>(&made);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->err, ENOENT);
  EXPECT_NE(e->detail.find(parent_ + "/vm-9/pids.max"), std::string::npos) << e->detail;
  EXPECT_FALSE(fs::exists(parent_ + "/vm-9"));
  EXPECT_EQ(slurp(parent_ + "/cgroup.subtree_control"), "+pids");
}

TEST_F(FakeCgroupfs, UsageIsReadFromTheKernelFilesAndAbsentOnesAreNull) {
  std::string dir = parent_ + "/u";
  ASSERT_EQ(mkdir(dir.c_str(), 0755), 0);
  put(dir + "/cpu.stat", "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n");
  put(dir + "/memory.peak", "8388608\n");
  put(dir + "/memory.events", "low 0\nhigh 3\nmax 7\noom 2\noom_kill 1\noom_group_kill 0\n");
  UniqueFd fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  CgroupUsage u = read_cgroup_usage(fd.get());
  EXPECT_EQ(u.cpu_usec, 123456u);
  EXPECT_EQ(u.memory_peak_bytes, 8388608u);
  EXPECT_EQ(u.oom_kills, 1u);
  EXPECT_EQ(u.pids_peak, std::nullopt);
}

std::string exited_line(const Outcome& o, const CgroupReport* report) {
  int p[2];
  EXPECT_EQ(pipe(p), 0);
  EventSink(p[1]).exited("vm-1", o, 42, report);
  close(p[1]);
  char buf[4096];
  ssize_t n = read(p[0], buf, sizeof(buf));
  close(p[0]);
  return std::string(buf, n > 0 ? static_cast<size_t>(n) : 0);
}

TEST(CgroupEvents, ExitedCarriesUsageWithNullForWhatTheKernelDidNotProvide) {
  CgroupReport r;
  r.path = "/sys/fs/cgroup/x/vm-1";
  r.usage.cpu_usec = 5000;
  Outcome o;
  o.kind = OutcomeKind::kExited;
  auto ev = boost::json::parse(exited_line(o, &r)).as_object();
  auto& usage = ev.at("usage").as_object();
  EXPECT_EQ(usage.at("cpu_usec").to_number<int64_t>(), 5000);
  EXPECT_TRUE(usage.at("memory_peak_bytes").is_null());
  EXPECT_TRUE(usage.at("oom_kills").is_null());
  EXPECT_TRUE(usage.at("pids_peak").is_null());
  EXPECT_FALSE(ev.contains("cgroup_left"));
}

TEST(CgroupEvents, ACgroupThatCouldNotBeRemovedIsReported) {
  CgroupReport r;
  r.path = "/sys/fs/cgroup/x/vm-1";
  r.left = CgroupError{EBUSY, "rmdir /sys/fs/cgroup/x/vm-1: Device or resource busy"};
  Outcome o;
  o.kind = OutcomeKind::kLost;
  auto ev = boost::json::parse(exited_line(o, &r)).as_object();
  auto& left = ev.at("cgroup_left").as_object();
  EXPECT_EQ(left.at("path").as_string(), "/sys/fs/cgroup/x/vm-1");
  EXPECT_EQ(left.at("errno").to_number<int>(), EBUSY);
  EXPECT_NE(std::string(left.at("detail").as_string()).find("rmdir"), std::string::npos);
}

TEST(CgroupEvents, WithoutACgroupTheEventIsUnchanged) {
  Outcome o;
  o.kind = OutcomeKind::kExited;
  o.code = 3;
  auto ev = boost::json::parse(exited_line(o, nullptr)).as_object();
  EXPECT_FALSE(ev.contains("usage"));
  EXPECT_FALSE(ev.contains("cgroup_left"));
  EXPECT_EQ(ev.at("code").to_number<int>(), 3);
}

}  // namespace
}  // namespace sbx::supervisor
