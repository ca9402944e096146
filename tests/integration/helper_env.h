// SPDX-License-Identifier: Apache-2.0
// Shared support for the helper's privileged integration tests: a private directory under /run
// holding a `setcap cap_sys_admin,cap_audit_write+ep` copy of sbx-nsexec, the probe VMM, images
// and a sandbox root; a netns; the root-owned test policy; and the test driver run as an
// unprivileged user. Infrastructure failures (a spawn that fails, a line that never comes) throw
// std::runtime_error, which gtest reports as a failure of the running test.
#pragma once

#include <sys/types.h>

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/protocol.h"
#include "tests/integration/time_scale.h"

namespace sbx::it {

// The whole file, or "" when it cannot be read.
std::string read_text_or_empty(const std::string& path);

// /proc/PID/status as name -> value (leading blanks of the value dropped); empty when the
// process is gone.
std::map<std::string, std::string> proc_status(pid_t pid);

// Where `pid` and every process below it stand, for a failure message when one does not answer
// in time: per process its pid, name, state and wait channel, and (read as root) its kernel
// stack.
std::string process_tree_report(pid_t pid);

// `s` without its trailing newlines and spaces (a cgroup file's one value).
std::string trimmed(std::string s);

// The running kernel's Landlock ABI (0 without Landlock), and the ABI the helper builds a
// VMM's layer for on it: the same, up to 6, the newest the layer uses. Tests whose outcome
// depends on the ABI (Debian 12's 6.1 has 2, its 6.12 has 6) expect what this one gives.
int kernel_landlock_abi();
int layer_landlock_abi();

// Whether the running kernel is at least MAJOR.MINOR.
bool kernel_at_least(int major, int minor);

inline constexpr uid_t kTestUid = 64123;
inline constexpr gid_t kTestGid = 64123;
inline constexpr std::chrono::milliseconds kTimeout = std::chrono::seconds(10);
inline constexpr const char* kSetpriv = "/usr/bin/setpriv";

// When a wait of `timeout` that began now gives up: timeout times time_scale() (time_scale.h).
// Every wait for a child, an event, a report or a file goes through it or patience_ms().
std::chrono::steady_clock::time_point deadline_after(std::chrono::milliseconds timeout);

// `setpriv` as the test user (uid and gid kTestUid/kTestGid, no supplementary groups): the
// prefix of every command line that runs something as the unprivileged caller.
std::vector<std::string> as_test_user();

// How a child's file descriptors and signals are set up. The child has exactly fds 0-2 (stdin
// /dev/null, stdout a pipe to the test, stderr a log file) plus what is named here.
struct SpawnOptions {
  std::vector<std::pair<int, int>> fd_map;  // {fd in the child, fd in the test}: dup2'd
  std::vector<int> inherit;                 // test fds kept open at the same number
  bool ignore_sigterm = false;              // SIGTERM set to SIG_IGN before exec
};

// A child process (fork + exec) whose stdout the test reads line by line with a timeout.
// Killed (SIGKILL) and reaped on destruction if still running. Single-threaded use only.
class ChildProcess {
 public:
  ChildProcess(const std::vector<std::string>& argv, const SpawnOptions& options,
               const std::string& stderr_path);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  // The next stdout line without its newline; nullopt on EOF or when the timeout passes.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout = kTimeout);
  // Everything left on stdout up to EOF (throws if EOF does not come in time).
  std::string read_all(std::chrono::milliseconds timeout = kTimeout);
  // The exit status (waitpid format); on timeout the child is killed, reaped, and nullopt
  // returned.
  std::optional<int> wait(std::chrono::milliseconds timeout = kTimeout);
  // The child's stderr so far.
  std::string stderr_text() const;

 private:
  std::optional<std::string> read_line_until(std::chrono::steady_clock::time_point deadline);

  pid_t pid_ = -1;
  bool reaped_ = false;
  int stdout_fd_ = -1;
  std::string buffer_;
  bool eof_ = false;
  std::string stderr_path_;
};

// Runs a command to completion (as root), returning its exit status; throws on timeout.
int run_command(const std::vector<std::string>& argv, std::string* output = nullptr);

// The test policy, in the file's own syntax.
struct PolicySpec {
  std::vector<std::string> vmms;
  std::vector<std::string> sandbox_roots;
  std::vector<std::string> image_roots;
  std::vector<std::string> netns_globs;
  int tmpfs_size_mb = 8;
  int rlimit_nofile = 512;
  bool allow_root_vmm = false;
  std::vector<std::string> extra_lines;  // appended verbatim (for malformed policies)
  std::string text() const;
};

// One request as the driver's command line takes it.
struct LaunchArgs {
  std::string id;
  std::string vmm;
  std::string sandbox_dir;
  std::optional<std::string> netns;
  std::vector<std::pair<std::string, std::string>> links;
  std::vector<std::string> env;
  bool pid_namespace = false;
  std::vector<std::pair<std::string, int>> pass_files;  // {path, target fd}
  // `files` (sent when `files` is set or any list is non-empty).
  bool files = false;
  std::vector<std::string> devices, read_only, read_write;
  std::optional<std::string> api_socket_dir;
  bool jail = false;
  std::string raw_file;  // --raw: these bytes instead of an encoded request
  bool empty = false;    // --empty: a zero-length datagram
  std::vector<std::string> vmm_args;
  // How the driver is spawned.
  std::string helper;    // the helper binary; empty: the fixture's setcap'd copy
  bool as_root = false;  // no setpriv: the driver and the helper run as root
  bool ignore_sigterm = false;
  std::vector<int> inherit_fds;
};

// The LAUNCH message the driver would send for `args` (for raw-protocol tests).
protocol::LaunchRequest make_request(const LaunchArgs& args);

// A driver run: its process and the launch line it printed.
struct Launch {
  std::unique_ptr<ChildProcess> driver;
  boost::json::object line;
  pid_t helper_pid() const;
  pid_t vmm_pid() const;
  bool ok() const { return line.at("error").is_null(); }
  // The error object; throws when the launch succeeded.
  const boost::json::object& error() const;
};

class HelperEnv {
 public:
  // Builds everything (see the file comment); throws std::runtime_error on failure, after
  // undoing what was done.
  HelperEnv();
  ~HelperEnv();
  HelperEnv(const HelperEnv&) = delete;
  HelperEnv& operator=(const HelperEnv&) = delete;

  const std::string& dir() const { return dir_; }        // /run/sbx-it-XXXXXX
  const std::string& helper() const { return helper_; }  // the setcap'd sbx-nsexec copy
  const std::string& probe() const { return probe_; }    // the probe copy (allowlisted)
  const std::string& sandboxes() const { return sandboxes_; }
  const std::string& images() const { return images_; }
  const std::string& work() const { return work_; }            // owned by the test user
  const std::string& root_work() const { return root_work_; }  // root 0700, for root runs
  const std::string& netns() const { return netns_; }
  const std::string& hosts_marker() const { return hosts_marker_; }
  const std::string& policy_path() const { return policy_path_; }

  PolicySpec default_policy() const;
  void write_policy(const PolicySpec& spec);
  void write_policy_text(const std::string& text);
  void restore_default_policy();

  // A request that launches the probe with a unique id and sandbox dir, the netns, links
  // vmlinux and rootfs.ext4, a small environment and --report/--api-sock in work().
  LaunchArgs probe_args(const std::string& tag);
  std::string report_path(const LaunchArgs& args) const;

  // Spawns the driver and reads its launch line.
  Launch launch(const LaunchArgs& args);
  // Reads the exit line, then reaps the driver (which must exit 0).
  boost::json::object read_exit(Launch& launch);
  // SIGTERM to the VMM, then read_exit.
  boost::json::object stop(Launch& launch);
  // Waits (polling) for the probe's report and parses it.
  boost::json::object wait_for_report(const std::string& path,
                                      std::chrono::milliseconds timeout = kTimeout) const;

  // Spawns the helper copy directly (no driver), as the test user unless as_root.
  std::unique_ptr<ChildProcess> spawn_helper(const std::vector<std::string>& args,
                                             const SpawnOptions& options, bool as_root);

  // Snapshots for "nothing changed on the host".
  static std::string host_mountinfo();
  std::vector<std::string> sandbox_root_listing() const;

  // Live (or zombie) processes of the test user.
  static std::vector<pid_t> test_user_processes();
  // Reaps orphans handed to the test process (a subreaper) until no test-user process is
  // left or the timeout passes; returns whether none is left.
  static bool wait_no_test_user_processes(std::chrono::milliseconds timeout = kTimeout);

  // Undoes what one test may have left: policy, test-user processes, sandbox dirs.
  void after_test();

  // A copy of the probe at bin/NAME with the given owner and mode (for VMM refusals).
  std::string install_vmm_copy(const std::string& name, uid_t uid, mode_t mode);

  // A root-owned 0644 file NAME in work() (readable by the test user); returns its path.
  std::string make_work_file(const std::string& name, const std::string& content);

  // A directory NAME directly under the sandbox root, owned by the test user, mode 0700 (a
  // files.read_write entry, an API socket's directory); after_test removes it.
  std::string make_caller_dir(const std::string& name);

  // A fresh path in the private dir (not created).
  std::string fresh_path(const std::string& stem);

 private:
  void set_up();
  void tear_down();

  int lock_fd_ = -1;
  std::string dir_, bin_, helper_, driver_, probe_, sandboxes_, images_, work_, root_work_, logs_;
  std::string netns_, netns_etc_dir_, hosts_marker_;
  bool netns_made_ = false, etc_netns_made_ = false;
  std::string policy_path_;
  bool policy_dir_made_ = false, policy_existed_ = false, policy_dirty_ = false;
  int counter_ = 0;
};

// RAII: writes a policy for one test and restores the default when it goes out of scope.
class ScopedPolicy {
 public:
  ScopedPolicy(HelperEnv& env, const PolicySpec& spec) : env_(env) { env_.write_policy(spec); }
  ScopedPolicy(HelperEnv& env, const std::string& text) : env_(env) {
    env_.write_policy_text(text);
  }
  ~ScopedPolicy() { env_.restore_default_policy(); }
  ScopedPolicy(const ScopedPolicy&) = delete;
  ScopedPolicy& operator=(const ScopedPolicy&) = delete;

 private:
  HelperEnv& env_;
};

// Base fixture: one HelperEnv per test suite; skips (with the reason) when not root.
class HelperEnvTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite();
  static void TearDownTestSuite();
  void SetUp() override;
  void TearDown() override;
  static HelperEnv& env() { return *env_; }

  // Launches `args` through the driver; the helper must refuse at `step` (with `err` when
  // given) and exit `exit_code`, leaving the host as it was: mount table, sandbox root, no
  // test-user process. Returns the ERROR the driver printed.
  boost::json::object expect_refused(const LaunchArgs& args, const std::string& step,
                                     std::optional<int> err, int exit_code = 125);

 private:
  static std::unique_ptr<HelperEnv> env_;
  static std::string setup_error_;
};

// JSON accessors that throw (and so fail the test) on a missing key or a wrong type.
std::string json_str(const boost::json::object& o, const char* key);
int64_t json_int(const boost::json::object& o, const char* key);
std::vector<int64_t> json_ints(const boost::json::object& o, const char* key);
std::vector<std::string> json_strs(const boost::json::object& o, const char* key);

}  // namespace sbx::it
