// SPDX-License-Identifier: Apache-2.0
// The soak (issue 22; bench/soak.sh N): N launch/ready/stop cycles of `sbx-supervisor run` as
// the test user, 4 at a time, the modes in turn (plain, files, jail, cgroup,
// "pid_namespace": false, restore). This process is the long-lived parent, as a VM manager
// would be. Before and after (after one batch of warm-up, which fills the kernel's caches) it
// compares: its own open fds, the host's mounts, the cgroups under the delegated subtree, the
// test user's processes and this process's children, the sandbox root, the supervisors' peak
// RSS (VmHWM at `ready`, the first batch's against the last's) and the kernel's slab objects of
// mnt_cache, pid and the cgroup's kernfs nodes (/proc/slabinfo), one line per figure with its
// drift. fds, mounts, cgroups, processes and sandbox dirs must not drift; RSS and slab are
// reported (the kernel's slabs are shared with whatever else runs on the machine).
#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "tests/integration/helper_env.h"
#include "tests/integration/supervisor_env.h"

namespace sbx::it {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;

constexpr int kParallel = 4;

// Active objects of each slab cache named, from /proc/slabinfo (0 when the kernel merged the
// cache into another or has none of that name).
std::map<std::string, long> slab_objects(const std::vector<std::string>& names) {
  std::map<std::string, long> out;
  for (const auto& n : names) out[n] = 0;
  std::ifstream in("/proc/slabinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string name;
    long active = 0;
    if (f >> name >> active && out.count(name) != 0) out[name] = active;
  }
  return out;
}

long count_entries(const std::string& dir) {
  long n = 0;
  std::error_code ec;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    ++n;
  }
  return n;
}

long count_cgroups(const std::string& root) {
  long n = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_directory(ec)) ++n;
  }
  return n;
}

long own_children() {
  std::ifstream in("/proc/self/task/" + std::to_string(getpid()) + "/children");
  long n = 0;
  pid_t pid;
  while (in >> pid) ++n;
  return n;
}

long vm_hwm_kb(pid_t pid) {
  return std::atol(proc_status(pid)["VmHWM"].c_str());
}

struct Figures {
  long fds = 0, mounts = 0, cgroups = 0, processes = 0, children = 0, sandbox_dirs = 0;
  std::map<std::string, long> slab;
};

class SoakTest : public SupervisorEnvTest {
 protected:
  void SetUp() override {
    SupervisorEnvTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    PolicySpec policy = env().default_policy();
    policy.extra_lines = {"read_only = /usr"};
    env().write_policy(policy);
    cgroup_ = std::make_unique<DelegatedCgroup>();
  }
  void TearDown() override {
    SupervisorEnvTest::TearDown();
    run_supervisor_in_cgroup("");
    cgroup_.reset();
  }

  Figures measure() {
    Figures f;
    f.fds = count_entries("/proc/self/fd");
    std::istringstream mounts(host_mounts());
    std::string line;
    while (std::getline(mounts, line)) ++f.mounts;
    f.cgroups = count_cgroups(cgroup_->root());
    f.processes = static_cast<long>(HelperEnv::test_user_processes().size());
    f.children = own_children();
    f.sandbox_dirs = count_entries(env().sandboxes());
    f.slab = slab_objects({"mnt_cache", "pid", "kernfs_node_cache"});
    return f;
  }

  ProbeSpec spec_for(int mode, const std::string& tag) {
    ProbeSpec spec;
    switch (mode % 6) {
      case 0:  // plain: the default PID namespace
      case 3:  // cgroup
        spec = probe_spec(tag);
        spec.json.erase("pid_namespace");
        break;
      case 1:  // files
        spec = jailed_spec(tag);
        spec.json.erase("jail");
        break;
      case 2:  // jail
        spec = jailed_spec(tag);
        break;
      case 4:  // "pid_namespace": false
        spec = probe_spec(tag);
        break;
      case 5:  // restore
        spec = restore_spec(tag);
        break;
    }
    if (mode % 6 == 3) spec.json["cgroup"] = json::object{{"parent", cgroup_->parent()}};
    return spec;
  }

  // One batch: kParallel supervisors started, each up to `ready`, then all stopped. Returns
  // the largest VmHWM (kB) of the batch's supervisors at `ready`.
  long batch(int first_mode) {
    struct One {
      ProbeSpec spec;
      std::string spec_path;
      std::unique_ptr<SupervisorRun> run;
    };
    std::vector<One> runs;
    for (int i = 0; i < kParallel; ++i) {
      One o;
      o.spec = spec_for(first_mode + i, "s");
      o.spec_path = write_spec(o.spec.json);
      // Only the cgroup mode's supervisor sits in the delegated leaf.
      run_supervisor_in_cgroup((first_mode + i) % 6 == 3 ? cgroup_->leaf() : "");
      o.run = start_run(o.spec_path);
      runs.push_back(std::move(o));
    }
    run_supervisor_in_cgroup("");
    long hwm = 0;
    for (auto& o : runs) {
      o.run->expect_event("started");
      o.run->expect_event("ready");
      hwm = std::max(hwm, vm_hwm_kb(o.run->pid()));
    }
    for (auto& o : runs) o.run->terminate();
    for (auto& o : runs) {
      const int code = o.run->finish();
      EXPECT_TRUE(code == 0 || code == 143) << code << "\n" << o.run->stderr_text();
      std::error_code ec;
      fs::remove(o.spec_path, ec);
      fs::remove(o.spec.report, ec);
      // files and jail: the per-sandbox read_write dir jailed_spec made under the sandbox root.
      if (o.spec.json.contains("files")) {
        fs::remove_all(fs::path(o.spec.report).parent_path(), ec);
      }
    }
    return hwm;
  }

  std::unique_ptr<DelegatedCgroup> cgroup_;
};

void print_line(const char* what, long before, long after) {
  std::printf("soak: %-34s before %8ld  after %8ld  drift %+ld\n", what, before, after,
              after - before);
}

TEST_F(SoakTest, Cycles) {
  const int cycles = std::max(kParallel, std::atoi(std::getenv("SBX_SOAK_CYCLES") != nullptr
                                                       ? std::getenv("SBX_SOAK_CYCLES")
                                                       : "1000"));
  const auto t0 = std::chrono::steady_clock::now();
  const long first_hwm = batch(0);  // warm-up, counted
  ASSERT_FALSE(HasFailure());
  HelperEnv::wait_no_test_user_processes();
  const Figures before = measure();
  long last_hwm = first_hwm;
  int done = kParallel;
  for (int mode = kParallel; done < cycles && !HasFailure(); mode += kParallel) {
    last_hwm = batch(mode);
    done += kParallel;
  }
  ASSERT_TRUE(HelperEnv::wait_no_test_user_processes());
  const Figures after = measure();
  const double secs =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count() /
      1000.0;
  std::printf("soak: %d cycles, %d at a time, in %.1f s\n", done, kParallel, secs);
  print_line("open fds of the parent", before.fds, after.fds);
  print_line("host mounts", before.mounts, after.mounts);
  print_line("cgroups (delegated subtree)", before.cgroups, after.cgroups);
  print_line("test-user processes", before.processes, after.processes);
  print_line("children of the parent", before.children, after.children);
  print_line("sandbox dirs", before.sandbox_dirs, after.sandbox_dirs);
  print_line("supervisor peak RSS kB (VmHWM)", first_hwm, last_hwm);
  print_line("slab mnt_cache objects", before.slab.at("mnt_cache"), after.slab.at("mnt_cache"));
  print_line("slab pid objects", before.slab.at("pid"), after.slab.at("pid"));
  print_line("slab cgroup (kernfs_node_cache)", before.slab.at("kernfs_node_cache"),
             after.slab.at("kernfs_node_cache"));
  std::fflush(stdout);
  EXPECT_EQ(after.fds, before.fds);
  EXPECT_EQ(after.mounts, before.mounts);
  EXPECT_EQ(after.cgroups, before.cgroups);
  EXPECT_EQ(after.processes, before.processes);
  EXPECT_EQ(after.children, before.children);
  EXPECT_EQ(after.sandbox_dirs, before.sandbox_dirs);
}

}  // namespace
}  // namespace sbx::it
