// SPDX-License-Identifier: Apache-2.0
// The request's `files` refused at validate_request, each with its errno, leaving the host as
// it was (mount table, sandbox root listing, no process of the test user): devices not in the
// policy, outside /dev, reached through a symlink or `..`, or not character devices (a block
// device, a FIFO, a directory); read_only paths not in the policy, not root-owned,
// group-writable or through a symlink; read_write entries and the API socket's directory that
// are outside the sandbox roots, a root itself, not the caller's, a symlink, `..`, or a file.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "tests/integration/helper_env.h"

namespace sbx::it {
namespace {

namespace json = boost::json;
namespace fs = std::filesystem;

class FilesRefusalsTest : public HelperEnvTest {
 protected:
  // A request for the probe with `files` and its report where a files launch can write it.
  LaunchArgs files_args(const std::string& tag) {
    LaunchArgs args = env().probe_args(tag);
    args.files = true;
    return args;
  }

  // Made for one test and removed after it, whatever happens.
  std::string made(const std::string& path) {
    made_.push_back(path);
    return path;
  }
  std::string caller_dir(const std::string& name, uid_t uid = kTestUid, mode_t mode = 0700) {
    const std::string dir = made(env().sandboxes() + "/" + name);
    if (mkdir(dir.c_str(), mode) != 0 || chown(dir.c_str(), uid, kTestGid) != 0 ||
        chmod(dir.c_str(), mode) != 0) {
      throw std::runtime_error("make " + dir + ": " + std::strerror(errno));
    }
    return dir;
  }
  // A node in /dev (the test runs as root): removed after the test.
  std::string dev_node(const std::string& stem, mode_t type, dev_t dev) {
    const std::string path = made("/dev/sbx-it-" + stem + "-" + std::to_string(getpid()));
    if (mknod(path.c_str(), type | 0666, dev) != 0) {
      throw std::runtime_error("mknod " + path + ": " + std::strerror(errno));
    }
    return path;
  }

  void TearDown() override {
    std::error_code ec;
    for (auto it = made_.rbegin(); it != made_.rend(); ++it) fs::remove_all(*it, ec);
    made_.clear();
    HelperEnvTest::TearDown();
  }

  // Refused at validate_request with `err`, and by the rule `why` names (several rules share
  // an errno: the detail tells which one refused).
  void refused_with_policy(const std::vector<std::string>& policy_lines, const LaunchArgs& args,
                           int err, const std::string& why = "files.") {
    PolicySpec policy = env().default_policy();
    policy.extra_lines = policy_lines;
    ScopedPolicy scoped(env(), policy);
    json::object e = expect_refused(args, "validate_request", err);
    EXPECT_NE(json_str(e, "detail").find(why), std::string::npos) << json::serialize(e);
  }

 private:
  std::vector<std::string> made_;
};

// --- devices ---

TEST_F(FilesRefusalsTest, DeviceNotInThePolicy) {
  auto args = files_args("dev-policy");
  args.devices = {"/dev/ptmx"};
  refused_with_policy({}, args, EPERM, "is not a device the policy allows");
}

TEST_F(FilesRefusalsTest, DeviceOutsideDev) {
  auto args = files_args("dev-outside");
  args.devices = {env().images() + "/vmlinux"};
  refused_with_policy({}, args, EPERM, "is not under /dev");
}

TEST_F(FilesRefusalsTest, DeviceWithDotDot) {
  auto args = files_args("dev-dotdot");
  args.devices = {"/dev/../etc/shadow"};
  refused_with_policy({"device = /dev/ptmx"}, args, EINVAL);
}

TEST_F(FilesRefusalsTest, DeviceThroughASymlink) {
  const std::string link = made("/dev/sbx-it-link-" + std::to_string(getpid()));
  ASSERT_EQ(symlink("ptmx", link.c_str()), 0) << std::strerror(errno);
  auto args = files_args("dev-symlink");
  args.devices = {link};
  refused_with_policy({"device = " + link}, args, ELOOP);
}

TEST_F(FilesRefusalsTest, BlockDeviceNamedAsADevice) {
  const std::string blk = dev_node("blk", S_IFBLK, makedev(7, 0));
  auto args = files_args("dev-block");
  args.devices = {blk};
  refused_with_policy({"device = " + blk}, args, ENODEV);
}

TEST_F(FilesRefusalsTest, FifoNamedAsADevice) {
  const std::string fifo = dev_node("fifo", S_IFIFO, 0);
  auto args = files_args("dev-fifo");
  args.devices = {fifo};
  refused_with_policy({"device = " + fifo}, args, ENODEV);
}

TEST_F(FilesRefusalsTest, DirectoryNamedAsADevice) {
  auto args = files_args("dev-dir");
  args.devices = {"/dev/shm"};
  refused_with_policy({"device = /dev/shm"}, args, ENODEV);
}

// --- read_only ---

TEST_F(FilesRefusalsTest, ReadOnlyNotInThePolicy) {
  auto args = files_args("ro-policy");
  args.read_only = {"/usr"};
  refused_with_policy({}, args, EPERM);
}

TEST_F(FilesRefusalsTest, ReadOnlyNotRootOwned) {
  auto args = files_args("ro-owner");
  args.read_only = {env().work()};
  refused_with_policy({"read_only = " + env().work()}, args, EPERM);
}

TEST_F(FilesRefusalsTest, ReadOnlyGroupWritable) {
  const std::string dir = made(env().dir() + "/ro-group-writable");
  ASSERT_EQ(mkdir(dir.c_str(), 0775), 0);
  ASSERT_EQ(chmod(dir.c_str(), 0775), 0);
  auto args = files_args("ro-gw");
  args.read_only = {dir};
  refused_with_policy({"read_only = " + dir}, args, EPERM);
}

TEST_F(FilesRefusalsTest, ReadOnlyThroughASymlink) {
  const std::string link = made(env().dir() + "/ro-link");
  ASSERT_EQ(symlink("/usr", link.c_str()), 0);
  auto args = files_args("ro-symlink");
  args.read_only = {link + "/lib"};
  refused_with_policy({"read_only = " + link}, args, ELOOP);
}

// --- read_write and the API socket's directory ---

TEST_F(FilesRefusalsTest, ReadWriteOutsideTheSandboxRoots) {
  auto args = files_args("rw-outside");
  args.read_write = {env().work()};
  refused_with_policy({}, args, EPERM, "is not a direct child of any sandbox_root");
}

TEST_F(FilesRefusalsTest, ReadWriteIsASandboxRoot) {
  auto args = files_args("rw-root");
  args.read_write = {env().sandboxes()};
  refused_with_policy({}, args, EPERM, "is a sandbox root itself");
}

TEST_F(FilesRefusalsTest, ReadWriteNotOwnedByTheCaller) {
  const std::string dir = caller_dir("rw-root-owned", 0, 0755);
  auto args = files_args("rw-owner");
  args.read_write = {dir};
  refused_with_policy({}, args, EPERM, "is not owned by the caller");
}

TEST_F(FilesRefusalsTest, ReadWriteThatIsASymlink) {
  const std::string target = caller_dir("rw-target");
  const std::string link = made(env().sandboxes() + "/rw-link");
  ASSERT_EQ(symlink(target.c_str(), link.c_str()), 0);
  auto args = files_args("rw-symlink");
  args.read_write = {link};
  refused_with_policy({}, args, ELOOP);
}

TEST_F(FilesRefusalsTest, ReadWriteWithDotDot) {
  const std::string dir = caller_dir("rw-dotdot");
  auto args = files_args("rw-dotdot");
  args.read_write = {dir + "/.."};
  refused_with_policy({}, args, EINVAL);
}

TEST_F(FilesRefusalsTest, ReadWriteThatIsAFile) {
  const std::string file = made(env().sandboxes() + "/rw-file");
  {
    int fd = open(file.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    close(fd);
  }
  ASSERT_EQ(chown(file.c_str(), kTestUid, kTestGid), 0);
  auto args = files_args("rw-file");
  args.read_write = {file};
  refused_with_policy({}, args, ENOTDIR);
}

TEST_F(FilesRefusalsTest, ApiSocketDirShared) {
  auto args = files_args("sock-shared");
  args.api_socket_dir = env().work();
  PolicySpec policy = env().default_policy();
  ScopedPolicy scoped(env(), policy);
  json::object e = expect_refused(args, "validate_request", EPERM);
  EXPECT_NE(json_str(e, "detail").find("the API socket's directory"), std::string::npos)
      << json::serialize(e);
  EXPECT_NE(json_str(e, "detail").find("is not a direct child of any sandbox_root"),
            std::string::npos)
      << json::serialize(e);
}

TEST_F(FilesRefusalsTest, ApiSocketDirIsASandboxRoot) {
  auto args = files_args("sock-root");
  args.api_socket_dir = env().sandboxes();
  json::object e = expect_refused(args, "validate_request", EPERM);
  EXPECT_NE(json_str(e, "detail").find("is a sandbox root itself"), std::string::npos)
      << json::serialize(e);
}

// --- images: a FIFO or a socket named as the kernel ---

TEST_F(FilesRefusalsTest, FifoNamedAsAnImage) {
  const std::string fifo = made(env().images() + "/fifo-image");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0644), 0);
  auto args = files_args("img-fifo");
  args.jail = true;
  args.pid_namespace = true;  // a jail needs one
  for (auto& link : args.links) {
    if (link.first == "vmlinux") link.second = fifo;
  }
  json::object e = expect_refused(args, "validate_request", EINVAL);
  EXPECT_NE(json_str(e, "detail").find("not a file"), std::string::npos) << json::serialize(e);
}

TEST_F(FilesRefusalsTest, SocketNamedAsAnImage) {
  const std::string sock = made(env().images() + "/socket-image");
  UniqueFd s(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(s);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, sock.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  auto args = files_args("img-socket");
  args.jail = true;
  args.pid_namespace = true;  // a jail needs one
  for (auto& link : args.links) {
    if (link.first == "rootfs.ext4") link.second = sock;
  }
  json::object e = expect_refused(args, "validate_request", EINVAL);
  EXPECT_NE(json_str(e, "detail").find("not a file"), std::string::npos) << json::serialize(e);
}

// `landlock = required` on this kernel: refused where its Landlock ABI is below 6 (Debian 12's
// 6.1 has 2), naming both ABIs, before anything is made; accepted at 6 or above (the next test
// is that launch).
TEST_F(FilesRefusalsTest, LandlockRequiredRefusesAKernelBelowAbi6NamingBoth) {
  PolicySpec policy = env().default_policy();
  policy.extra_lines = {"landlock = required"};
  ScopedPolicy scoped(env(), policy);
  auto args = env().probe_args("ll-required");
  if (kernel_landlock_abi() >= 6) {
    Launch l = env().launch(args);
    ASSERT_TRUE(l.ok()) << json::serialize(l.line);
    EXPECT_EQ(json_int(l.line, "landlock_abi"), 6);
    env().wait_for_report(env().report_path(args));
    env().stop(l);
    EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
    return;
  }
  json::object e = expect_refused(args, "landlock", EOPNOTSUPP);
  EXPECT_NE(json_str(e, "detail")
                .find("the kernel's Landlock ABI is " + std::to_string(kernel_landlock_abi()) +
                      " (6 is needed)"),
            std::string::npos)
      << json::serialize(e);
}

// The accepted case, for contrast: every kind of entry at once, and the layer reported.
TEST_F(FilesRefusalsTest, EveryKindOfEntryAccepted) {
  PolicySpec policy = env().default_policy();
  policy.extra_lines = {
      "device = /dev/ptmx", "read_only = /usr",
      kernel_landlock_abi() >= 6 ? "landlock = required" : "landlock = best_effort"};
  ScopedPolicy scoped(env(), policy);
  const std::string rw = caller_dir("rw-accepted");
  auto args = files_args("accepted");
  args.devices = {"/dev/ptmx"};
  args.read_only = {"/usr"};
  args.read_write = {rw};
  args.api_socket_dir = rw;
  args.vmm_args = {"--report", rw + "/report.json", "--api-sock", rw + "/api.sock"};
  Launch l = env().launch(args);
  ASSERT_TRUE(l.ok()) << json::serialize(l.line);
  EXPECT_EQ(json_int(l.line, "landlock_abi"), layer_landlock_abi());
  json::object report = env().wait_for_report(rw + "/report.json");
  EXPECT_EQ(json_str(report, "exe"), env().probe());
  env().stop(l);
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
  rmdir(args.sandbox_dir.c_str());
}

}  // namespace
}  // namespace sbx::it
