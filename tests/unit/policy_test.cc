// SPDX-License-Identifier: Apache-2.0
// The policy parser (every refusal names file and line) and the loader's trust checks (owner,
// mode and symlinks on the file and every parent directory).
#include "helper/policy.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace sbx::policy {
namespace {

constexpr const char* kGood = R"(# a comment
vmm = /usr/bin/qemu-system-x86_64
vmm = /usr/bin/firecracker
sandbox_root = /run/sbx
image_root = /var/lib/sbx/images
netns = sbx-*
netns = user-{uid}-*
tmpfs_size_mb = 32
rlimit_nofile = 4096
allow_root_vmm = false
audit = required
)";

Status parse_error(const std::string& text) {
  auto r = parse(text, "test.conf");
  EXPECT_FALSE(r.ok()) << text;
  return r.ok() ? Status() : r.status();
}

void expect_refused(const std::string& text) {
  (void)parse_error(text);
}

TEST(PolicyParse, ReadsEveryKey) {
  auto r = parse(kGood, "test.conf");
  ASSERT_TRUE(r.ok()) << r.status().message();
  const Policy& p = r.value();
  EXPECT_EQ(p.vmms,
            (std::vector<std::string>{"/usr/bin/qemu-system-x86_64", "/usr/bin/firecracker"}));
  EXPECT_EQ(p.sandbox_roots, std::vector<std::string>{"/run/sbx"});
  EXPECT_EQ(p.image_roots, std::vector<std::string>{"/var/lib/sbx/images"});
  EXPECT_EQ(p.netns_globs, (std::vector<std::string>{"sbx-*", "user-{uid}-*"}));
  EXPECT_EQ(p.tmpfs_size_mb, 32u);
  ASSERT_TRUE(p.rlimit_nofile.has_value());
  EXPECT_EQ(*p.rlimit_nofile, 4096u);
  EXPECT_FALSE(p.allow_root_vmm);
  EXPECT_EQ(p.audit, AuditMode::kRequired);
}

TEST(PolicyParse, DefaultsAllowNothing) {
  auto r = parse("# empty\n\n", "test.conf");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r.value().vmms.empty());
  EXPECT_TRUE(r.value().sandbox_roots.empty());
  EXPECT_TRUE(r.value().netns_globs.empty());
  EXPECT_FALSE(r.value().allow_root_vmm);
  EXPECT_EQ(r.value().tmpfs_size_mb, 16u);
  EXPECT_EQ(r.value().audit, AuditMode::kBestEffort);
}

TEST(PolicyParse, FormatRoundTrips) {
  auto r = parse(kGood, "a.conf");
  ASSERT_TRUE(r.ok());
  auto again = parse(format(r.value()), "b.conf");
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_EQ(format(again.value()), format(r.value()));
}

TEST(PolicyParse, ErrorsNameFileAndLine) {
  Status st = parse_error("vmm = /bin/true\n\nbogus_key = 1\n");
  EXPECT_EQ(st.step(), Step::kLoadPolicy);
  EXPECT_NE(st.detail().find("test.conf:3:"), std::string::npos) << st.detail();
  EXPECT_NE(st.detail().find("bogus_key"), std::string::npos);
}

TEST(PolicyParse, RefusesLineWithoutEquals) {
  expect_refused("vmm /usr/bin/x\n");
}
TEST(PolicyParse, RefusesEmptyValue) {
  expect_refused("vmm =\n");
}
TEST(PolicyParse, RefusesUnknownKey) {
  expect_refused("vmms = /usr/bin/x\n");
}
TEST(PolicyParse, RefusesRelativePaths) {
  expect_refused("vmm = usr/bin/x\n");
  expect_refused("sandbox_root = run/sbx\n");
  expect_refused("image_root = ./images\n");
}
TEST(PolicyParse, RefusesDotDotAndRoot) {
  expect_refused("sandbox_root = /run/../etc\n");
  expect_refused("image_root = /\n");
  expect_refused("sandbox_root = /run/sbx/\n");
}
TEST(PolicyParse, RefusesDuplicates) {
  expect_refused("vmm = /a\nvmm = /a\n");
  expect_refused("tmpfs_size_mb = 1\ntmpfs_size_mb = 2\n");
  expect_refused("rlimit_nofile = 64\nrlimit_nofile = 64\n");
  expect_refused("allow_root_vmm = true\nallow_root_vmm = true\n");
  expect_refused("audit = required\naudit = best_effort\n");
}
TEST(PolicyParse, RefusesOutOfRangeNumbers) {
  expect_refused("tmpfs_size_mb = 0\n");
  expect_refused("tmpfs_size_mb = 65537\n");
  expect_refused("tmpfs_size_mb = 12k\n");
  expect_refused("tmpfs_size_mb = -1\n");
  expect_refused("rlimit_nofile = 15\n");
  expect_refused("rlimit_nofile = 99999999999999999999999\n");
}
TEST(PolicyParse, RefusesNonBooleans) {
  expect_refused("allow_root_vmm = yes\n");
}
TEST(PolicyParse, AuditIsRequiredOrBestEffort) {
  auto r = parse("audit = best_effort\n", "t");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r.value().audit, AuditMode::kBestEffort);
  EXPECT_NE(format(r.value()).find("audit = best_effort\n"), std::string::npos);
  Status st = parse_error("audit = off\n");
  EXPECT_NE(st.detail().find("audit must be required or best_effort"), std::string::npos)
      << st.detail();
  expect_refused("audit = Required\n");
  expect_refused("audit = true\n");
}
TEST(PolicyParse, RefusesBadNetnsGlobs) {
  expect_refused("netns = a/b\n");
  expect_refused("netns = a b\n");
  expect_refused("netns = {gid}\n");
  expect_refused("netns = " + std::string(256, 'a') + "\n");
}
TEST(PolicyParse, RefusesNulBytes) {
  expect_refused(std::string("vmm = /a\0b\n", 11));
}
TEST(PolicyParse, RefusesTooManyEntries) {
  std::string text;
  for (int i = 0; i <= 256; ++i) text += "vmm = /v" + std::to_string(i) + "\n";
  expect_refused(text);
}

TEST(PolicyNetns, GlobsAndUidExpansion) {
  auto r = parse("netns = sbx-*\nnetns = u{uid}-?\n", "t");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(netns_allowed(r.value(), "sbx-vm1", 1000));
  EXPECT_TRUE(netns_allowed(r.value(), "u1000-a", 1000));
  EXPECT_FALSE(netns_allowed(r.value(), "u1001-a", 1000));
  EXPECT_FALSE(netns_allowed(r.value(), "other", 1000));
  EXPECT_FALSE(netns_allowed(r.value(), ".sbx-hidden", 1000));
}

// The loader's trust checks need files owned by root, so these run as root (CI does).
class PolicyLoad : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "policy trust checks need root-owned files";
    char tmpl[] = "/run/sbx-policy-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/nsexec.conf";
    write(path_, "vmm = /usr/bin/true\n");
  }
  void TearDown() override {
    if (dir_.empty()) return;
    std::string cmd = "rm -rf '" + dir_ + "'";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
  }
  static void write(const std::string& path, const std::string& text) {
    std::ofstream(path) << text;
    chmod(path.c_str(), 0644);
  }
  std::string dir_, path_;
};

TEST_F(PolicyLoad, LoadsARootOwnedFile) {
  auto r = load(path_);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r.value().vmms, std::vector<std::string>{"/usr/bin/true"});
}

TEST_F(PolicyLoad, RefusesGroupOrOtherWritableFile) {
  chmod(path_.c_str(), 0664);
  auto r = load(path_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().detail().find("writable"), std::string::npos);
  chmod(path_.c_str(), 0646);
  EXPECT_FALSE(load(path_).ok());
}

TEST_F(PolicyLoad, RefusesFileNotOwnedByRoot) {
  ASSERT_EQ(chown(path_.c_str(), 12345, 0), 0);
  auto r = load(path_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().detail().find("not owned by root"), std::string::npos);
}

TEST_F(PolicyLoad, RefusesWritableParentDirectory) {
  chmod(dir_.c_str(), 0777);
  auto r = load(path_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().detail().find(dir_), std::string::npos) << r.status().detail();
}

TEST_F(PolicyLoad, RefusesParentNotOwnedByRoot) {
  ASSERT_EQ(chown(dir_.c_str(), 12345, 0), 0);
  EXPECT_FALSE(load(path_).ok());
}

TEST_F(PolicyLoad, RefusesSymlinkAsFileOrParent) {
  std::string link = dir_ + "/link.conf";
  ASSERT_EQ(symlink(path_.c_str(), link.c_str()), 0);
  auto r = load(link);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().err(), ELOOP);
  std::string linkdir = dir_ + "/linkdir";
  ASSERT_EQ(symlink(dir_.c_str(), linkdir.c_str()), 0);
  EXPECT_EQ(load(linkdir + "/nsexec.conf").status().err(), ELOOP);
}

TEST_F(PolicyLoad, RefusesMissingDirectoryAndOversizeFiles) {
  EXPECT_EQ(load(dir_ + "/missing.conf").status().err(), ENOENT);
  write(path_, std::string(kMaxPolicyBytes + 1, '#'));
  EXPECT_EQ(load(path_).status().err(), EFBIG);
  mkdir((dir_ + "/d").c_str(), 0755);
  EXPECT_FALSE(load(dir_ + "/d").ok());
}

TEST_F(PolicyLoad, ParseErrorsNameThePath) {
  write(path_, "vmm = /usr/bin/true\nnope\n");
  auto r = load(path_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().detail().find(path_ + ":2:"), std::string::npos) << r.status().detail();
}

}  // namespace
}  // namespace sbx::policy

namespace sbx::policy {
namespace {

TEST(PolicyFilesKeys, DevicesReadOnlyAndLandlock) {
  auto r = parse(
      "device = /dev/kvm\ndevice = /dev/net/tun\nread_only = /usr\n"
      "landlock = required\n",
      "t.conf");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r.value().devices, (std::vector<std::string>{"/dev/kvm", "/dev/net/tun"}));
  EXPECT_EQ(r.value().read_only, (std::vector<std::string>{"/usr"}));
  EXPECT_EQ(r.value().landlock, LandlockMode::kRequired);
  auto again = parse(format(r.value()), "t.conf");
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_EQ(format(again.value()), format(r.value()));
}

TEST(PolicyFilesKeys, LandlockDefaultsToBestEffort) {
  auto r = parse("", "t.conf");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value().landlock, LandlockMode::kBestEffort);
  auto off = parse("landlock = off\n", "t.conf");
  ASSERT_TRUE(off.ok());
  EXPECT_EQ(off.value().landlock, LandlockMode::kOff);
}

TEST(PolicyFilesKeys, Refusals) {
  for (const char* text :
       {"device = /etc/passwd\n", "device = /dev\n", "device = /dev/../etc/shadow\n",
        "device = dev/kvm\n", "device = /dev/kvm\ndevice = /dev/kvm\n", "read_only = usr\n",
        "read_only = /\n", "read_only = /usr/../etc\n", "landlock = maybe\n",
        "landlock = off\nlandlock = required\n"}) {
    auto r = parse(text, "t.conf");
    EXPECT_FALSE(r.ok()) << text;
    if (!r.ok()) EXPECT_NE(r.status().detail().find("t.conf:"), std::string::npos);
  }
}

}  // namespace
}  // namespace sbx::policy
