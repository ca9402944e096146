// SPDX-License-Identifier: Apache-2.0
// What sbx-nsexec refuses (issue 3, "helper/": Refused, with an ERROR naming the step, and
// nothing changed on the host): one test per refusal, each driven as the unprivileged test
// user, asserting the step (and errno), the helper's exit code, an unchanged host mount table
// and sandbox root, and no process of the test user left behind.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/protocol.h"
#include "tests/integration/helper_env.h"

namespace sbx::it {
namespace {

namespace json = boost::json;

class HelperRefusalsTest : public HelperEnvTest {
 protected:
  // A request for the probe that would be accepted as it is.
  LaunchArgs good_args(const std::string& tag) { return env().probe_args(tag); }

  void set_link(LaunchArgs* args, const std::string& name, const std::string& target) {
    for (auto& link : args->links) {
      if (link.first == name) link.second = target;
    }
  }

  // The bytes of a valid LAUNCH for the probe, to corrupt.
  std::vector<uint8_t> valid_message() {
    auto bytes = protocol::encode(make_request(good_args("raw")));
    if (!bytes.ok()) throw std::runtime_error("encode: " + bytes.status().message());
    return bytes.take();
  }

  LaunchArgs raw_args(const std::vector<uint8_t>& bytes) {
    LaunchArgs args;
    args.raw_file = env().make_work_file(
        "raw-" + std::to_string(++raw_count_) + ".bin",
        std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
    return args;
  }

 private:
  int raw_count_ = 0;
};

// Sandbox dir outside the sandbox roots.
TEST_F(HelperRefusalsTest, SandboxDirOutsideTheSandboxRoots) {
  auto args = good_args("outside");
  args.sandbox_dir = env().work() + "/" + args.id;
  expect_refused(args, "validate_request", EPERM);
  EXPECT_FALSE(std::filesystem::exists(args.sandbox_dir));
}

// Sandbox dir equal to a root.
TEST_F(HelperRefusalsTest, SandboxDirEqualToARoot) {
  auto args = good_args("root");
  args.sandbox_dir = env().sandboxes();
  expect_refused(args, "validate_request", EPERM);
}

// Sandbox dir with `..`.
TEST_F(HelperRefusalsTest, SandboxDirWithDotDot) {
  auto args = good_args("dotdot");
  args.sandbox_dir = env().sandboxes() + "/../sandboxes/" + args.id;
  expect_refused(args, "validate_request", EINVAL);
}

// Sandbox dir with a symlink in it: the sandbox dir itself is a symlink (to a dir the caller
// owns, so only the symlink check can refuse it).
TEST_F(HelperRefusalsTest, SandboxDirThatIsASymlink) {
  const std::string link = env().sandboxes() + "/linked";
  ASSERT_EQ(symlink(env().work().c_str(), link.c_str()), 0);
  auto args = good_args("linked");
  args.sandbox_dir = link;
  expect_refused(args, "make_sandbox_dir", ELOOP);
}

// Sandbox dir with a symlink in it: a parent component (the policy's sandbox root goes through
// a symlink to the real root).
TEST_F(HelperRefusalsTest, SandboxDirWithASymlinkInAParent) {
  const std::string link_root = env().fresh_path("sandboxes-link");
  ASSERT_EQ(symlink(env().sandboxes().c_str(), link_root.c_str()), 0);
  PolicySpec policy = env().default_policy();
  policy.sandbox_roots = {link_root};
  ScopedPolicy scoped(env(), policy);
  auto args = good_args("parentlink");
  args.sandbox_dir = link_root + "/" + args.id;
  expect_refused(args, "make_sandbox_dir", ELOOP);
}

// Kernel outside the image roots.
TEST_F(HelperRefusalsTest, KernelOutsideTheImageRoots) {
  auto args = good_args("kernel-outside");
  set_link(&args, "vmlinux", "/etc/passwd");
  expect_refused(args, "validate_request", EPERM);
}

// Rootfs outside the image roots.
TEST_F(HelperRefusalsTest, RootfsOutsideTheImageRoots) {
  auto args = good_args("rootfs-outside");
  set_link(&args, "rootfs.ext4", "/etc/hostname");
  expect_refused(args, "validate_request", EPERM);
}

// Kernel resolved without following a symlink: a symlink inside the image root pointing out.
TEST_F(HelperRefusalsTest, KernelThroughASymlinkInTheImageRoot) {
  auto args = good_args("kernel-evil");
  set_link(&args, "vmlinux", env().images() + "/evil-link");
  expect_refused(args, "validate_request", ELOOP);
}

// Kernel resolved without following a symlink: a symlinked directory inside the image root.
TEST_F(HelperRefusalsTest, KernelThroughASymlinkedDirectory) {
  auto args = good_args("kernel-linkdir");
  set_link(&args, "vmlinux", env().images() + "/linkdir/snap.bin");
  expect_refused(args, "validate_request", ELOOP);
}

// Kernel path with `..`.
TEST_F(HelperRefusalsTest, KernelWithDotDot) {
  auto args = good_args("kernel-dotdot");
  set_link(&args, "vmlinux", env().images() + "/sub/../vmlinux");
  expect_refused(args, "validate_request", EINVAL);
}

// Netns name not allowed by the policy's globs.
TEST_F(HelperRefusalsTest, NetnsNotAllowedByThePolicy) {
  auto args = good_args("netns-denied");
  args.netns = "other-" + std::to_string(getpid());
  expect_refused(args, "validate_request", EPERM);
}

// Netns name containing '/'.
TEST_F(HelperRefusalsTest, NetnsNameWithASlash) {
  auto args = good_args("netns-slash");
  args.netns = "sbx-it-a/b";
  expect_refused(args, "validate_request", EINVAL);
}

// Netns allowed by the glob but not an nsfs file.
TEST_F(HelperRefusalsTest, NetnsThatIsNotANamespaceFile) {
  const std::string name = "sbx-it-fake-" + std::to_string(getpid());
  const std::string path = "/run/netns/" + name;
  struct Unlink {
    std::string path;
    ~Unlink() { unlink(path.c_str()); }
  } remove_after{path};
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << path << ": " << std::strerror(errno);
  ASSERT_EQ(fchmod(fd, 0644), 0);
  close(fd);
  auto args = good_args("netns-fake");
  args.netns = name;
  expect_refused(args, "join_netns", EINVAL);
}

// Netns allowed by the glob but missing.
TEST_F(HelperRefusalsTest, NetnsThatDoesNotExist) {
  auto args = good_args("netns-missing");
  args.netns = "sbx-it-missing-" + std::to_string(getpid());
  expect_refused(args, "join_netns", ENOENT);
}

// VMM not allowlisted.
TEST_F(HelperRefusalsTest, VmmNotAllowlisted) {
  auto args = good_args("vmm-denied");
  args.vmm = "/usr/bin/id";
  expect_refused(args, "validate_request", EPERM);
}

// VMM allowlisted but not root-owned.
TEST_F(HelperRefusalsTest, VmmNotRootOwned) {
  const std::string vmm = env().install_vmm_copy("probe-user-owned", kTestUid, 0755);
  PolicySpec policy = env().default_policy();
  policy.vmms.push_back(vmm);
  ScopedPolicy scoped(env(), policy);
  auto args = good_args("vmm-user");
  args.vmm = vmm;
  expect_refused(args, "open_vmm", EPERM);
}

// VMM allowlisted but writable by group.
TEST_F(HelperRefusalsTest, VmmWritableByGroup) {
  const std::string vmm = env().install_vmm_copy("probe-group-writable", 0, 0775);
  PolicySpec policy = env().default_policy();
  policy.vmms.push_back(vmm);
  ScopedPolicy scoped(env(), policy);
  auto args = good_args("vmm-gw");
  args.vmm = vmm;
  expect_refused(args, "open_vmm", EPERM);
}

// VMM allowlisted but writable by other.
TEST_F(HelperRefusalsTest, VmmWritableByOther) {
  const std::string vmm = env().install_vmm_copy("probe-other-writable", 0, 0757);
  PolicySpec policy = env().default_policy();
  policy.vmms.push_back(vmm);
  ScopedPolicy scoped(env(), policy);
  auto args = good_args("vmm-ow");
  args.vmm = vmm;
  expect_refused(args, "open_vmm", EPERM);
}

// VMM allowlisted but missing: exit code 127, as a shell would.
TEST_F(HelperRefusalsTest, VmmMissing) {
  PolicySpec policy = env().default_policy();
  const std::string vmm = env().dir() + "/bin/probe-missing";
  policy.vmms.push_back(vmm);
  ScopedPolicy scoped(env(), policy);
  auto args = good_args("vmm-missing");
  args.vmm = vmm;
  expect_refused(args, "open_vmm", ENOENT, 127);
}

// VMM allowlisted but not executable: exit code 126, as a shell would.
TEST_F(HelperRefusalsTest, VmmNotExecutable) {
  const std::string vmm = env().install_vmm_copy("probe-noexec", 0, 0644);
  PolicySpec policy = env().default_policy();
  policy.vmms.push_back(vmm);
  ScopedPolicy scoped(env(), policy);
  auto args = good_args("vmm-noexec");
  args.vmm = vmm;
  expect_refused(args, "open_vmm", EACCES, 126);
}

// Link name with '/'.
TEST_F(HelperRefusalsTest, LinkNameWithASlash) {
  auto args = good_args("link-slash");
  args.links.emplace_back("sub/vmlinux", env().images() + "/vmlinux");
  expect_refused(args, "validate_request", EINVAL);
}

// Link name '..'.
TEST_F(HelperRefusalsTest, LinkNameDotDot) {
  auto args = good_args("link-dotdot");
  args.links.emplace_back("..", env().images() + "/vmlinux");
  expect_refused(args, "validate_request", EINVAL);
}

// Env names starting LD_.
TEST_F(HelperRefusalsTest, EnvLdPreload) {
  auto args = good_args("env-ld");
  args.env.push_back("LD_PRELOAD=/tmp/evil.so");
  expect_refused(args, "validate_request", EINVAL);
}

// Env names starting GCONV_.
TEST_F(HelperRefusalsTest, EnvGconvPath) {
  auto args = good_args("env-gconv");
  args.env.push_back("GCONV_PATH=/tmp");
  expect_refused(args, "validate_request", EINVAL);
}

// Env names not [A-Za-z_][A-Za-z0-9_]*: a leading digit.
TEST_F(HelperRefusalsTest, EnvNameStartingWithADigit) {
  auto args = good_args("env-digit");
  args.env.push_back("1BAD=x");
  expect_refused(args, "validate_request", EINVAL);
}

// Env names not [A-Za-z_][A-Za-z0-9_]*: a dash.
TEST_F(HelperRefusalsTest, EnvNameWithADash) {
  auto args = good_args("env-dash");
  args.env.push_back("A-B=x");
  expect_refused(args, "validate_request", EINVAL);
}

// Malformed protocol: garbage bytes.
TEST_F(HelperRefusalsTest, ProtocolGarbage) {
  std::vector<uint8_t> garbage;
  for (int i = 0; i < 200; ++i) garbage.push_back(static_cast<uint8_t>(i * 37 + 11));
  expect_refused(raw_args(garbage), "read_request", EPROTO);
}

// Malformed protocol: a valid header cut short.
TEST_F(HelperRefusalsTest, ProtocolTruncatedHeader) {
  auto bytes = valid_message();
  bytes.resize(protocol::kHeaderSize - 6);
  expect_refused(raw_args(bytes), "read_request", EPROTO);
}

// Malformed protocol: a valid message cut inside its fields (the length no longer matches).
TEST_F(HelperRefusalsTest, ProtocolTruncatedBody) {
  auto bytes = valid_message();
  bytes.resize(bytes.size() - 5);
  expect_refused(raw_args(bytes), "read_request", EPROTO);
}

// Malformed protocol: an unknown version.
TEST_F(HelperRefusalsTest, ProtocolUnknownVersion) {
  auto bytes = valid_message();
  bytes[4] = static_cast<uint8_t>(protocol::kVersion + 1);
  expect_refused(raw_args(bytes), "read_request", EPROTO);
}

// Malformed protocol: trailing bytes after the message.
TEST_F(HelperRefusalsTest, ProtocolTrailingBytes) {
  auto bytes = valid_message();
  bytes.insert(bytes.end(), {0x01, 0x00, 0x00});
  expect_refused(raw_args(bytes), "read_request", EPROTO);
}

// Malformed protocol: trailing bytes inside the declared length (a field header cut short).
TEST_F(HelperRefusalsTest, ProtocolTrailingBytesWithinTheLength) {
  auto bytes = valid_message();
  bytes.insert(bytes.end(), {0x01, 0x00, 0x00});
  const uint32_t size = static_cast<uint32_t>(bytes.size());
  for (int i = 0; i < 4; ++i) bytes[8 + i] = static_cast<uint8_t>(size >> (8 * i));
  expect_refused(raw_args(bytes), "read_request", EPROTO);
}

// No request at all: an empty datagram.
TEST_F(HelperRefusalsTest, EmptyRequest) {
  LaunchArgs args;
  args.empty = true;
  expect_refused(args, "read_request", std::nullopt);
}

// Policy file writable by group.
TEST_F(HelperRefusalsTest, PolicyWritableByGroup) {
  ASSERT_EQ(chmod(env().policy_path().c_str(), 0664), 0);
  auto error = expect_refused(good_args("policy-gw"), "load_policy", EPERM);
  EXPECT_NE(json_str(error, "detail").find("writable"), std::string::npos)
      << json::serialize(error);
}

// Policy with an unknown key: refused with file and line named.
TEST_F(HelperRefusalsTest, PolicyWithAnUnknownKey) {
  PolicySpec policy = env().default_policy();
  policy.extra_lines = {"# a comment", "frobnicate = yes"};  // lines 9 and 10
  ScopedPolicy scoped(env(), policy);
  auto error = expect_refused(good_args("policy-key"), "load_policy", EINVAL);
  const std::string detail = json_str(error, "detail");
  EXPECT_NE(detail.find(env().policy_path() + ":10:"), std::string::npos) << detail;
  EXPECT_NE(detail.find("frobnicate"), std::string::npos) << detail;
}

}  // namespace
}  // namespace sbx::it
