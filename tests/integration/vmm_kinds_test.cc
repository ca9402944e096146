// SPDX-License-Identifier: Apache-2.0
// The VMM kinds through the real supervisor and helper: Firecracker and Cloud Hypervisor are
// not packaged here, so their APIs are served by DOUBLES (tests/doubles/api_double.cc) that
// take the real flag syntax, record what they get and exit on the shutdown request. Checked:
// the argv each kind gets, the graceful request on stop, the fallback to signals when the
// double ignores it, and the restore mode's links (with the probe standing in as the VMM).
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/integration/supervisor_env.h"

namespace sbx::it {
namespace {

namespace json = boost::json;

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

TEST_F(VmmKindsTest, FirecrackerGetsApiSockAndStopsOnSendCtrlAltDel) {
  DoubleRun r = double_spec("firecracker", fc_, "fc", false, 10000);
  int code = -1;
  auto events = run_and_stop(r, &code);
  EXPECT_EQ(code, 0);
  EXPECT_EQ(stop_steps(events), std::vector<std::string>{"graceful_request"});
  EXPECT_EQ(last(events).at("outcome"), "exited");
  EXPECT_LT(last(events).at("t_ms").as_int64(), 5000);  // loose: well under the 10 s budget
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
