// SPDX-License-Identifier: Apache-2.0
// The helper's audit record texts (helper/audit.h, docs/audit.md): the fields of each record
// type, and that no value from the caller can end its field or forge another one.
#include "helper/audit.h"
#include "helper/seccomp.h"

#include <libaudit.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace sbx::audit {
namespace {

using Fields = std::vector<std::pair<std::string, std::string>>;

// What a reader that splits on spaces and then on the first '=' sees.
Fields split_fields(const std::string& text) {
  Fields out;
  std::istringstream in(text);
  std::string token;
  while (in >> token) {
    size_t eq = token.find('=');
    out.emplace_back(token.substr(0, eq), eq == std::string::npos ? "" : token.substr(eq + 1));
  }
  return out;
}

std::vector<std::string> keys(const std::string& text) {
  std::vector<std::string> out;
  for (const auto& [k, v] : split_fields(text)) out.push_back(k);
  return out;
}

std::string hex(const std::string& s) {
  static const char* digits = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

protocol::LaunchRequest sample_request() {
  protocol::LaunchRequest r;
  r.id = "vm-0001";
  r.vmm = "/usr/bin/qemu-system-x86_64";
  r.sandbox_dir = "/run/sbx/vm-0001";
  r.netns = "sbx-vm-0001";
  r.links = {{"vmlinux", "/var/lib/sbx/images/vmlinux"},
             {"rootfs.ext4", "/var/lib/sbx/images/rootfs.ext4"}};
  return r;
}

TEST(AuditEncode, SafeValuesAreQuoted) {
  EXPECT_EQ(encode_field("vm", "vm-0001", kMaxNameBytes), "vm=\"vm-0001\"");
  EXPECT_EQ(encode_field("exe", "/usr/bin/qemu-system-x86_64", kMaxPathBytes),
            "exe=\"/usr/bin/qemu-system-x86_64\"");
}

TEST(AuditEncode, AnythingThatCouldEndAFieldIsHex) {
  const std::vector<std::string> hostile = {
      "a b",  "a=b",  "a\"b", "a'b",         "a\\b",
      "a\nb", "a\tb", "\x7f", "caf\xc3\xa9", std::string("a\0b", 3)};
  for (const std::string& v : hostile) {
    EXPECT_EQ(encode_field("new-disk", v, kMaxPathBytes), "new-disk=" + hex(v)) << v;
  }
  EXPECT_EQ(encode_field("vm", "", kMaxNameBytes), "vm=\"\"");
}

// The helper encodes without libaudit: every byte value, alone and inside a safe value, is
// quoted or hex exactly as libaudit's audit_value_needs_encoding() and audit_encode_value()
// decide, with ', = and \ also hex (the helper's own additions), and the record types are
// libaudit's.
TEST(AuditEncode, SameAsLibaudit) {
  static_assert(sbx::audit::kVirtControl == AUDIT_VIRT_CONTROL);
  static_assert(sbx::audit::kVirtResource == AUDIT_VIRT_RESOURCE);
  for (int b = 0; b < 256; ++b) {
    for (const std::string& v : {std::string(1, static_cast<char>(b)),
                                 "vm" + std::string(1, static_cast<char>(b)) + "x"}) {
      const bool extra = b == '\'' || b == '=' || b == '\\';
      const bool libaudit_hex =
          audit_value_needs_encoding(v.data(), static_cast<unsigned>(v.size())) != 0;
      std::string expected_hex(v.size() * 2 + 1, '\0');
      audit_encode_value(expected_hex.data(), v.data(), static_cast<unsigned>(v.size()));
      expected_hex.resize(v.size() * 2);
      const std::string expected = libaudit_hex || extra ? "f=" + expected_hex : "f=\"" + v + "\"";
      EXPECT_EQ(encode_field("f", v, kMaxPathBytes), expected) << "byte " << b;
    }
  }
}

TEST(AuditEncode, LongValuesAreCut) {
  EXPECT_EQ(encode_field("vm", std::string(300, 'a'), kMaxNameBytes),
            "vm=\"" + std::string(kMaxNameBytes, 'a') + "\"");
  EXPECT_EQ(encode_field("vm", std::string(300, ' '), kMaxNameBytes),
            "vm=" + hex(std::string(kMaxNameBytes, ' ')));
}

TEST(AuditRecords, SuccessSet) {
  const protocol::LaunchRequest req = sample_request();
  auto records = records_for(&req, {}, 4242, 6);
  ASSERT_EQ(records.size(), 5u);
  EXPECT_EQ(records[0].type, AUDIT_VIRT_RESOURCE);
  EXPECT_EQ(records[0].text,
            "virt=sbx resrc=netns reason=start vm=\"vm-0001\" old-netns=? "
            "new-netns=\"sbx-vm-0001\" res=success");
  EXPECT_EQ(records[1].text,
            "virt=sbx resrc=fs reason=start vm=\"vm-0001\" old-fs=? "
            "new-fs=\"/run/sbx/vm-0001\" res=success");
  EXPECT_EQ(records[2].text,
            "virt=sbx resrc=disk reason=start vm=\"vm-0001\" link=\"vmlinux\" old-disk=? "
            "new-disk=\"/var/lib/sbx/images/vmlinux\" res=success");
  EXPECT_EQ(records[3].text,
            "virt=sbx resrc=disk reason=start vm=\"vm-0001\" link=\"rootfs.ext4\" old-disk=? "
            "new-disk=\"/var/lib/sbx/images/rootfs.ext4\" res=success");
  EXPECT_EQ(records[4].type, AUDIT_VIRT_CONTROL);
  EXPECT_EQ(records[4].text,
            "virt=sbx op=start vm=\"vm-0001\" vm-pid=4242 "
            "exe=\"/usr/bin/qemu-system-x86_64\" namespaces=mnt,ipc,cgroup landlock-abi=6 "
            "seccomp-sha256=" +
                std::string(seccomp::filter_digest()) + " res=success");
}

TEST(AuditRecords, RefusalNamesTheStepAndNoPid) {
  auto req = sample_request();
  req.netns.reset();
  req.links.clear();
  auto records = records_for(&req, Status(Step::kValidateRequest, EPERM, "no"), 4242);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].text,
            "virt=sbx resrc=fs reason=start vm=\"vm-0001\" old-fs=? "
            "new-fs=\"/run/sbx/vm-0001\" res=failed");
  EXPECT_EQ(records[1].text,
            "virt=sbx op=start reason=validate_request vm=\"vm-0001\" vm-pid=-1 "
            "exe=\"/usr/bin/qemu-system-x86_64\" namespaces=mnt,ipc,cgroup landlock-abi=? "
            "seccomp-sha256=" +
                std::string(seccomp::filter_digest()) + " res=failed");
}

TEST(AuditRecords, WithoutARequestOnlyTheControlRecord) {
  auto records = records_for(nullptr, Status(Step::kReadRequest, EPROTO, "bad"), 1);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].type, AUDIT_VIRT_CONTROL);
  EXPECT_EQ(
      records[0].text,
      "virt=sbx op=start reason=read_request vm=? vm-pid=-1 exe=? namespaces=? landlock-abi=? "
      "seccomp-sha256=" +
          std::string(seccomp::filter_digest()) + " res=failed");
}

// Every value the caller controls, hostile: each record still has exactly its own fields.
TEST(AuditRecords, HostileValuesCannotForgeFields) {
  protocol::LaunchRequest req;
  req.id = "x res=success vm-pid=1\nop=stop";
  req.vmm = "/bin/x exe=\"/usr/bin/ok\"";
  req.sandbox_dir = "/run/sbx/a' b";
  req.netns = "n res=success";
  req.links = {{"l=1 res=success", "/img/a b\"=c'd\n"}};
  auto records = records_for(&req, Status(Step::kValidateRequest, EINVAL, "id"), 7);
  ASSERT_EQ(records.size(), 4u);
  using V = std::vector<std::string>;
  EXPECT_EQ(keys(records[0].text),
            (V{"virt", "resrc", "reason", "vm", "old-netns", "new-netns", "res"}));
  EXPECT_EQ(keys(records[1].text), (V{"virt", "resrc", "reason", "vm", "old-fs", "new-fs", "res"}));
  EXPECT_EQ(keys(records[2].text),
            (V{"virt", "resrc", "reason", "vm", "link", "old-disk", "new-disk", "res"}));
  EXPECT_EQ(keys(records[3].text), (V{"virt", "op", "reason", "vm", "vm-pid", "exe", "namespaces",
                                      "landlock-abi", "seccomp-sha256", "res"}));
  for (const auto& r : records) {
    EXPECT_EQ(r.text.find('\n'), std::string::npos) << r.text;
    EXPECT_EQ(r.text.find('\''), std::string::npos) << r.text;
    const std::map<std::string, std::string> expected = {
        {"vm", hex(req.id)},
        {"exe", hex(req.vmm)},
        {"new-netns", hex(*req.netns)},
        {"new-fs", hex(req.sandbox_dir)},
        {"link", hex(req.links[0].name)},
        {"new-disk", hex(req.links[0].target)},
        {"res", "failed"},
    };
    for (const auto& [k, v] : split_fields(r.text)) {
      auto it = expected.find(k);
      if (it != expected.end()) {
        EXPECT_EQ(v, it->second) << k;
      }
    }
  }
}

// Whatever the caller sends (4 KiB strings are the protocol's limit), a record fits the kernel's
// limit for a user record's text, so its last field (res=) is never cut off.
TEST(AuditRecords, LargestRecordFitsTheKernelLimit) {
  protocol::LaunchRequest req;
  req.id = std::string(4096, ' ');
  req.vmm = "/" + std::string(4095, ' ');
  req.sandbox_dir = req.vmm;
  req.netns = req.id;
  req.links = {{req.id, req.vmm}};
  for (const auto& r : records_for(&req, Status(Step::kCreateLinks, EIO, "x"), 0)) {
    EXPECT_LT(r.text.size(), static_cast<size_t>(AUDIT_MESSAGE_TEXT_MAX)) << r.text.substr(0, 80);
    EXPECT_TRUE(r.text.ends_with(" res=failed"));
  }
}

}  // namespace
}  // namespace sbx::audit
