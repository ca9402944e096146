// SPDX-License-Identifier: Apache-2.0
// The helper's audit trail (issue 8, "Audit"; docs/audit.md): with kernel audit enabled, a
// launch and a refusal each leave their record set, stamped by the kernel with the caller's
// uid, read here from the audit netlink multicast group; values from the caller that could
// forge a field arrive hex-encoded; `audit = required` refuses a launch whose record the kernel
// does not take. Each test restores the kernel's audit state, whatever happens in it.
#include <libaudit.h>
#include <linux/netlink.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "helper/seccomp.h"
#include "tests/integration/audit_reader.h"
#include "tests/integration/helper_env.h"

namespace sbx::it {
namespace {

namespace json = boost::json;

std::string hex(const std::string& s) {
  static const char* digits = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

std::string in_quotes(const std::string& s) {
  return "\"" + s + "\"";
}

// The records of one set, by kind.
struct RecordSet {
  const AuditRecord* control = nullptr;
  const AuditRecord* netns = nullptr;
  const AuditRecord* fs = nullptr;
  std::vector<const AuditRecord*> disks;
};

RecordSet sort_set(const std::vector<AuditRecord>& records) {
  RecordSet s;
  for (const auto& r : records) {
    if (r.type == AUDIT_VIRT_CONTROL) {
      s.control = &r;
    } else if (r.fields.at("resrc") == "netns") {
      s.netns = &r;
    } else if (r.fields.at("resrc") == "fs") {
      s.fs = &r;
    } else if (r.fields.at("resrc") == "disk") {
      s.disks.push_back(&r);
    }
  }
  return s;
}

std::string dump(const std::vector<AuditRecord>& records) {
  std::string out;
  for (const auto& r : records)
    out += std::to_string(r.type) + " " + r.stamp + " | " + r.body + "\n";
  return out;
}

class AuditTest : public HelperEnvTest {
 protected:
  // Every record of a set: stamped by the kernel with the caller's uid, from the helper.
  void expect_common(const std::vector<AuditRecord>& records, const std::string& res) {
    for (const auto& r : records) {
      EXPECT_EQ(r.stamp_fields.at("uid"), std::to_string(kTestUid)) << r.stamp;
      EXPECT_EQ(r.fields.at("virt"), "sbx") << r.body;
      EXPECT_EQ(r.fields.at("res"), res) << r.body;
      EXPECT_EQ(r.keys.back(), "res") << r.body;
    }
  }

  // The netns, sandbox dir and links of `args` as resource records.
  void expect_resources(const RecordSet& set, const LaunchArgs& args) {
    ASSERT_NE(set.netns, nullptr);
    EXPECT_EQ(set.netns->fields.at("new-netns"), in_quotes(*args.netns)) << set.netns->body;
    ASSERT_NE(set.fs, nullptr);
    EXPECT_EQ(set.fs->fields.at("new-fs"), in_quotes(args.sandbox_dir)) << set.fs->body;
    ASSERT_EQ(set.disks.size(), args.links.size());
    for (size_t i = 0; i < args.links.size(); ++i) {
      EXPECT_EQ(set.disks[i]->fields.at("link"), in_quotes(args.links[i].first));
      EXPECT_EQ(set.disks[i]->fields.at("new-disk"), in_quotes(args.links[i].second))
          << set.disks[i]->body;
    }
  }

  // A copy of the helper with cap_sys_admin only (the deployment before audit).
  std::string helper_without_audit_write() {
    std::string path = env().fresh_path("sbx-nsexec-no-audit-write");
    std::filesystem::copy_file(env().helper(), path);  // no xattrs: no capabilities yet
    std::string out;
    if (run_command({"/sbin/setcap", "cap_sys_admin+ep", path}, &out) != 0) {
      throw std::runtime_error("setcap cap_sys_admin+ep " + path + ": " + out);
    }
    return path;
  }
};

TEST_F(AuditTest, LaunchLeavesItsRecordSet) {
  KernelAuditState audit(1);
  AuditListener listener;
  auto args = env().probe_args("audit-ok");
  Launch l = env().launch(args);
  ASSERT_TRUE(l.ok()) << json::serialize(l.line) << "\n" << l.driver->stderr_text();
  env().wait_for_report(env().report_path(args));
  json::object exit = env().stop(l);
  EXPECT_EQ(json_int(exit, "code"), 0);

  auto records = listener.record_set("vm=" + in_quotes(args.id));
  RecordSet set = sort_set(records);
  ASSERT_NE(set.control, nullptr) << "no VIRT_CONTROL record for " << args.id << "; got:\n"
                                  << dump(records);
  EXPECT_EQ(records.size(), 5u) << dump(records);
  expect_common(records, "success");
  const auto& c = *set.control;
  EXPECT_EQ(c.keys, (std::vector<std::string>{"virt", "op", "vm", "vm-pid", "exe", "namespaces",
                                              "landlock-abi", "seccomp-sha256", "res"}))
      << c.body;
  EXPECT_EQ(c.fields.at("op"), "start");
  EXPECT_EQ(c.fields.at("vm-pid"), std::to_string(l.vmm_pid()));
  EXPECT_EQ(c.fields.at("exe"), in_quotes(env().probe()));
  // The confinement it ran under: its namespaces (this launch asks for no PID namespace),
  // this kernel's Landlock ABI (>= 6), and the filter's digest.
  EXPECT_EQ(c.fields.at("namespaces"), "mnt,ipc,cgroup");
  EXPECT_EQ(c.fields.at("landlock-abi"), std::to_string(layer_landlock_abi()));
  EXPECT_EQ(c.fields.at("landlock-abi"), std::to_string(json_int(l.line, "landlock_abi")));
  EXPECT_EQ(c.fields.at("seccomp-sha256"), std::string(seccomp::filter_digest()));
  // The helper sent it: the VMM keeps the helper's pid.
  EXPECT_EQ(c.stamp_fields.at("pid"), std::to_string(l.helper_pid())) << c.stamp;
  expect_resources(set, args);
}

TEST_F(AuditTest, RefusalLeavesItsRecordSet) {
  KernelAuditState audit(1);
  AuditListener listener;
  auto args = env().probe_args("audit-refused");
  args.netns = "not-allowed-" + args.id;  // no policy glob matches
  Launch l = env().launch(args);
  ASSERT_FALSE(l.ok()) << json::serialize(l.line);
  EXPECT_EQ(json_str(l.error(), "step"), "validate_request");
  EXPECT_EQ(json_int(l.error(), "errno"), EPERM);
  env().read_exit(l);

  auto records = listener.record_set("vm=" + in_quotes(args.id));
  RecordSet set = sort_set(records);
  ASSERT_NE(set.control, nullptr) << "no VIRT_CONTROL record for " << args.id << "; got:\n"
                                  << dump(records);
  EXPECT_EQ(records.size(), 5u) << dump(records);
  expect_common(records, "failed");
  const auto& c = *set.control;
  EXPECT_EQ(c.keys,
            (std::vector<std::string>{"virt", "op", "reason", "vm", "vm-pid", "exe", "namespaces",
                                      "landlock-abi", "seccomp-sha256", "res"}))
      << c.body;
  EXPECT_EQ(c.fields.at("op"), "start");
  EXPECT_EQ(c.fields.at("reason"), "validate_request");
  EXPECT_EQ(c.fields.at("vm-pid"), "-1");
  EXPECT_EQ(c.fields.at("exe"), in_quotes(env().probe()));
  EXPECT_EQ(c.stamp_fields.at("pid"), std::to_string(l.helper_pid())) << c.stamp;
  expect_resources(set, args);
}

// In a PID-namespace launch the record reports the namespace init's pid as the supervisor sees
// it (the VMM is forked after the record is written). The init sends it, so the kernel stamps
// that same pid, and not the helper's (which exits once the init is started).
TEST_F(AuditTest, PidNamespaceLaunchReportsThePidTheSupervisorSees) {
  KernelAuditState audit(1);
  AuditListener listener;
  auto args = env().probe_args("audit-pidns");
  args.pid_namespace = true;
  Launch l = env().launch(args);
  ASSERT_TRUE(l.ok()) << json::serialize(l.line) << "\n" << l.driver->stderr_text();
  env().wait_for_report(env().report_path(args));
  env().stop(l);

  auto records = listener.record_set("vm=" + in_quotes(args.id));
  RecordSet set = sort_set(records);
  ASSERT_NE(set.control, nullptr) << dump(records);
  EXPECT_NE(l.vmm_pid(), l.helper_pid());
  const std::string init = std::to_string(json_int(l.line, "init_pid"));
  EXPECT_EQ(set.control->fields.at("vm-pid"), init);
  EXPECT_EQ(set.control->stamp_fields.at("pid"), init) << set.control->stamp;
  EXPECT_NE(init, std::to_string(l.helper_pid()));
  EXPECT_EQ(set.control->fields.at("namespaces"), "mnt,ipc,cgroup,pid");
  expect_common(records, "success");
}

// Values the validator accepts but that hold spaces, quotes and '=' (an image file name, a link
// name), and values it refuses (an id, a netns name) that try to add fields of their own.
TEST_F(AuditTest, HostileValuesArriveHexEncoded) {
  KernelAuditState audit(1);
  AuditListener listener;

  const std::string image = env().images() + "/a b\"c=d'e res=success.img";
  {
    std::ofstream(image) << "not an image\n";
    std::filesystem::permissions(image, std::filesystem::perms(0644));
  }
  auto args = env().probe_args("audit-hostile");
  args.links = {{"vmlinux", env().images() + "/vmlinux"}, {"my \"disk\" 1", image}};
  Launch l = env().launch(args);
  ASSERT_TRUE(l.ok()) << json::serialize(l.line) << "\n" << l.driver->stderr_text();
  env().wait_for_report(env().report_path(args));
  env().stop(l);
  auto records = listener.record_set("vm=" + in_quotes(args.id));
  RecordSet set = sort_set(records);
  ASSERT_NE(set.control, nullptr) << dump(records);
  ASSERT_EQ(set.disks.size(), 2u) << dump(records);
  const auto& disk = *set.disks[1];
  EXPECT_EQ(disk.keys, (std::vector<std::string>{"virt", "resrc", "reason", "vm", "link",
                                                 "old-disk", "new-disk", "res"}))
      << disk.body;
  EXPECT_EQ(disk.fields.at("link"), hex("my \"disk\" 1"));
  EXPECT_EQ(disk.fields.at("new-disk"), hex(image));
  expect_common(records, "success");
  std::filesystem::remove(image);

  // Refused at validate_request (the id rules), recorded all the same.
  auto evil = env().probe_args("audit-evil");
  evil.id = "evil res=success vm-pid=1\nop=stop";
  evil.netns = "n\" res=success";
  Launch refused = env().launch(evil);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(json_str(refused.error(), "step"), "validate_request");
  env().read_exit(refused);
  auto evil_records = listener.record_set("vm=" + hex(evil.id));
  RecordSet evil_set = sort_set(evil_records);
  ASSERT_NE(evil_set.control, nullptr) << dump(evil_records);
  expect_common(evil_records, "failed");
  EXPECT_EQ(evil_set.control->keys,
            (std::vector<std::string>{"virt", "op", "reason", "vm", "vm-pid", "exe", "namespaces",
                                      "landlock-abi", "seccomp-sha256", "res"}));
  EXPECT_EQ(evil_set.control->fields.at("vm-pid"), "-1");
  ASSERT_NE(evil_set.netns, nullptr);
  EXPECT_EQ(evil_set.netns->fields.at("new-netns"), hex(*evil.netns));
  EXPECT_EQ(evil_set.netns->keys, (std::vector<std::string>{"virt", "resrc", "reason", "vm",
                                                            "old-netns", "new-netns", "res"}));
}

// A launch under `audit = required` whose record the kernel does not take (the helper lacks
// cap_audit_write: EPERM): refused at write_audit with exit 125, and the VMM never ran.
void expect_write_audit_refusal(HelperEnv& env, const LaunchArgs& args) {
  Launch l = env.launch(args);
  ASSERT_FALSE(l.ok()) << json::serialize(l.line);
  EXPECT_EQ(json_str(l.error(), "step"), "write_audit") << json::serialize(l.line);
  EXPECT_EQ(json_int(l.error(), "errno"), EPERM);
  json::object exit = env.read_exit(l);
  EXPECT_EQ(exit.at("code"), json::value(125)) << json::serialize(exit);
  EXPECT_FALSE(std::filesystem::exists(env.report_path(args))) << "the VMM ran";
}

// `audit = required`: a helper without cap_audit_write cannot send its record (EPERM), so the
// launch is refused at write_audit, before the capability drop, leaving nothing behind. With
// the default best_effort the same helper launches (its records go to syslog), and the helper
// with both capabilities launches under `required`.
TEST_F(AuditTest, RequiredRefusesALaunchWhoseRecordTheKernelDoesNotTake) {
  KernelAuditState audit(1);
  const std::string weak_helper = helper_without_audit_write();
  const std::string mounts = HelperEnv::host_mountinfo();
  {
    PolicySpec policy = env().default_policy();
    policy.extra_lines = {"audit = required"};
    ScopedPolicy scoped(env(), policy);

    auto args = env().probe_args("audit-required");
    args.helper = weak_helper;
    expect_write_audit_refusal(env(), args);
    EXPECT_FALSE(std::filesystem::exists(args.sandbox_dir));
    EXPECT_EQ(HelperEnv::host_mountinfo(), mounts);

    auto ok_args = env().probe_args("audit-required-ok");
    Launch ok = env().launch(ok_args);
    ASSERT_TRUE(ok.ok()) << json::serialize(ok.line) << "\n" << ok.driver->stderr_text();
    env().wait_for_report(env().report_path(ok_args));
    env().stop(ok);
  }
  // The syslog fallback leaves no fd behind: the VMM has 0-2 only (without an API socket,
  // which the probe would open before listing its fds).
  auto args = env().probe_args("audit-best-effort");
  args.helper = weak_helper;
  args.vmm_args.resize(2);  // --report PATH
  Launch l = env().launch(args);
  ASSERT_TRUE(l.ok()) << json::serialize(l.line) << "\n" << l.driver->stderr_text();
  json::object report = env().wait_for_report(env().report_path(args));
  EXPECT_EQ(json_ints(report, "fds"), (std::vector<int64_t>{0, 1, 2})) << json::serialize(report);
  env().stop(l);
}

// The same with a PID namespace, where the helper writes the record after its fork and the
// namespace init refuses on the helper's verdict, before any VMM starts.
TEST_F(AuditTest, RequiredRefusesInAPidNamespaceToo) {
  KernelAuditState audit(1);
  const std::string mounts = HelperEnv::host_mountinfo();
  PolicySpec policy = env().default_policy();
  policy.extra_lines = {"audit = required"};
  ScopedPolicy scoped(env(), policy);
  auto args = env().probe_args("audit-required-pidns");
  args.helper = helper_without_audit_write();
  args.pid_namespace = true;
  expect_write_audit_refusal(env(), args);
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
  EXPECT_EQ(HelperEnv::host_mountinfo(), mounts);
}

// With audit switched off the kernel drops user records (and still acknowledges them): a
// best_effort launch goes on as before.
TEST_F(AuditTest, AuditSwitchedOffDoesNotStopALaunch) {
  KernelAuditState audit(0);
  auto args = env().probe_args("audit-off");
  Launch l = env().launch(args);
  ASSERT_TRUE(l.ok()) << json::serialize(l.line) << "\n" << l.driver->stderr_text();
  env().wait_for_report(env().report_path(args));
  env().stop(l);
}

}  // namespace
}  // namespace sbx::it
