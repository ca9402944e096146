// SPDX-License-Identifier: Apache-2.0
// The jail, through the real supervisor as the test user: what a jailed VMM sees (asserted
// from the probe's report: its mount table, /dev, /proc, what exists, what it can write, read
// and connect to), that it stops and reports like an unjailed VMM under the default PID
// namespace and its forwarding init, that nothing outlives a SIGKILLed supervisor, and the
// refusals that belong to the jail.
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "tests/integration/helper_env.h"
#include "tests/integration/supervisor_env.h"

namespace sbx::it {
namespace {

namespace json = boost::json;
using std::chrono::milliseconds;

std::set<std::string> string_set(const json::object& o, const char* key) {
  std::set<std::string> out;
  const json::value& v = o.at(key);
  if (!v.is_array()) {
    ADD_FAILURE() << key << " is not a list: " << json::serialize(v);
    return out;
  }
  for (const auto& e : v.as_array()) out.insert(std::string(e.as_string()));
  return out;
}

int64_t errno_at(const json::object& report, const char* map, const std::string& key) {
  return report.at(map).as_object().at(key).as_int64();
}

class JailTest : public SupervisorEnvTest {
 protected:
  void SetUp() override {
    SupervisorEnvTest::SetUp();
    if (IsSkipped()) return;
    PolicySpec policy = env().default_policy();
    policy.extra_lines = {"read_only = /usr"};
    env().write_policy(policy);
  }

  static std::string path_dirname_of(const std::string& p) { return p.substr(0, p.rfind('/')); }

  // What a jailed VMM must not find and an unjailed one does: the host's files, the test's
  // work dir, and another sandbox's dir and socket. The jailed test and its control check the
  // same list.
  std::vector<std::string> host_only_paths(const ProbeSpec& other) {
    return {"/etc/passwd", "/home", "/root",           "/tmp",           "/run/netns",
            "/sys",        "/etc",  other.sandbox_dir, other.api_socket, env().work()};
  }
};

TEST_F(JailTest, TheVmmSeesOnlyItsOwnWorld) {
  const std::string mounts = host_mounts();
  // Another sandbox of the same user, unjailed, with its socket in the shared work dir.
  ProbeSpec other = probe_spec("jail-other");
  Running sibling = launch(other);

  // Images the test user may write on the host, so that only the jail keeps the kernel
  // read-only.
  const std::string kernel = env().images() + "/jail-vmlinux";
  const std::string rootfs = env().images() + "/jail-rootfs.ext4";
  for (const auto& image : {kernel, rootfs}) {
    std::FILE* f = std::fopen(image.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fclose(f);
    ASSERT_EQ(chown(image.c_str(), kTestUid, kTestGid), 0);
  }
  struct RemoveImages {
    std::vector<std::string> paths;
    ~RemoveImages() {
      for (const auto& p : paths) unlink(p.c_str());
    }
  } remove_images{{kernel, rootfs}};
  ProbeSpec spec = jailed_spec("jailed");
  spec.json["kernel"] = kernel;
  spec.json["rootfs"] = rootfs;
  const std::string rw = path_dirname_of(spec.api_socket);
  auto& args = spec.json["vmm"].as_object()["args"].as_array();
  std::vector<std::string> checked = host_only_paths(other);
  checked.insert(checked.end(), {"/lib64", "/usr/lib/os-release"});
  for (const std::string& p : checked) {
    args.emplace_back("--check-path");
    args.emplace_back(p);
  }
  for (const std::string& d : {std::string("/"), std::string("/usr"), std::string("."), rw,
                               env().images(), std::string("/dev")}) {
    args.emplace_back("--try-write");
    args.emplace_back(d);
  }
  for (const std::string& f : {kernel, rootfs}) {
    args.emplace_back("--open-write");
    args.emplace_back(f);
    args.emplace_back("--read-file");
    args.emplace_back(f);
  }
  args.emplace_back("--try-connect");
  args.emplace_back(other.api_socket);
  Running r = launch(spec);
  const json::object& rep = r.report;
  SCOPED_TRACE(json::serialize(rep));

  // The mount table: the root, the sandbox dir, each image, /usr, the read-write dir, the
  // five /dev nodes and /proc. Nothing else.
  const std::set<std::string> expected_mounts = {
      "/",         spec.sandbox_dir, kernel,        rootfs,         "/usr",      rw,
      "/dev/full", "/dev/null",      "/dev/random", "/dev/urandom", "/dev/zero", "/proc"};
  EXPECT_EQ(rep.at("mount_points").as_array().size(), expected_mounts.size());
  EXPECT_EQ(string_set(rep, "mount_points"), expected_mounts);
  EXPECT_EQ(string_set(rep, "dev_entries"),
            (std::set<std::string>{"full", "null", "random", "urandom", "zero"}));
  // /proc holds the namespace: its init (1) and the VMM (2).
  EXPECT_EQ(string_set(rep, "proc_pids"), (std::set<std::string>{"1", "2"}));
  EXPECT_EQ(json_int(rep, "pid"), 2);

  // Each is there on the host (so its absence is the jail's doing; the control below finds
  // them all from an unjailed VMM), not in the jail.
  for (const std::string& absent : host_only_paths(other)) {
    EXPECT_TRUE(path_exists(absent)) << absent << " is not on the host";
    EXPECT_EQ(errno_at(rep, "check_paths", absent), ENOENT) << absent;
  }
  EXPECT_EQ(errno_at(rep, "try_connect", other.api_socket), ENOENT);
  // The dynamic loader's path exists through the recreated merged-/usr link.
  EXPECT_EQ(errno_at(rep, "check_paths", "/lib64"), 0);
  EXPECT_EQ(errno_at(rep, "check_paths", "/usr/lib/os-release"), 0);

  // Writable: the sandbox dir and the read-write dir only.
  EXPECT_EQ(errno_at(rep, "try_write", "."), 0);
  EXPECT_EQ(errno_at(rep, "try_write", rw), 0);
  EXPECT_EQ(errno_at(rep, "try_write", "/"), EROFS);
  EXPECT_EQ(errno_at(rep, "try_write", "/usr"), EROFS);
  EXPECT_EQ(errno_at(rep, "try_write", "/dev"), EROFS);
  EXPECT_EQ(errno_at(rep, "try_write", env().images()), EROFS);
  // The images are readable; the kernel is read-only, the rootfs read-write.
  EXPECT_EQ(errno_at(rep, "read_files", kernel), 0);
  EXPECT_EQ(errno_at(rep, "read_files", rootfs), 0);
  EXPECT_EQ(errno_at(rep, "open_write", kernel), EROFS);
  EXPECT_EQ(errno_at(rep, "open_write", rootfs), 0);
  // cwd is the sandbox dir with its links, at its host path.
  EXPECT_EQ(json_str(rep, "cwd"), spec.sandbox_dir);
  EXPECT_EQ(json_str(rep.at("links").as_object(), "vmlinux"), kernel);

  // The host sees the socket the jailed VMM made, at the spec's path; the sandbox dir is the
  // jail's alone: nothing was made at its path on the host.
  struct stat st;
  EXPECT_NE(lstat(spec.sandbox_dir.c_str(), &st), 0);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_EQ(lstat(spec.api_socket.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(json_int(r.started, "landlock_abi"), layer_landlock_abi());

  r.run->terminate();
  EXPECT_EQ(r.run->finish(), 0) << r.run->stderr_text();
  sibling.run->terminate();
  sibling.run->finish();
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
  EXPECT_EQ(host_mounts(), mounts);
}

// Control: the same checks from an unjailed VMM (the default PID namespace, no `files`) find
// every one of the host's paths the jailed VMM does not, and connect to the other sandbox's
// socket.
TEST_F(JailTest, ControlUnjailedTheSameChecksReachTheHost) {
  ProbeSpec other = probe_spec("unjailed-other");
  Running sibling = launch(other);
  std::vector<std::string> flags = {"--try-connect", other.api_socket, "--try-write", env().work()};
  for (const std::string& p : host_only_paths(other))
    flags.insert(flags.end(), {"--check-path", p});
  ProbeSpec spec = probe_spec("unjailed-control", flags);
  spec.json.erase("pid_namespace");
  Running r = launch(spec);
  SCOPED_TRACE(json::serialize(r.report));
  for (const std::string& p : host_only_paths(other)) {
    EXPECT_EQ(errno_at(r.report, "check_paths", p), 0) << p;
  }
  EXPECT_EQ(errno_at(r.report, "try_connect", other.api_socket), 0);
  EXPECT_EQ(errno_at(r.report, "try_write", env().work()), 0);
  EXPECT_GT(r.report.at("mount_points").as_array().size(), 12u) << "the host's mounts are there";
  r.run->terminate();
  r.run->finish();
  sibling.run->terminate();
  sibling.run->finish();
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
}

// A VMM that leaves SIGTERM at its default: the stop ladder's SIGTERM reaches it through the
// namespace init and ends it, outcome signaled 15 well within the budget.
TEST_F(JailTest, DefaultSigtermIsHonouredUnderTheInit) {
  ProbeSpec spec = jailed_spec("jail-sigterm", {"--sigterm-default"});
  Running r = launch(spec);
  EXPECT_EQ(json_str(r.report, "sigterm_disposition"), "default");
  const auto sent = std::chrono::steady_clock::now();
  r.run->terminate();
  json::object stopping = r.run->expect_event("stopping");
  json::object exited = r.run->expect_event("exited");
  const int code = r.run->finish();
  const auto took = std::chrono::steady_clock::now() - sent;
  EXPECT_EQ(json_str(stopping, "step"), "sigterm");
  EXPECT_EQ(json_str(exited, "outcome"), "signaled") << json::serialize(exited);
  EXPECT_EQ(json_int(exited, "signal"), SIGTERM);
  EXPECT_EQ(code, 128 + SIGTERM);
  EXPECT_LT(took, milliseconds(patience_ms(5000)));
  EXPECT_EQ(r.run->count("stopping"), 1) << "no SIGKILL step";
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
}

// Exit codes are the VMM's own, as without a jail or a namespace.
TEST_F(JailTest, ExitCodeIsTheVmmsOwn) {
  ProbeSpec spec = jailed_spec("jail-code", {"--exit-code", "7"});
  Running r = launch(spec);
  r.run->terminate();
  r.run->expect_event("stopping");
  json::object exited = r.run->expect_event("exited");
  EXPECT_EQ(r.run->finish(), 7);
  EXPECT_EQ(json_str(exited, "outcome"), "exited") << json::serialize(exited);
  EXPECT_EQ(json_int(exited, "code"), 7);
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
}

// Children that ignore SIGTERM and leave the session, the supervisor SIGKILLed: the init dies
// of its parent-death signal and takes the namespace along.
TEST_F(JailTest, NothingOutlivesAKilledSupervisor) {
  ProbeSpec spec =
      jailed_spec("jail-killed", {"--ignore-sigterm", "--setsid-child", "--children", "2"});
  Running r = launch(spec);
  std::vector<pid_t> inside = live_test_user_processes_except(r.run->pid());
  EXPECT_EQ(inside.size(), 5u) << "the init, the VMM, two children and a setsid child: "
                               << ::testing::PrintToString(inside);
  ASSERT_EQ(kill(r.run->pid(), SIGKILL), 0);
  EXPECT_EQ(r.run->reap(), -SIGKILL);
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes())
      << "left: " << ::testing::PrintToString(HelperEnv::test_user_processes());
  for (pid_t pid : inside) EXPECT_FALSE(process_exists(pid)) << "pid " << pid << " survived";
}

TEST_F(JailTest, RequiredRefusesARequestWithoutAJail) {
  PolicySpec policy = env().default_policy();
  policy.extra_lines = {"read_only = /usr", "jail = required"};
  ScopedPolicy scoped(env(), policy);
  expect_setup_failed(probe_spec("jail-required"), "validate_request", EPERM);
}

TEST_F(JailTest, OffRefusesARequestWithAJail) {
  PolicySpec policy = env().default_policy();
  policy.extra_lines = {"read_only = /usr", "jail = off"};
  ScopedPolicy scoped(env(), policy);
  expect_setup_failed(jailed_spec("jail-off"), "validate_request", EPERM);
}

// The API socket in a shared directory (the work dir, not a per-sandbox one) is refused.
TEST_F(JailTest, SharedApiSocketDirectoryIsRefused) {
  ProbeSpec spec = jailed_spec("jail-shared-sock");
  spec.api_socket = env().work() + "/jail-shared.sock";
  spec.json["api_socket"] = spec.api_socket;
  expect_setup_failed(spec, "validate_request", EPERM);
}

// Nested entries would need a mountpoint on a host filesystem: refused.
TEST_F(JailTest, NestedEntriesAreRefused) {
  ProbeSpec spec = jailed_spec("jail-nested");
  spec.json["files"].as_object()["read_only"] = json::array{"/usr", "/usr/lib"};
  expect_setup_failed(spec, "build_jail", EINVAL);
}

// A jail's /proc is its PID namespace's: a jail without one is refused.
TEST_F(JailTest, AJailWithoutAPidNamespaceIsRefused) {
  ProbeSpec spec = jailed_spec("jail-nopidns");
  spec.json["pid_namespace"] = false;
  expect_setup_failed(spec, "validate_request", EINVAL);
}

// A dynamically linked VMM jailed without its loader (no read_only /usr): the exec fails in the
// namespace, and the supervisor reports it as without one: exec_vmm, ENOENT, exit 127.
TEST_F(JailTest, AVmmWithoutItsLoaderFailsAtExecWith127) {
  ProbeSpec spec = jailed_spec("jail-noloader");
  spec.json["files"].as_object()["read_only"] = json::array{};
  const std::string mounts = host_mounts();
  auto run = start_run(write_spec(spec.json));
  json::object exited = run->expect_event("exited");
  EXPECT_EQ(run->finish(), 127) << run->stderr_text();
  EXPECT_EQ(json_str(exited, "outcome"), "setup_failed") << json::serialize(exited);
  EXPECT_EQ(json_str(exited, "step"), "exec_vmm");
  EXPECT_EQ(json_int(exited, "errno"), ENOENT);
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
  EXPECT_EQ(host_mounts(), mounts);
}

// A `read_only` entry with a mount below it on the host: the jail shows the mount, as the host
// does, not the directory it covers, and read-only like the entry. The control binds the same
// entry non-recursively, as root in a namespace of its own: the covered file is there.
TEST_F(JailTest, AMountBelowAReadOnlyEntryIsThereReadOnlyAndWhatItCoversIsNot) {
  const std::string tree = env().dir() + "/ro-tree";
  std::filesystem::create_directories(tree + "/covered");
  chmod(tree.c_str(), 0755);
  chmod((tree + "/covered").c_str(), 0755);
  std::ofstream(tree + "/covered/hidden-under") << "covered by the mount\n";
  ASSERT_EQ(mount("tmpfs", (tree + "/covered").c_str(), "tmpfs", 0, "size=64k,mode=0777"), 0)
      << strerror(errno);
  struct Unmount {
    std::string path;
    ~Unmount() { umount2(path.c_str(), MNT_DETACH); }
  } unmount{tree + "/covered"};
  std::ofstream(tree + "/covered/on-top") << "the mount\n";
  struct statvfs vfs;
  ASSERT_EQ(statvfs((tree + "/covered").c_str(), &vfs), 0);
  ASSERT_EQ(vfs.f_flag & ST_RDONLY, 0u) << "the host's mount is writable";
  const std::string mounts = host_mounts();

  PolicySpec policy = env().default_policy();
  policy.extra_lines = {"read_only = /usr", "read_only = " + tree};
  ScopedPolicy scoped(env(), policy);
  ProbeSpec spec = jailed_spec("jail-covered",
                               {"--check-path", tree + "/covered/on-top", "--check-path",
                                tree + "/covered/hidden-under", "--try-write", tree + "/covered"});
  spec.json["files"].as_object()["read_only"].as_array().emplace_back(tree);
  Running r = launch(spec);
  SCOPED_TRACE(json::serialize(r.report));
  EXPECT_EQ(errno_at(r.report, "check_paths", tree + "/covered/on-top"), 0);
  EXPECT_EQ(errno_at(r.report, "check_paths", tree + "/covered/hidden-under"), ENOENT);
  EXPECT_EQ(errno_at(r.report, "try_write", tree + "/covered"), EROFS);
  r.run->terminate();
  EXPECT_EQ(r.run->finish(), 0);
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
  EXPECT_EQ(host_mounts(), mounts);

  // Control: a non-recursive bind of the same entry, as root in a namespace of its own, shows
  // the covered file and not the mount.
  std::string out;
  EXPECT_EQ(run_command({"/usr/bin/unshare", "-m", "--propagation", "private", "/bin/sh", "-c",
                         "mount --bind \"$0\" /mnt && ls /mnt/covered", tree},
                        &out),
            0)
      << out;
  EXPECT_NE(out.find("hidden-under"), std::string::npos) << out;
  EXPECT_EQ(out.find("on-top"), std::string::npos) << out;
}

// A cgroup2 and an mqueue mount below a `read_only` entry: the recursive bind would take them
// into the jail; the helper detaches them first. The VMM finds neither, and no cgroup or
// mqueue mount at all; the host (the control) has both, with their files.
TEST_F(JailTest, CgroupAndMqueueMountsBelowAnEntryAreNotInTheJail) {
  const std::string tree = env().dir() + "/ro-mounts";
  std::filesystem::create_directories(tree + "/cg");
  std::filesystem::create_directories(tree + "/mq");
  chmod(tree.c_str(), 0755);
  ASSERT_EQ(mount("cgroup2", (tree + "/cg").c_str(), "cgroup2", 0, nullptr), 0) << strerror(errno);
  struct Unmount {
    std::vector<std::string> paths;
    ~Unmount() {
      for (const auto& p : paths) umount2(p.c_str(), MNT_DETACH);
    }
  } unmount{{tree + "/cg"}};
  ASSERT_EQ(mount("mqueue", (tree + "/mq").c_str(), "mqueue", 0, nullptr), 0) << strerror(errno);
  unmount.paths.push_back(tree + "/mq");
  struct stat st;
  ASSERT_EQ(stat((tree + "/cg/cgroup.procs").c_str(), &st), 0) << "the control: the host has it";
  const std::string mounts = host_mounts();

  PolicySpec policy = env().default_policy();
  policy.extra_lines = {"read_only = /usr", "read_only = " + tree};
  ScopedPolicy scoped(env(), policy);
  ProbeSpec spec = jailed_spec(
      "jail-cgroupfs", {"--check-path", tree + "/cg/cgroup.procs", "--check-path", tree + "/cg"});
  spec.json["files"].as_object()["read_only"].as_array().emplace_back(tree);
  Running r = launch(spec);
  SCOPED_TRACE(json::serialize(r.report));
  EXPECT_EQ(errno_at(r.report, "check_paths", tree + "/cg/cgroup.procs"), ENOENT);
  EXPECT_EQ(errno_at(r.report, "check_paths", tree + "/cg"), 0);  // the empty directory under it
  for (const auto& type : r.report.at("mount_types").as_array()) {
    EXPECT_NE(type, "cgroup2");
    EXPECT_NE(type, "cgroup");
    EXPECT_NE(type, "mqueue");
  }
  r.run->terminate();
  EXPECT_EQ(r.run->finish(), 0);
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
  EXPECT_EQ(host_mounts(), mounts);
}

// Nothing written can be executed in a jail: not by exec (the filter), not through the loader,
// not from a memfd; and mapping it for execution fails in the read_write dir as in the
// sandbox dir (both noexec). Without a jail the read_write dir lets it map
// (ContainmentTest.FilesConfine...).
TEST_F(JailTest, WrittenFilesAndMemfdsNeitherRunNorMapForExecution) {
  ProbeSpec spec = jailed_spec("jail-exec", {"--exec-memfd", "--exec-written", "."});
  const std::string rw = path_dirname_of(spec.api_socket);
  auto& args = spec.json["vmm"].as_object()["args"].as_array();
  args.emplace_back("--exec-written");
  args.emplace_back(rw);
  Running r = launch(spec);
  SCOPED_TRACE(json::serialize(r.report));
  expect_no_exec(r.report, {".", rw});
  const json::object& written = r.report.at("exec_written").as_object();
  EXPECT_EQ(json_int(written.at(".").as_object(), "mmap_exec"), EPERM);
  EXPECT_EQ(json_int(written.at(rw).as_object(), "mmap_exec"), EPERM);
  r.run->terminate();
  EXPECT_EQ(r.run->finish(), 0);
}

// A basic node named in files.devices is the one every jail has: the launch goes ahead.
TEST_F(JailTest, ABasicNodeAmongTheDevicesIsTheJailsOwn) {
  PolicySpec policy = env().default_policy();
  policy.extra_lines = {"read_only = /usr", "device = /dev/null"};
  ScopedPolicy scoped(env(), policy);
  ProbeSpec spec = jailed_spec("jail-devnull");
  spec.json["files"].as_object()["devices"] = json::array{"/dev/null"};
  Running r = launch(spec);
  EXPECT_EQ(string_set(r.report, "dev_entries"),
            (std::set<std::string>{"full", "null", "random", "urandom", "zero"}));
  r.run->terminate();
  EXPECT_EQ(r.run->finish(), 0);
}

}  // namespace
}  // namespace sbx::it
