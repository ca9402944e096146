// SPDX-License-Identifier: Apache-2.0
// The spec parser (one test per refusal rule, each naming its field), the VMM argv per kind,
// and the LAUNCH request built from a spec.
#include "supervisor/spec.h"

#include <gtest/gtest.h>

#include <string>

namespace sbx::supervisor {
namespace {

const char* kMinimal = R"({"id":"vm-1","vmm":{"kind":"generic","binary":"/usr/bin/vmm"},
  "sandbox_dir":"/run/sbx/vm-1"})";

Spec parse_ok(const std::string& text) {
  auto r = parse_spec(text);
  if (auto* e = std::get_if<std::string>(&r)) {
    ADD_FAILURE() << *e;
    return {};
  }
  return std::get<Spec>(r);
}

// Asserts a refusal whose message names `field`.
void expect_refused(const std::string& text, const std::string& field) {
  auto r = parse_spec(text);
  auto* e = std::get_if<std::string>(&r);
  ASSERT_NE(e, nullptr) << "accepted: " << text;
  EXPECT_NE(e->find("spec: " + field + ":"), std::string::npos) << *e;
}

// The minimal spec with one top-level key added or replaced.
std::string with(const std::string& key_value) {
  std::string s = kMinimal;
  s.insert(s.rfind('}'), "," + key_value);
  return s;
}

TEST(Spec, MinimalSpecGetsTheDocumentedDefaults) {
  Spec s = parse_ok(kMinimal);
  EXPECT_EQ(s.id, "vm-1");
  EXPECT_EQ(s.kind, VmmKind::kGeneric);
  EXPECT_EQ(s.mode, Mode::kBoot);
  EXPECT_EQ(s.stop_timeout_ms, 10000u);
  EXPECT_EQ(s.ready_timeout_ms, 5000u);
  EXPECT_TRUE(s.pid_namespace);  // nothing outlives a killed supervisor unless asked
  EXPECT_FALSE(s.jail);
  EXPECT_EQ(s.stdio, Stdio::kInherit);
}

TEST(Spec, FullDesignExampleParses) {
  Spec s = parse_ok(R"({
    "id": "vm-0001",
    "vmm": {"kind": "firecracker", "binary": "/usr/bin/firecracker", "args": []},
    "mode": "boot",
    "sandbox_dir": "/run/sbx/vm-0001",
    "kernel": "/var/lib/sbx/images/vmlinux",
    "rootfs": "/var/lib/sbx/images/rootfs.ext4",
    "netns": "sbx-vm-0001",
    "api_socket": "/run/sbx/vm-0001.sock",
    "stop_timeout_ms": 10000,
    "ready_timeout_ms": 5000,
    "pid_namespace": false,
    "env": {},
    "stdio": "inherit"
  })");
  EXPECT_EQ(s.kind, VmmKind::kFirecracker);
  EXPECT_EQ(*s.netns, "sbx-vm-0001");
}

TEST(Spec, RefusesInvalidJsonAndNonObjects) {
  EXPECT_TRUE(std::holds_alternative<std::string>(parse_spec("{")));
  EXPECT_TRUE(std::holds_alternative<std::string>(parse_spec("[]")));
  EXPECT_TRUE(std::holds_alternative<std::string>(parse_spec("")));
}
TEST(Spec, RefusesUnknownKeys) {
  expect_refused(with(R"("extra":1)"), "extra");
  expect_refused(R"({"id":"a","vmm":{"kind":"generic","binary":"/v","x":1},"sandbox_dir":"/s/a"})",
                 "vmm.x");
}
TEST(Spec, RefusesMissingRequiredFields) {
  expect_refused(R"({"vmm":{"kind":"generic","binary":"/v"},"sandbox_dir":"/s/a"})", "id");
  expect_refused(R"({"id":"a","sandbox_dir":"/s/a"})", "vmm");
  expect_refused(R"({"id":"a","vmm":{"binary":"/v"},"sandbox_dir":"/s/a"})", "vmm.kind");
  expect_refused(R"({"id":"a","vmm":{"kind":"generic"},"sandbox_dir":"/s/a"})", "vmm.binary");
  expect_refused(R"({"id":"a","vmm":{"kind":"generic","binary":"/v"}})", "sandbox_dir");
}
TEST(Spec, RefusesBadIds) {
  expect_refused(R"({"id":"a/b","vmm":{"kind":"generic","binary":"/v"},"sandbox_dir":"/s"})", "id");
  expect_refused(R"({"id":"","vmm":{"kind":"generic","binary":"/v"},"sandbox_dir":"/s"})", "id");
  expect_refused(R"({"id":1,"vmm":{"kind":"generic","binary":"/v"},"sandbox_dir":"/s"})", "id");
  expect_refused(R"({"id":"a\nb","vmm":{"kind":"generic","binary":"/v"},"sandbox_dir":"/s"})",
                 "id");
}
TEST(Spec, RefusesUnknownKindAndMode) {
  expect_refused(R"({"id":"a","vmm":{"kind":"xen","binary":"/v"},"sandbox_dir":"/s/a"})",
                 "vmm.kind");
  expect_refused(with(R"("mode":"suspend")"), "mode");
}
TEST(Spec, RefusesRelativeOrDottedPaths) {
  expect_refused(R"({"id":"a","vmm":{"kind":"generic","binary":"v"},"sandbox_dir":"/s/a"})",
                 "vmm.binary");
  expect_refused(R"({"id":"a","vmm":{"kind":"generic","binary":"/v"},"sandbox_dir":"s/a"})",
                 "sandbox_dir");
  expect_refused(R"({"id":"a","vmm":{"kind":"generic","binary":"/v"},"sandbox_dir":"/s/../a"})",
                 "sandbox_dir");
  expect_refused(with(R"("kernel":"/img/../etc/shadow")"), "kernel");
  expect_refused(with(R"("rootfs":"rootfs.ext4")"), "rootfs");
  expect_refused(with(R"("api_socket":"run/a.sock")"), "api_socket");
}
TEST(Spec, RefusesWrongTypes) {
  expect_refused(with(R"("stop_timeout_ms":"10")"), "stop_timeout_ms");
  expect_refused(with(R"("ready_timeout_ms":1.5)"), "ready_timeout_ms");
  expect_refused(with(R"("pid_namespace":"yes")"), "pid_namespace");
  expect_refused(with(R"("env":[])"), "env");
  expect_refused(with(R"("env":{"A":1})"), "env.A");
  expect_refused(
      R"({"id":"a","vmm":{"kind":"generic","binary":"/v","args":"x"},"sandbox_dir":"/s/a"})",
      "vmm.args");
  expect_refused(
      R"({"id":"a","vmm":{"kind":"generic","binary":"/v","args":[1]},"sandbox_dir":"/s/a"})",
      "vmm.args[0]");
  expect_refused(with(R"("netns":5)"), "netns");
}
TEST(Spec, RefusesOutOfRangeNumbers) {
  expect_refused(with(R"("stop_timeout_ms":-1)"), "stop_timeout_ms");
  expect_refused(with(R"("stop_timeout_ms":3600001)"), "stop_timeout_ms");
  expect_refused(with(R"("ready_timeout_ms":0)"), "ready_timeout_ms");
  expect_refused(with(R"("stop_timeout_ms":18446744073709551615)"), "stop_timeout_ms");
}
TEST(Spec, RefusesLoaderAndMalformedEnvNames) {
  expect_refused(with(R"("env":{"LD_PRELOAD":"/x.so"})"), "env.LD_PRELOAD");
  expect_refused(with(R"("env":{"GCONV_PATH":"/x"})"), "env.GCONV_PATH");
  expect_refused(with(R"("env":{"1BAD":"x"})"), "env.1BAD");
  expect_refused(with(R"("env":{"A-B":"x"})"), "env.A-B");
}
TEST(Spec, RefusesBadNetnsNames) {
  expect_refused(with(R"("netns":"a/b")"), "netns");
  expect_refused(with(R"("netns":"..")"), "netns");
  expect_refused(with(R"("netns":")" + std::string(300, 'n') + "\""), "netns");
}
TEST(Spec, RefusesApiSocketRules) {
  expect_refused(R"({"id":"a","vmm":{"kind":"qemu","binary":"/v"},"sandbox_dir":"/s/a"})",
                 "api_socket");
  expect_refused(with(R"("api_socket":"/)" + std::string(120, 's') + "\""), "api_socket");
}
TEST(Spec, RefusesModeMismatches) {
  expect_refused(with(R"("snapshot":{"mem":"/img/mem"})"), "snapshot");
  expect_refused(with(R"("mode":"restore","kernel":"/img/vmlinux")"), "kernel");
  expect_refused(with(R"("mode":"restore","snapshot":{"a/b":"/img/x"})"), "snapshot.a/b");
  expect_refused(with(R"("mode":"restore","snapshot":{"rootfs.ext4":"/img/x"})"),
                 "snapshot.rootfs.ext4");
}
TEST(Spec, GracefulStopValuesDependOnTheKind) {
  Spec q =
      parse_ok(R"({"id":"a","vmm":{"kind":"qemu","binary":"/v","graceful_stop":"system_powerdown"},
    "sandbox_dir":"/s/a","api_socket":"/run/a.sock"})");
  EXPECT_EQ(q.graceful_stop, GracefulStop::kSystemPowerdown);
  expect_refused(
      R"({"id":"a","vmm":{"kind":"firecracker","binary":"/v","graceful_stop":"system_powerdown"},
    "sandbox_dir":"/s/a","api_socket":"/run/a.sock"})",
      "vmm.graceful_stop");
  expect_refused(R"({"id":"a","vmm":{"kind":"qemu","binary":"/v","graceful_stop":"halt"},
    "sandbox_dir":"/s/a","api_socket":"/run/a.sock"})",
                 "vmm.graceful_stop");
}
TEST(Spec, RefusesBadStdio) {
  expect_refused(with(R"("stdio":"file")"), "stdio");
}
TEST(Spec, RefusesTooManyArgs) {
  std::string args;
  for (int i = 0; i < 65; ++i) args += std::string(i ? "," : "") + "\"a\"";
  expect_refused(R"({"id":"a","vmm":{"kind":"generic","binary":"/v","args":[)" + args +
                     R"(]},"sandbox_dir":"/s/a"})",
                 "vmm.args");
}

std::vector<std::string> argv_for(const std::string& kind) {
  Spec s = parse_ok(
      R"({"id":"a","vmm":{"kind":")" + kind +
      R"(","binary":"/v","args":["--x"]},"sandbox_dir":"/s/a","api_socket":"/run/a.sock"})");
  return vmm_args(s);
}

TEST(VmmArgs, EachKindGetsItsApiFlag) {
  EXPECT_EQ(argv_for("firecracker"),
            (std::vector<std::string>{"--api-sock", "/run/a.sock", "--x"}));
  EXPECT_EQ(argv_for("cloud-hypervisor"),
            (std::vector<std::string>{"--api-socket", "path=/run/a.sock", "--x"}));
  EXPECT_EQ(argv_for("qemu"),
            (std::vector<std::string>{"-qmp", "unix:/run/a.sock,server=on,wait=off", "--x"}));
  EXPECT_EQ(argv_for("generic"), (std::vector<std::string>{"--x"}));
}

TEST(LaunchRequest, BootLinksKernelAndRootfs) {
  Spec s = parse_ok(with(R"("kernel":"/img/k","rootfs":"/img/r","netns":"n","env":{"A":"1"})"));
  auto req = launch_request(s);
  EXPECT_EQ(req.links,
            (std::vector<protocol::Link>{{"vmlinux", "/img/k"}, {"rootfs.ext4", "/img/r"}}));
  EXPECT_EQ(req.env, std::vector<std::string>{"A=1"});
  EXPECT_EQ(*req.netns, "n");
  EXPECT_EQ(req.vmm, "/usr/bin/vmm");
}

TEST(LaunchRequest, RestoreLinksOnlyRootfsAndSnapshotFiles) {
  Spec s = parse_ok(with(R"("mode":"restore","rootfs":"/img/r",
                            "snapshot":{"state":"/img/s","memory":"/img/m"})"));
  auto req = launch_request(s);
  EXPECT_EQ(req.links, (std::vector<protocol::Link>{
                           {"rootfs.ext4", "/img/r"}, {"memory", "/img/m"}, {"state", "/img/s"}}));
}

TEST(Spec, CgroupWithEveryLimitParsesToTheKernelValues) {
  Spec s = parse_ok(with(R"("cgroup": {"parent": "/sys/fs/cgroup/vms.slice/sbx",
    "memory_max": 536870912, "memory_high": 469762048, "memory_swap_max": 0,
    "cpu_max": "50000 100000", "cpu_weight": 100, "pids_max": 256, "cpuset_cpus": "2-3",
    "cpuset_mems": "0", "io_weight": 100})"));
  ASSERT_TRUE(s.cgroup);
  EXPECT_EQ(s.cgroup->parent, "/sys/fs/cgroup/vms.slice/sbx");
  EXPECT_EQ(s.cgroup->memory_max, "536870912");
  EXPECT_EQ(s.cgroup->memory_high, "469762048");
  EXPECT_EQ(s.cgroup->memory_swap_max, "0");
  EXPECT_EQ(s.cgroup->cpu_max, "50000 100000");
  EXPECT_EQ(s.cgroup->cpu_weight, 100u);
  EXPECT_EQ(s.cgroup->pids_max, "256");
  EXPECT_EQ(s.cgroup->cpuset_cpus, "2-3");
  EXPECT_EQ(s.cgroup->cpuset_mems, "0");
  EXPECT_EQ(s.cgroup->io_weight, 100u);
}

TEST(Spec, CgroupIsOptionalAndEveryKeyInItToo) {
  EXPECT_FALSE(parse_ok(kMinimal).cgroup);
  Spec s = parse_ok(with(R"("cgroup": {})"));
  ASSERT_TRUE(s.cgroup);
  EXPECT_EQ(s.cgroup->parent, "");  // --cgroup-parent may give it
  EXPECT_FALSE(s.cgroup->memory_max);
  Spec m =
      parse_ok(with(R"("cgroup": {"memory_max": "max", "cpu_max": "max", "pids_max": "max"})"));
  EXPECT_EQ(m.cgroup->memory_max, "max");
  EXPECT_EQ(m.cgroup->cpu_max, "max");
  EXPECT_EQ(m.cgroup->pids_max, "max");
}

TEST(Spec, CgroupRefusesUnknownKeysAndBadValuesNamingTheField) {
  expect_refused(with(R"("cgroup": 1)"), "cgroup");
  expect_refused(with(R"("cgroup": {"memory.max": 1})"), "cgroup.memory.max");
  expect_refused(with(R"("cgroup": {"parent": "relative"})"), "cgroup.parent");
  expect_refused(with(R"("cgroup": {"memory_max": -1})"), "cgroup.memory_max");
  expect_refused(with(R"("cgroup": {"memory_high": "lots"})"), "cgroup.memory_high");
  expect_refused(with(R"("cgroup": {"memory_swap_max": 1.5})"), "cgroup.memory_swap_max");
  expect_refused(with(R"("cgroup": {"cpu_max": "500 100000"})"), "cgroup.cpu_max");
  expect_refused(with(R"("cgroup": {"cpu_max": "50000 100"})"), "cgroup.cpu_max");
  expect_refused(with(R"("cgroup": {"cpu_max": "50000  100000"})"), "cgroup.cpu_max");
  expect_refused(with(R"("cgroup": {"cpu_max": "50000\n"})"), "cgroup.cpu_max");
  expect_refused(with(R"("cgroup": {"cpu_weight": 0})"), "cgroup.cpu_weight");
  expect_refused(with(R"("cgroup": {"cpu_weight": 10001})"), "cgroup.cpu_weight");
  expect_refused(with(R"("cgroup": {"pids_max": 0})"), "cgroup.pids_max");
  expect_refused(with(R"("cgroup": {"cpuset_cpus": "2-"})"), "cgroup.cpuset_cpus");
  expect_refused(with(R"("cgroup": {"cpuset_cpus": "3-2"})"), "cgroup.cpuset_cpus");
  expect_refused(with(R"("cgroup": {"cpuset_mems": "0,"})"), "cgroup.cpuset_mems");
  expect_refused(with(R"("cgroup": {"cpuset_mems": "0 1"})"), "cgroup.cpuset_mems");
  expect_refused(with(R"("cgroup": {"io_weight": 0})"), "cgroup.io_weight");
}

}  // namespace
}  // namespace sbx::supervisor

namespace sbx::supervisor {
namespace {

TEST(SpecFiles, ParsedAndSentWithTheSocketsDirectory) {
  Spec s = parse_ok(R"({"id":"vm-1","vmm":{"kind":"firecracker","binary":"/usr/bin/fc"},
    "sandbox_dir":"/run/sbx/vm-1","api_socket":"/run/sbx/vm-1.d/api.sock",
    "files":{"devices":["/dev/kvm","/dev/net/tun"],"read_only":["/usr"],
             "read_write":["/run/sbx/vm-1.d"]}})");
  ASSERT_TRUE(s.files.has_value());
  EXPECT_EQ(s.files->devices, (std::vector<std::string>{"/dev/kvm", "/dev/net/tun"}));
  auto req = launch_request(s);
  EXPECT_TRUE(req.files);
  EXPECT_EQ(req.read_only, (std::vector<std::string>{"/usr"}));
  EXPECT_EQ(req.read_write, (std::vector<std::string>{"/run/sbx/vm-1.d"}));
  EXPECT_EQ(req.api_socket_dir, std::optional<std::string>("/run/sbx/vm-1.d"));
}

TEST(SpecFiles, EmptyFilesStillConfine) {
  Spec s = parse_ok(with(R"("files":{})"));
  ASSERT_TRUE(s.files.has_value());
  EXPECT_TRUE(launch_request(s).files);
  EXPECT_FALSE(launch_request(parse_ok(kMinimal)).files);
}

TEST(SpecFiles, Refusals) {
  expect_refused(with(R"("files":[])"), "files");
  expect_refused(with(R"("files":{"other":[]})"), "files.other");
  expect_refused(with(R"("files":{"devices":"/dev/kvm"})"), "files.devices");
  expect_refused(with(R"("files":{"devices":["dev/kvm"]})"), "files.devices[0]");
  expect_refused(with(R"("files":{"read_only":["/usr/../etc"]})"), "files.read_only[0]");
  expect_refused(with(R"("files":{"read_write":["/a","/a"]})"), "files.read_write");
  expect_refused(with(R"("files":{"read_only":[1]})"), "files.read_only[0]");
}

}  // namespace
}  // namespace sbx::supervisor
