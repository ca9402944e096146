// SPDX-License-Identifier: Apache-2.0
// QEMU end to end, through the real supervisor and helper as the unprivileged test user:
// Debian's cloud kernel with a busybox initramfs (tests/vm/make-guest.sh, run as the ctest
// fixture `guest_assets`) boots under TCG on the microvm machine inside the sandbox, its TAP
// device in the test's netns. Asserted: ready (QMP accepts), the guest's console marker, ping
// from inside the netns, the stop through QMP `quit` (outcome exited, well inside the budget),
// and nothing left behind. Twice: unjailed, and jailed with Debian's dynamically linked QEMU
// given only /usr, the initramfs and /dev/net/tun.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/supervisor_env.h"

namespace sbx::it {
namespace {

namespace json = boost::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kQemu = "/usr/bin/qemu-system-x86_64";
constexpr const char* kMarker = "SBX-GUEST-READY";
constexpr const char* kTap = "sbxtap0";

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class QemuEndToEndTest : public SupervisorEnvTest {
 protected:
  void SetUp() override {
    SupervisorEnvTest::SetUp();
    if (IsSkipped()) return;
    const char* guest = std::getenv("SBX_TEST_GUEST_DIR");
    ASSERT_NE(guest, nullptr) << "SBX_TEST_GUEST_DIR is not set";
    // The guest files go beneath the policy's image root, root-owned, readable by the caller.
    for (const char* name : {"vmlinuz", "initramfs.cpio.gz"}) {
      std::string dst = env().images() + "/" + name;
      std::filesystem::copy_file(std::string(guest) + "/" + name, dst,
                                 std::filesystem::copy_options::overwrite_existing);
      ASSERT_EQ(chmod(dst.c_str(), 0644), 0);
    }
    // As a host that lets its VM users open TAP devices would: /dev/net/tun 0666 (restored).
    struct stat st;
    ASSERT_EQ(stat("/dev/net/tun", &st), 0);
    tun_mode_ = st.st_mode & 07777;
    ASSERT_EQ(chmod("/dev/net/tun", 0666), 0);
    // The TAP device lives in the test's netns and belongs to the test user.
    ASSERT_EQ(
        ns({"ip", "tuntap", "add", "dev", kTap, "mode", "tap", "user", std::to_string(kTestUid)}),
        0);
    tap_made_ = true;
    ASSERT_EQ(ns({"ip", "addr", "add", "192.0.2.1/24", "dev", kTap}), 0);
    ASSERT_EQ(ns({"ip", "link", "set", kTap, "up"}), 0);
    PolicySpec p = env().default_policy();
    p.vmms.push_back(kQemu);
    p.tmpfs_size_mb = 8;
    // What a jailed QEMU may be given: its libraries, loader and firmware under /usr, the
    // initramfs (the spec links only a kernel, a rootfs and snapshot files), the TAP clone
    // device.
    p.extra_lines = {"read_only = /usr", "read_only = " + initramfs(), "device = /dev/net/tun"};
    policy_ = std::make_unique<ScopedPolicy>(env(), p);
  }
  void TearDown() override {
    policy_.reset();
    if (tap_made_) ns({"ip", "link", "del", kTap});
    if (tun_mode_ != 0) chmod("/dev/net/tun", tun_mode_);
    SupervisorEnvTest::TearDown();
  }

  // A command inside the test's netns, as root.
  int ns(std::vector<std::string> argv, std::string* out = nullptr) {
    argv.insert(argv.begin(), {"/usr/sbin/ip", "netns", "exec", env().netns()});
    return run_command(argv, out);
  }

  std::string initramfs() { return env().images() + "/initramfs.cpio.gz"; }

  // The spec of a QEMU guest with its serial console written to `console` and QMP on `qmp`.
  json::object qemu_spec(const ProbeSpec& base, const std::string& console,
                         const std::string& qmp) {
    json::array args{
        "-accel", "tcg",
        // The guest's clocks from QEMU's virtual clock: without it a busy host makes
        // the kernel's TSC calibration against the PIT fail and the boot hang.
        "-icount", "shift=auto", "-machine", "microvm", "-m", "256", "-smp", "1", "-nodefaults",
        "-no-user-config", "-display", "none", "-no-reboot", "-serial", "file:" + console,
        // vmlinux is the link the helper made in the sandbox dir (the cwd).
        "-kernel", "vmlinux", "-initrd", initramfs(), "-append", "console=ttyS0 panic=-1",
        "-netdev", std::string("tap,id=n0,ifname=") + kTap + ",script=no,downscript=no", "-device",
        "virtio-net-device,netdev=n0"};
    json::object spec = base.json;
    spec["vmm"] = json::object{{"kind", "qemu"}, {"binary", kQemu}, {"args", args}};
    spec["kernel"] = env().images() + "/vmlinuz";
    spec.erase("rootfs");
    spec["api_socket"] = qmp;
    spec["env"] = json::object{};
    spec["stdio"] = "null";
    spec["stop_timeout_ms"] = 10000;
    spec["ready_timeout_ms"] = 10000;
    return spec;
  }

  // Runs the guest of `spec` to its end: ready, the console marker, ping from inside the netns,
  // the stop through QMP quit with outcome exited 0; then no process, mount, sandbox dir or QMP
  // socket is left. `jailed`: the VMM's root, seen from the host through /proc/PID/root, is the
  // jail. The caller checks the sandbox root's listing.
  void boot_ping_and_stop(const json::object& spec, const std::string& console,
                          const std::string& qmp, bool jailed) {
    const std::string sandbox_dir(spec.at("sandbox_dir").as_string());
    const std::string mounts_before = host_mounts();
    const auto launched = Clock::now();
    auto run = start_run(write_spec(spec));
    json::object started = run->expect_event("started");
    json::object ready = run->expect_event("ready", std::chrono::seconds(20));
    EXPECT_GE(ready.at("t_ms").as_int64(), 0);

    // The console marker: the guest kernel booted and /init brought eth0 up.
    const auto boot_deadline = deadline_after(std::chrono::seconds(90));
    while (read_file(console).find(kMarker) == std::string::npos && Clock::now() < boot_deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSERT_NE(read_file(console).find(kMarker), std::string::npos)
        << "no marker on the console:\n"
        << read_file(console) << "\nsupervisor:\n"
        << run->stderr_text();
    const auto booted = Clock::now();

    // The guest answers from inside the netns (and only there: 192.0.2.0/24 is the netns's).
    std::string ping_out;
    EXPECT_EQ(ns({"/usr/bin/ping", "-c", "3", "-W", "5", "192.0.2.2"}, &ping_out), 0) << ping_out;

    // While it runs, the host never sees the sandbox's tmpfs or the jail.
    EXPECT_EQ(host_mounts(), mounts_before);
    if (jailed) {
      // The VMM's own view: what it was given is there, the host's files are not.
      const std::string root = "/proc/" + std::to_string(started.at("pid").as_int64()) + "/root";
      for (const std::string& given : {std::string(kQemu), initramfs(), qmp, console,
                                       std::string("/dev/net/tun"), std::string("/lib64")}) {
        EXPECT_TRUE(path_exists(root + given)) << given;
      }
      for (const std::string& absent : {std::string("/etc/passwd"), std::string("/etc"),
                                        std::string("/home"), std::string("/sys"), env().work()}) {
        EXPECT_TRUE(path_exists(absent)) << absent << " is not on the host";
        EXPECT_FALSE(path_exists(root + absent)) << absent;
      }
    }

    const auto stop_start = Clock::now();
    run->terminate();
    EXPECT_EQ(run->finish(std::chrono::seconds(30)), 0) << run->stderr_text();
    const auto stop_took = Clock::now() - stop_start;
    std::vector<std::string> steps;
    for (const auto& e : run->events()) {
      if (e.at("event") == "stopping") steps.emplace_back(e.at("step").as_string());
    }
    EXPECT_EQ(steps, std::vector<std::string>{"graceful_request"});  // QMP quit sufficed
    const json::object& exited = run->events().back();
    EXPECT_EQ(exited.at("event"), "exited");
    EXPECT_EQ(exited.at("outcome"), "exited") << json::serialize(exited);
    EXPECT_EQ(exited.at("code"), 0);
    EXPECT_LT(stop_took, std::chrono::seconds(5));  // loose: well inside the 10 s budget
    using std::chrono::duration_cast;
    using std::chrono::milliseconds;
    std::printf("boot to marker %lld ms, stop %lld ms\n",
                static_cast<long long>(duration_cast<milliseconds>(booted - launched).count()),
                static_cast<long long>(duration_cast<milliseconds>(stop_took).count()));

    // Nothing left: processes, mounts, the sandbox dir, the QMP socket.
    EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
    EXPECT_FALSE(process_exists(static_cast<pid_t>(started.at("pid").as_int64())));
    EXPECT_EQ(host_mounts(), mounts_before);
    EXPECT_FALSE(path_exists(sandbox_dir));
    EXPECT_FALSE(path_exists(qmp));
  }

  mode_t tun_mode_ = 0;
  bool tap_made_ = false;
  std::unique_ptr<ScopedPolicy> policy_;
};

TEST_F(QemuEndToEndTest, GuestBootsAnswersPingAndStopsThroughQmp) {
  ProbeSpec base = probe_spec("qemu", {}, false);
  const std::string console = env().work() + "/console-" + base.id + ".log";
  const std::string qmp = env().work() + "/qmp-" + base.id + ".sock";
  const auto listing_before = env().sandbox_root_listing();
  ASSERT_NO_FATAL_FAILURE(boot_ping_and_stop(qemu_spec(base, console, qmp), console, qmp, false));
  EXPECT_EQ(env().sandbox_root_listing(), listing_before);
}

// Jailed, QEMU sees only /usr (its libraries, firmware and, through the recreated merged-/usr
// links, its loader), the kernel link's target, the initramfs, /dev/net/tun, the sandbox dir
// and a per-sandbox directory for the QMP socket and the console, at their host paths.
TEST_F(QemuEndToEndTest, JailedGuestBootsAnswersPingAndStopsThroughQmp) {
  ProbeSpec base = probe_spec("qemu-jailed", {}, false);
  base.json.erase("pid_namespace");  // the default: a PID namespace with the forwarding init
  const auto listing_before = env().sandbox_root_listing();
  const std::string dir = env().make_caller_dir(base.id + ".d");
  const std::string console = dir + "/console.log";
  const std::string qmp = dir + "/qmp.sock";
  json::object spec = qemu_spec(base, console, qmp);
  spec["jail"] = true;
  // QEMU's stderr on the supervisor's: what QEMU misses in the jail is named there.
  spec["stdio"] = "inherit";
  spec["files"] = json::object{{"read_only", json::array{"/usr", initramfs()}},
                               {"read_write", json::array{dir}},
                               {"devices", json::array{"/dev/net/tun"}}};
  ASSERT_NO_FATAL_FAILURE(boot_ping_and_stop(spec, console, qmp, true));
  // The per-sandbox directory holds only the console QEMU wrote; once the caller removes it,
  // the sandbox root is as it was.
  std::vector<std::string> left;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    left.push_back(e.path().filename().string());
  }
  EXPECT_EQ(left, std::vector<std::string>{"console.log"});
  std::filesystem::remove_all(dir);
  EXPECT_EQ(env().sandbox_root_listing(), listing_before);
}

}  // namespace
}  // namespace sbx::it
