// SPDX-License-Identifier: Apache-2.0
// The VMM kinds through the real supervisor and helper: Firecracker and Cloud Hypervisor are
// not packaged here, so their APIs are served by DOUBLES (tests/doubles/api_double.cc) that
// take the real flag syntax, record what they get and exit on the shutdown request. Checked:
// the argv each kind gets, the graceful request on stop, the fallback to signals when the
// double ignores it, and the restore mode's links (with the probe standing in as the VMM).
// And the redirect of a compromised VMM: its API socket swapped for a symlink to a sibling's
// (a double of each kind, and Debian's QEMU), which the supervisor must not follow.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "tests/integration/supervisor_env.h"

namespace sbx::it {
namespace {

namespace json = boost::json;

constexpr const char* kQemu = "/usr/bin/qemu-system-x86_64";

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class VmmKindsTest : public SupervisorEnvTest {
 protected:
  void SetUp() override {
    SupervisorEnvTest::SetUp();
    if (IsSkipped()) return;
    fc_ = install_double("SBX_TEST_FC_DOUBLE", "firecracker");
    ch_ = install_double("SBX_TEST_CH_DOUBLE", "cloud-hypervisor");
    PolicySpec p = env().default_policy();
    p.vmms.push_back(fc_);
    p.vmms.push_back(ch_);
    p.vmms.push_back(kQemu);
    policy_ = std::make_unique<ScopedPolicy>(env(), p);
  }
  void TearDown() override {
    policy_.reset();
    SupervisorEnvTest::TearDown();
  }

  // A root-owned 0755 copy of the double in the private dir (the policy allowlists it).
  std::string install_double(const char* env_var, const std::string& name) {
    const char* src = std::getenv(env_var);
    if (src == nullptr) throw std::runtime_error(std::string(env_var) + " is not set");
    std::string dst = env().dir() + "/" + name;
    std::filesystem::copy_file(src, dst, std::filesystem::copy_options::overwrite_existing);
    if (chown(dst.c_str(), 0, 0) != 0 || chmod(dst.c_str(), 0755) != 0) {
      throw std::runtime_error("chown/chmod " + dst);
    }
    return dst;
  }

  struct DoubleRun {
    std::string spec_path, record, api_socket, sandbox_dir;
  };

  DoubleRun double_spec(const std::string& kind, const std::string& binary, const std::string& tag,
                        bool ignore_shutdown, int stop_timeout_ms) {
    ProbeSpec base = probe_spec(tag);
    DoubleRun r;
    r.record = env().work() + "/record-" + base.id + ".txt";
    r.api_socket = env().work() + "/" + kind + "-" + base.id + ".sock";
    r.sandbox_dir = base.sandbox_dir;
    json::object envs{{"SBX_DOUBLE_RECORD", r.record}};
    if (ignore_shutdown) envs["SBX_DOUBLE_IGNORE_SHUTDOWN"] = "1";
    json::object spec = base.json;
    spec["vmm"] = json::object{{"kind", kind}, {"binary", binary}, {"args", json::array{"--x"}}};
    spec["api_socket"] = r.api_socket;
    spec["env"] = envs;
    spec["stop_timeout_ms"] = stop_timeout_ms;
    r.spec_path = write_spec(spec);
    return r;
  }

  // Starts the double, waits for ready, stops it, and returns the supervisor's events.
  std::vector<json::object> run_and_stop(const DoubleRun& r, int* exit_code) {
    auto run = start_run(r.spec_path);
    run->expect_event("started");
    run->expect_event("ready");
    run->terminate();
    *exit_code = run->finish(std::chrono::seconds(20));
    return run->events();
  }

  std::string fc_, ch_;
  std::unique_ptr<ScopedPolicy> policy_;
};

std::vector<std::string> stop_steps(const std::vector<json::object>& events) {
  std::vector<std::string> steps;
  for (const auto& e : events) {
    if (e.at("event") == "stopping") steps.emplace_back(e.at("step").as_string());
  }
  return steps;
}

const json::object& last(const std::vector<json::object>& events) {
  return events.back();
}

// What a client that follows the path would send: the kind's whole graceful request over a
// plain connect() to `path` (a symlink to the sibling's socket); the errno of the connect.
int send_by_path(const std::string& kind, const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    close(fd);
    return err;
  }
  std::string request;
  if (kind == "qemu") {
    request = "{\"execute\":\"qmp_capabilities\"}\r\n{\"execute\":\"quit\"}\r\n";
  } else {
    const bool fc = kind == "firecracker";
    const std::string body = fc ? "{\"action_type\":\"SendCtrlAltDel\"}" : "";
    request = std::string("PUT ") + (fc ? "/actions" : "/api/v1/vmm.shutdown") +
              " HTTP/1.1\r\nHost: localhost\r\nContent-Length: " + std::to_string(body.size()) +
              "\r\n\r\n" + body;
  }
  (void)!write(fd, request.data(), request.size());
  char buf[4096];
  while (read(fd, buf, sizeof(buf)) > 0) {
  }
  close(fd);
  return 0;
}

// A compromised VMM swaps its API socket for a symlink to a sibling sandbox's socket (of the
// same kind) once it is ready. Its supervisor's graceful stop is not sent: the sibling runs on
// and got no request, the log says why, and SIGTERM follows at once. The control sends the
// same request through the same kind of symlink by path, as a client that follows it would,
// and the sibling stops.
class ApiRedirectTest : public VmmKindsTest {
 protected:
  // The sibling: a double of `kind`, or with `qemu` Debian's QEMU with no machine, its QMP
  // the API socket.
  DoubleRun sibling_spec(const std::string& kind) {
    if (kind != "qemu") {
      return double_spec(kind, kind == "firecracker" ? fc_ : ch_, "victim-" + kind, false, 10000);
    }
    DoubleRun r = double_spec("qemu", kQemu, "victim-qemu", false, 10000);
    json::object spec = json::parse(read_file(r.spec_path)).as_object();
    spec["vmm"].as_object()["args"] =
        json::array{"-machine", "none", "-nodefaults", "-no-user-config", "-display", "none"};
    spec["env"] = json::object{};
    spec["stdio"] = "null";
    r.spec_path = write_spec(spec);
    return r;
  }

  // `hard_link`: the swap is a hard link to the sibling's socket inode, so the path has no
  // symlink and is a socket: what refuses it is its listener, outside the sandbox's session.
  void redirect(const std::string& kind, bool hard_link = false) {
    DoubleRun victim = sibling_spec(kind);
    auto victim_run = start_run(victim.spec_path);
    const int64_t victim_pid = json_int(victim_run->expect_event("started"), "pid");
    victim_run->expect_event("ready");

    // The attacker: the probe, taking the kind's API flag, which swaps its socket once the
    // supervisor's readiness connection came.
    ProbeSpec base = probe_spec(
        "evil-" + kind,
        {hard_link ? "--swap-api-sock-hardlink-to" : "--swap-api-sock-to", victim.api_socket},
        false);
    const std::string evil_socket = env().work() + "/evil-" + base.id + ".sock";
    json::object spec = base.json;
    spec["vmm"].as_object()["kind"] = kind;
    spec["api_socket"] = evil_socket;
    spec["stop_timeout_ms"] = 10000;
    auto evil = start_run(write_spec(spec));
    evil->expect_event("started");
    evil->expect_event("ready");
    env().wait_for_report(base.report);
    struct stat st;
    const auto deadline = deadline_after(std::chrono::seconds(10));
    struct stat victim_st {};
    ASSERT_EQ(stat(victim.api_socket.c_str(), &victim_st), 0);
    auto swapped = [&] {
      if (lstat(evil_socket.c_str(), &st) != 0) return false;
      return hard_link ? st.st_ino == victim_st.st_ino : S_ISLNK(st.st_mode);
    };
    while (!swapped() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_TRUE(swapped()) << "the attacker did not swap its socket";

    evil->terminate();
    EXPECT_EQ(evil->finish(std::chrono::seconds(20)), 0) << evil->stderr_text();
    const auto& events = evil->events();
    EXPECT_EQ(stop_steps(events), (std::vector<std::string>{"graceful_request", "sigterm"}));
    int64_t graceful_t = -1, sigterm_t = -1;
    for (const auto& e : events) {
      if (e.at("event") != "stopping") continue;
      (e.at("step") == "sigterm" ? sigterm_t : graceful_t) = e.at("t_ms").as_int64();
    }
    EXPECT_LT(sigterm_t - graceful_t, 1000) << "SIGTERM waited for half the budget";
    const std::string log = evil->stderr_text();
    const std::string why =
        hard_link ? "graceful request not sent: refused: " + evil_socket + " is served by pid " +
                        std::to_string(victim_pid) + " of session " + std::to_string(victim_pid) +
                        ", not by a process of this sandbox"
                  : "graceful request not sent: open " + evil_socket + " (a symlink: not followed)";
    EXPECT_NE(log.find(why), std::string::npos) << log;
    // The sibling got nothing and runs on.
    if (kind != "qemu") EXPECT_EQ(read_file(victim.record).find("request"), std::string::npos);
    EXPECT_EQ(victim_run->count("exited"), 0);
    EXPECT_TRUE(process_alive(victim_run->pid()));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_EQ(victim_run->count("exited"), 0);

    // Control: the same kind of link, reached by a client that connects by path.
    const std::string link = env().work() + "/control-link-" + kind + ".sock";
    ASSERT_EQ(hard_link ? ::link(victim.api_socket.c_str(), link.c_str())
                        : symlink(victim.api_socket.c_str(), link.c_str()),
              0);
    EXPECT_EQ(send_by_path(kind, link), 0);
    unlink(link.c_str());
    json::object exited = victim_run->expect_event("exited", std::chrono::seconds(10));
    EXPECT_EQ(json_str(exited, "outcome"), "exited") << json::serialize(exited);
    EXPECT_EQ(victim_run->finish(), 0);
    if (kind != "qemu") EXPECT_NE(read_file(victim.record).find("request PUT"), std::string::npos);
    EXPECT_TRUE(HelperEnv::wait_no_test_user_processes());
  }
};

TEST_F(ApiRedirectTest, FirecrackerStopIsNotSentToASiblingsSocket) {
  redirect("firecracker");
}

TEST_F(ApiRedirectTest, CloudHypervisorStopIsNotSentToASiblingsSocket) {
  redirect("cloud-hypervisor");
}

TEST_F(ApiRedirectTest, QemuQuitIsNotSentToASiblingsSocket) {
  redirect("qemu");
}

TEST_F(ApiRedirectTest, AHardLinkToASiblingsSocketIsRefusedByItsListener) {
  redirect("firecracker", true);
}

// Readiness pointed the same way: an API socket path that is a symlink to a sibling's socket
// from the start is never ready; the control connects through the same symlink.
TEST_F(ApiRedirectTest, ASymlinkToASiblingsSocketIsNeverReady) {
  DoubleRun victim = sibling_spec("firecracker");
  auto victim_run = start_run(victim.spec_path);
  victim_run->expect_event("started");
  victim_run->expect_event("ready");
  ProbeSpec base = probe_spec("evil-ready", {"--link-api-sock-to", victim.api_socket}, false);
  json::object spec = base.json;
  spec["vmm"].as_object()["kind"] = "firecracker";
  spec["api_socket"] = env().work() + "/evil-ready.sock";
  // Long enough for the probe to have made its link (stretched under emulation): the
  // supervisor logs only the last reason it was not ready.
  spec["ready_timeout_ms"] = patience_ms(1000);
  auto evil = start_run(write_spec(spec));
  evil->expect_event("started");
  json::object stopping = evil->expect_event("stopping", std::chrono::seconds(10));
  EXPECT_EQ(json_str(stopping, "why"), "not_ready");
  evil->finish(std::chrono::seconds(20));
  EXPECT_EQ(evil->count("ready"), 0);
  const std::string log = evil->stderr_text();
  EXPECT_NE(log.find("not ready: open " + std::string(spec["api_socket"].as_string()) +
                     " (a symlink: not followed)"),
            std::string::npos)
      << log;
  // Control: a client that follows the path reaches the sibling.
  const std::string link = env().work() + "/control-ready-link.sock";
  ASSERT_EQ(symlink(victim.api_socket.c_str(), link.c_str()), 0);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, link.c_str(), link.size());
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << strerror(errno);
  close(fd);
  unlink(link.c_str());
  victim_run->terminate();
  EXPECT_EQ(victim_run->finish(), 0);
}

TEST_F(VmmKindsTest, FirecrackerGetsApiSockAndStopsOnSendCtrlAltDel) {
  DoubleRun r = double_spec("firecracker", fc_, "fc", false, 10000);
  int code = -1;
  auto events = run_and_stop(r, &code);
  EXPECT_EQ(code, 0);
  EXPECT_EQ(stop_steps(events), std::vector<std::string>{"graceful_request"});
  EXPECT_EQ(last(events).at("outcome"), "exited");
  // Loose: well under the 10 s budget (stretched under emulation, where the steps say it).
  EXPECT_LT(last(events).at("t_ms").as_int64(), patience_ms(5000));
  std::string rec = read_file(r.record);
  EXPECT_NE(rec.find("argv --api-sock " + r.api_socket + " --x\n"), std::string::npos) << rec;
  EXPECT_NE(rec.find("request PUT /actions HTTP/1.1 body {\"action_type\":\"SendCtrlAltDel\"}"),
            std::string::npos)
      << rec;
  EXPECT_FALSE(path_exists(r.api_socket));  // the supervisor removes the VMM's socket
  EXPECT_FALSE(path_exists(r.sandbox_dir));
}

TEST_F(VmmKindsTest, CloudHypervisorGetsApiSocketPathAndStopsOnVmmShutdown) {
  DoubleRun r = double_spec("cloud-hypervisor", ch_, "ch", false, 10000);
  int code = -1;
  auto events = run_and_stop(r, &code);
  EXPECT_EQ(code, 0);
  EXPECT_EQ(stop_steps(events), std::vector<std::string>{"graceful_request"});
  std::string rec = read_file(r.record);
  EXPECT_NE(rec.find("argv --api-socket path=" + r.api_socket + " --x\n"), std::string::npos)
      << rec;
  EXPECT_NE(rec.find("request PUT /api/v1/vmm.shutdown HTTP/1.1"), std::string::npos) << rec;
}

TEST_F(VmmKindsTest, IgnoredGracefulRequestFallsBackToSigterm) {
  DoubleRun r = double_spec("firecracker", fc_, "fc-ignore", true, 2000);
  int code = -1;
  auto events = run_and_stop(r, &code);
  EXPECT_EQ(stop_steps(events), (std::vector<std::string>{"graceful_request", "sigterm"}));
  EXPECT_EQ(last(events).at("outcome"), "signaled");
  EXPECT_EQ(last(events).at("signal"), 15);
  EXPECT_EQ(code, 143);
  // SIGTERM came at half the budget, not before.
  int64_t graceful_t = 0, sigterm_t = 0;
  for (const auto& e : events) {
    if (e.at("event") != "stopping") continue;
    (e.at("step") == "sigterm" ? sigterm_t : graceful_t) = e.at("t_ms").as_int64();
  }
  EXPECT_GE(sigterm_t - graceful_t, 1000 - 1);
  EXPECT_NE(read_file(r.record).find("request PUT /actions"), std::string::npos);
}

TEST_F(VmmKindsTest, GracefulStopNoneGoesStraightToSigterm) {
  DoubleRun r = double_spec("cloud-hypervisor", ch_, "ch-none", false, 10000);
  json::object spec = json::parse(read_file(r.spec_path)).as_object();
  spec["vmm"].as_object()["graceful_stop"] = "none";
  std::string path = write_spec(spec);
  r.spec_path = path;
  int code = -1;
  auto events = run_and_stop(r, &code);
  EXPECT_EQ(stop_steps(events), std::vector<std::string>{"sigterm"});
  EXPECT_EQ(code, 143);
  EXPECT_EQ(read_file(r.record).find("request"), std::string::npos);
}

TEST_F(VmmKindsTest, RestoreModeLinksOnlyRootfsAndSnapshotFiles) {
  // The probe accepts --api-socket path=S, so it stands in for Cloud Hypervisor here and
  // reports the links it sees.
  ProbeSpec base = probe_spec("restore", {}, false);
  std::string sock = env().work() + "/restore-" + base.id + ".sock";
  json::object spec = base.json;
  spec.erase("kernel");
  spec["mode"] = "restore";
  spec["vmm"] = json::object{{"kind", "cloud-hypervisor"},
                             {"binary", env().probe()},
                             {"args", json::array{"--report", base.report}},
                             {"graceful_stop", "none"}};
  spec["api_socket"] = sock;
  spec["snapshot"] = json::object{{"state.json", env().images() + "/sub/snap.bin"}};
  auto run = start_run(write_spec(spec));
  run->expect_event("started");
  run->expect_event("ready");
  json::object report = env().wait_for_report(base.report);
  json::object links = report.at("links").as_object();
  EXPECT_EQ(links.size(), 2u) << json::serialize(links);
  EXPECT_EQ(links.at("rootfs.ext4"), json::value(env().images() + "/rootfs.ext4"));
  EXPECT_EQ(links.at("state.json"), json::value(env().images() + "/sub/snap.bin"));
  EXPECT_FALSE(links.contains("vmlinux"));
  std::vector<std::string> argv;
  for (const auto& a : report.at("argv").as_array()) argv.emplace_back(a.as_string());
  ASSERT_GE(argv.size(), 3u);
  EXPECT_EQ(argv[1], "--api-socket");
  EXPECT_EQ(argv[2], "path=" + sock);
  run->terminate();
  EXPECT_EQ(run->finish(), 0);
}

}  // namespace
}  // namespace sbx::it
