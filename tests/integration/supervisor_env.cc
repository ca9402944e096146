// SPDX-License-Identifier: Apache-2.0
#include "tests/integration/supervisor_env.h"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace sbx::it {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using Clock = std::chrono::steady_clock;

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what);
}

// Fields after the command name in /proc/PID/stat (state is [0], ppid [1], pgrp [2], ...).
std::vector<std::string> stat_fields(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), {});
  size_t paren = stat.rfind(')');
  std::vector<std::string> out;
  if (paren == std::string::npos) return out;
  std::istringstream rest(stat.substr(paren + 1));
  std::string f;
  while (rest >> f) out.push_back(f);
  return out;
}

}  // namespace

int exit_code_of(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return -WTERMSIG(wait_status);
  return -1000 - wait_status;
}

// ---------------------------------------------------------------------------------------------
// SupervisorRun

SupervisorRun::SupervisorRun(const std::vector<std::string>& argv, const SpawnOptions& options,
                             const std::string& stderr_path)
    : child_(argv, options, stderr_path) {}

json::object SupervisorRun::parse(const std::string& line) {
  boost::system::error_code ec;
  json::value v = json::parse(line, ec);
  if (ec || !v.is_object()) fail("not a JSON object event: '" + line + "'");
  events_.push_back(v.as_object());
  return std::move(v.as_object());
}

json::object SupervisorRun::next_event(std::chrono::milliseconds timeout) {
  auto line = child_.read_line(timeout);
  if (!line) {
    fail("no event from the supervisor (pid " + std::to_string(pid()) + ") in time; its stderr:\n" +
         stderr_text() + "where it and its children stand:\n" + process_tree_report(pid()));
  }
  return parse(*line);
}

json::object SupervisorRun::expect_event(const std::string& name,
                                         std::chrono::milliseconds timeout) {
  json::object ev = next_event(timeout);
  if (json_str(ev, "event") != name) {
    fail("expected a '" + name + "' event, got " + json::serialize(ev) +
         "; the supervisor's stderr:\n" + stderr_text());
  }
  return ev;
}

void SupervisorRun::terminate() {
  if (kill(pid(), SIGTERM) != 0) fail("kill SIGTERM " + std::to_string(pid()));
}

int SupervisorRun::finish(std::chrono::milliseconds timeout) {
  std::string rest = child_.read_all(timeout);
  std::istringstream lines(rest);
  std::string line;
  while (std::getline(lines, line)) parse(line);
  return reap(timeout);
}

int SupervisorRun::reap(std::chrono::milliseconds timeout) {
  auto status = child_.wait(timeout);
  if (!status) fail("the supervisor did not exit in time (killed); stderr:\n" + stderr_text());
  return exit_code_of(*status);
}

int SupervisorRun::count(const std::string& name) const {
  int n = 0;
  for (const auto& ev : events_) {
    const auto* e = ev.if_contains("event");
    if (e != nullptr && e->is_string() && e->as_string() == name) ++n;
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// SupervisorEnvTest

std::string SupervisorEnvTest::supervisor_;
std::string SupervisorEnvTest::supervisor_dir_;

void SupervisorEnvTest::SetUp() {
  HelperEnvTest::SetUp();
  if (IsSkipped() || HasFatalFailure()) return;
  if (supervisor_dir_ == env().dir() && path_exists(supervisor_)) return;
  const char* src = std::getenv("SBX_TEST_SUPERVISOR");
  ASSERT_TRUE(src != nullptr && *src != '\0')
      << "environment variable SBX_TEST_SUPERVISOR is not set";
  // A root-owned copy in the private dir: the test user can run it whatever the build dir's
  // permissions are.
  std::string copy = env().fresh_path("sbx-supervisor");
  std::error_code ec;
  fs::copy_file(src, copy, fs::copy_options::overwrite_existing, ec);
  ASSERT_FALSE(ec) << "copy " << src << ": " << ec.message();
  ASSERT_EQ(chown(copy.c_str(), 0, 0), 0) << std::strerror(errno);
  ASSERT_EQ(chmod(copy.c_str(), 0755), 0) << std::strerror(errno);
  supervisor_ = copy;
  supervisor_dir_ = env().dir();
}

ProbeSpec SupervisorEnvTest::probe_spec(const std::string& tag,
                                        const std::vector<std::string>& probe_flags,
                                        bool with_api_socket) {
  LaunchArgs a = env().probe_args(tag);
  ProbeSpec s;
  s.id = a.id;
  s.sandbox_dir = a.sandbox_dir;
  s.report = env().report_path(a);
  json::array args{"--report", s.report};
  if (with_api_socket) {
    s.api_socket = env().work() + "/api-" + a.id + ".sock";
    args.emplace_back("--api-sock");
    args.emplace_back(s.api_socket);
  }
  for (const auto& f : probe_flags) args.emplace_back(f);
  s.json = json::object{
      {"id", s.id},
      {"vmm", json::object{{"kind", "generic"}, {"binary", env().probe()}, {"args", args}}},
      {"sandbox_dir", s.sandbox_dir},
      {"kernel", env().images() + "/vmlinux"},
      {"rootfs", env().images() + "/rootfs.ext4"},
      {"netns", env().netns()},
      {"env", json::object{{"SBX_TEST", "1"}, {"PATH", "/usr/bin"}}},
      {"stop_timeout_ms", 10000},
      {"ready_timeout_ms", patience_ms(10000)},
      // The tests written for a VMM that is the helper's own process say so; the default (a
      // PID namespace under a forwarding init) has tests of its own.
      {"pid_namespace", false},
  };
  if (with_api_socket) s.json["api_socket"] = s.api_socket;
  return s;
}

ProbeSpec SupervisorEnvTest::jailed_spec(const std::string& tag,
                                         const std::vector<std::string>& probe_flags) {
  ProbeSpec spec = probe_spec(tag, {}, false);
  spec.json.erase("pid_namespace");
  const std::string rw = env().make_caller_dir(spec.id + ".d");
  spec.report = rw + "/report.json";
  spec.api_socket = rw + "/api.sock";
  json::array args{"--report", spec.report, "--api-sock", spec.api_socket};
  for (const auto& f : probe_flags) args.emplace_back(f);
  spec.json["vmm"].as_object()["args"] = args;
  spec.json["api_socket"] = spec.api_socket;
  spec.json["jail"] = true;
  spec.json["files"] =
      json::object{{"read_only", json::array{"/usr"}}, {"read_write", json::array{rw}}};
  return spec;
}

std::string SupervisorEnvTest::write_spec(const json::object& spec) {
  const auto* id = spec.if_contains("id");
  std::string stem = id != nullptr && id->is_string() ? std::string(id->as_string()) : "spec";
  return write_spec_text(stem, json::serialize(spec));
}

std::string SupervisorEnvTest::write_spec_text(const std::string& name, const std::string& text) {
  // Names may come from deliberately invalid ids: keep the file name tame.
  std::string safe;
  for (char c : name) safe += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return env().make_work_file("spec-" + safe + "-" + std::to_string(++counter_) + ".json", text);
}

std::string SupervisorEnvTest::host_mounts() const {
  const std::string ours = "/run/netns/" + env().netns();
  std::istringstream in(HelperEnv::host_mountinfo());
  std::string out, line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, mount_point;
    fields >> id >> parent >> dev >> root >> mount_point;
    if (mount_point.starts_with("/run/netns/") && mount_point != ours &&
        line.find(" - nsfs ") != std::string::npos) {
      continue;
    }
    out += line + "\n";
  }
  return out;
}

std::string SupervisorEnvTest::stderr_path(const std::string& stem) {
  return env().fresh_path(stem + ".stderr");
}

std::vector<std::string> SupervisorEnvTest::wrap(bool as_root) const {
  std::vector<std::string> argv;
  if (!cgroup_leaf_.empty()) {
    // Root moves this very process (the shell, which then execs the supervisor): nothing it did
    // not start is moved.
    argv = {"/bin/sh", "-c", "echo $$ > \"$0\"/cgroup.procs && exec \"$@\"", cgroup_leaf_};
  }
  if (!as_root) {
    auto user = as_test_user();
    argv.insert(argv.end(), user.begin(), user.end());
  }
  return argv;
}

std::unique_ptr<SupervisorRun> SupervisorEnvTest::start_run(const std::string& spec_path,
                                                            const std::vector<std::string>& extra,
                                                            const SpawnOptions& options,
                                                            bool as_root) {
  std::vector<std::string> argv = wrap(as_root);
  argv.insert(argv.end(), {supervisor_, "run", "--spec", spec_path, "--helper", env().helper()});
  argv.insert(argv.end(), extra.begin(), extra.end());
  return std::make_unique<SupervisorRun>(argv, options, stderr_path("supervisor"));
}

ProbeSpec SupervisorEnvTest::restore_spec(const std::string& tag) {
  ProbeSpec spec = probe_spec(tag, {}, false);
  spec.json.erase("kernel");
  spec.json.erase("pid_namespace");
  spec.api_socket = env().work() + "/restore-" + spec.id + ".sock";
  spec.json["mode"] = "restore";
  spec.json["vmm"] = json::object{{"kind", "cloud-hypervisor"},
                                  {"binary", env().probe()},
                                  {"args", json::array{"--report", spec.report}},
                                  {"graceful_stop", "none"}};
  spec.json["api_socket"] = spec.api_socket;
  spec.json["snapshot"] = json::object{{"state.json", env().images() + "/sub/snap.bin"}};
  return spec;
}

std::unique_ptr<SupervisorRun> SupervisorEnvTest::start_as_test_user(
    const std::vector<std::string>& argv) {
  std::vector<std::string> full = wrap(/*as_root=*/false);
  full.insert(full.end(), argv.begin(), argv.end());
  return std::make_unique<SupervisorRun>(full, SpawnOptions{}, stderr_path("test-user-cmd"));
}

pid_t Running::vmm_pid() const {
  return static_cast<pid_t>(json_int(started, "pid"));
}

std::string events_text(const std::vector<json::object>& events) {
  std::string out;
  for (const auto& ev : events) out += json::serialize(ev) + "\n";
  return out;
}

HostSnapshot SupervisorEnvTest::snapshot() const {
  return {host_mounts(), env().sandbox_root_listing()};
}

void SupervisorEnvTest::expect_nothing_left(const HostSnapshot& before) const {
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes())
      << "left: " << ::testing::PrintToString(HelperEnv::test_user_processes());
  EXPECT_EQ(host_mounts(), before.mountinfo);
  EXPECT_EQ(env().sandbox_root_listing(), before.sandbox_root);
}

Running SupervisorEnvTest::launch(const ProbeSpec& spec, const std::vector<std::string>& extra,
                                  const SpawnOptions& options) {
  Running r;
  forget_report(spec);
  r.run = start_run(write_spec(spec.json), extra, options);
  r.started = r.run->expect_event("started");
  r.ready = r.run->expect_event("ready");
  r.report = env().wait_for_report(spec.report);
  return r;
}

json::object SupervisorEnvTest::expect_setup_failed(const ProbeSpec& spec, const std::string& step,
                                                    int err, int exit_code) {
  const HostSnapshot before = snapshot();
  auto run = start_run(write_spec(spec.json));
  json::object ev = run->next_event();
  if (json_str(ev, "event") != "exited") {
    ADD_FAILURE() << "the launch went on: " << json::serialize(ev);
    run->terminate();
  }
  const int code = run->finish();
  EXPECT_EQ(run->events().size(), 1u) << "events: " << events_text(run->events());
  EXPECT_EQ(json_str(ev, "id"), spec.id);
  EXPECT_EQ(json_str(ev, "outcome"), "setup_failed") << json::serialize(ev);
  EXPECT_EQ(json_str(ev, "step"), step) << json::serialize(ev);
  EXPECT_EQ(json_int(ev, "errno"), err) << json::serialize(ev);
  EXPECT_FALSE(json_str(ev, "detail").empty()) << json::serialize(ev);
  EXPECT_EQ(json_int(ev, "exit_status"), exit_code) << json::serialize(ev);
  EXPECT_GE(json_int(ev, "t_ms"), 0);
  EXPECT_EQ(code, exit_code) << run->stderr_text();
  expect_nothing_left(before);
  EXPECT_FALSE(path_exists(spec.api_socket));
  return ev;
}

SupervisorEnvTest::Output SupervisorEnvTest::run_supervisor(const std::vector<std::string>& args) {
  std::vector<std::string> argv = wrap(/*as_root=*/false);
  argv.push_back(supervisor_);
  argv.insert(argv.end(), args.begin(), args.end());
  ChildProcess child(argv, {}, stderr_path("supervisor-cmd"));
  Output o;
  o.out = child.read_all();
  auto status = child.wait();
  if (!status) fail("sbx-supervisor did not exit in time; stderr:\n" + child.stderr_text());
  o.code = exit_code_of(*status);
  o.err = child.stderr_text();
  return o;
}

// ---------------------------------------------------------------------------------------------
// DelegatedCgroup

namespace {

// The first cgroup2 mount point in /proc/self/mountinfo.
std::string cgroup2_mount() {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    size_t dash = line.find(" - cgroup2 ");
    if (dash == std::string::npos) continue;
    std::istringstream f(line);
    std::string id, parent, dev, root, point;
    f >> id >> parent >> dev >> root >> point;
    return point;
  }
  return {};
}

void chown_delegated(const std::string& dir) {
  for (const char* f : {"", "/cgroup.procs", "/cgroup.subtree_control", "/cgroup.threads"}) {
    std::string path = dir + f;
    if (chown(path.c_str(), kTestUid, kTestGid) != 0) {
      fail("chown " + path + ": " + std::strerror(errno));
    }
  }
}

// Kills everything in `dir` (processes the tests started) and removes it, deepest first;
// bounded. Best effort: failures are left for the caller to report.
void remove_cgroup_tree(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_directory(ec)) remove_cgroup_tree(e.path());
  }
  const auto deadline = deadline_after(std::chrono::seconds(5));
  while (rmdir(dir.c_str()) != 0 && errno == EBUSY && Clock::now() < deadline) {
    if (std::ofstream kill(dir + "/cgroup.kill"); kill) {
      kill << "1";
    } else {
      std::ifstream procs(dir + "/cgroup.procs");
      pid_t pid;
      while (procs >> pid) ::kill(pid, SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace

DelegatedCgroup::DelegatedCgroup() {
  mount_ = cgroup2_mount();
  if (mount_.empty()) fail("no cgroup2 mount on this machine");
  static int counter = 0;
  root_ = mount_ + "/sbx-it-" + std::to_string(getpid()) + "-" + std::to_string(++counter);
  if (mkdir(root_.c_str(), 0755) != 0) fail("mkdir " + root_ + ": " + std::strerror(errno));
  try {
    chown_delegated(root_);
    leaf_ = make_child("supervisor", true);
    parent_ = make_child("vms", true);
  } catch (...) {
    remove_cgroup_tree(root_);
    throw;
  }
}

DelegatedCgroup::~DelegatedCgroup() {
  remove_cgroup_tree(root_);
}

std::string DelegatedCgroup::make_child(const std::string& name, bool delegate) {
  std::string dir = root_ + "/" + name;
  if (mkdir(dir.c_str(), 0755) != 0) fail("mkdir " + dir + ": " + std::strerror(errno));
  if (delegate) chown_delegated(dir);
  return dir;
}

std::string DelegatedCgroup::proc_path(const std::string& dir) const {
  return dir.substr(mount_.size());
}

void DelegatedCgroup::move(pid_t pid, const std::string& dir) {
  std::ofstream out(dir + "/cgroup.procs");
  out << pid;
  out.flush();
  if (!out) fail("move pid " + std::to_string(pid) + " to " + dir);
}

std::string cgroup_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("0::")) return line.substr(3);
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Process facts

bool wait_sigterm_disposition(const std::vector<pid_t>& pids, bool ignored,
                              std::chrono::milliseconds timeout) {
  const auto deadline = deadline_after(timeout);
  const char* key = ignored ? "SigIgn" : "SigCgt";
  for (pid_t pid : pids) {
    while (true) {
      const auto status = proc_status(pid);
      const auto mask = status.find(key);
      if (mask == status.end()) return false;  // gone
      if ((std::stoull(mask->second, nullptr, 16) >> (SIGTERM - 1)) & 1) break;
      if (Clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  return true;
}

std::vector<pid_t> live_test_user_processes_except(pid_t except) {
  std::vector<pid_t> out;
  for (pid_t pid : HelperEnv::test_user_processes()) {
    if (pid == except) continue;
    auto f = stat_fields(pid);
    if (f.empty() || f[0] == "Z" || f[0] == "X") continue;
    out.push_back(pid);
  }
  return out;
}

pid_t session_of(pid_t pid) {
  auto f = stat_fields(pid);
  if (f.size() < 4) return -1;
  return static_cast<pid_t>(std::stol(f[3]));
}

bool process_exists(pid_t pid) {
  struct stat st;
  return stat(("/proc/" + std::to_string(pid)).c_str(), &st) == 0;
}

bool process_alive(pid_t pid) {
  auto f = stat_fields(pid);
  return !f.empty() && f[0] != "Z" && f[0] != "X";
}

void forget_report(const ProbeSpec& spec) {
  if (unlink(spec.report.c_str()) != 0 && errno != ENOENT) {
    ADD_FAILURE() << "unlink " << spec.report << ": " << std::strerror(errno);
  }
}

bool wait_not_alive(pid_t pid, std::chrono::milliseconds timeout) {
  const auto give_up = deadline_after(timeout);
  while (process_alive(pid)) {
    if (std::chrono::steady_clock::now() >= give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

int fd_count(pid_t pid) {
  DIR* d = opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (d == nullptr) fail("opendir /proc/" + std::to_string(pid) + "/fd: " + std::strerror(errno));
  int n = 0;
  while (dirent* e = readdir(d)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) ++n;
  }
  closedir(d);
  return n;
}

bool path_exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

void expect_no_exec(const json::object& report, const std::vector<std::string>& dirs) {
  const json::object& written = report.at("exec_written").as_object();
  for (const std::string& dir : dirs) {
    const json::object& d = written.at(dir).as_object();
    EXPECT_EQ(json_int(d, "write"), 0) << dir;
    EXPECT_EQ(json_int(d, "exec"), EPERM) << dir;
    EXPECT_EQ(json_int(d, "loader"), EPERM) << dir;
  }
  const json::object& memfd = report.at("exec_memfd").as_object();
  EXPECT_EQ(json_int(memfd, "memfd_create"), 0);
  EXPECT_EQ(json_int(memfd, "execveat"), EPERM);
  EXPECT_EQ(json_int(memfd, "proc_fd"), EPERM);
}

}  // namespace sbx::it
