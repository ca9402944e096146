// SPDX-License-Identifier: Apache-2.0
// Support for the supervisor's privileged integration tests: on top of the helper's fixture, a
// root-owned copy of sbx-supervisor in the private dir, specs for the probe VMM written where the
// test user can read them, and one `sbx-supervisor run` driven as the test user with its
// JSON-lines events read from its stdout.
#pragma once

#include <sys/types.h>

#include <boost/json.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/integration/helper_env.h"

namespace sbx::it {

// A spec for the probe VMM (kind generic) and the paths a test checks afterwards.
struct ProbeSpec {
  boost::json::object json;
  std::string id;
  std::string sandbox_dir;  // a direct child of the env's sandboxes()
  std::string report;       // where the probe writes its report
  std::string api_socket;   // empty when the spec has none (readiness is then immediate)
};

// The supervisor's exit as one number: the exit code, or -signal when it was killed.
int exit_code_of(int wait_status);

// One `sbx-supervisor` process and the events it printed.
class SupervisorRun {
 public:
  SupervisorRun(const std::vector<std::string>& argv, const SpawnOptions& options,
                const std::string& stderr_path);

  pid_t pid() const { return child_.pid(); }
  // The next event; throws when none comes in time or the line is not a JSON object.
  boost::json::object next_event(std::chrono::milliseconds timeout = kTimeout);
  // The next event, which must be `name` (throws otherwise, with the supervisor's stderr).
  boost::json::object expect_event(const std::string& name,
                                   std::chrono::milliseconds timeout = kTimeout);
  // SIGTERM to the supervisor: it runs the stop ladder.
  void terminate();
  // Reads the events left up to EOF, reaps the supervisor and returns exit_code_of its status;
  // throws when it does not exit in time.
  int finish(std::chrono::milliseconds timeout = kTimeout);
  // Reaps the supervisor without reading its stdout (after SIGKILL); exit_code_of its status.
  int reap(std::chrono::milliseconds timeout = kTimeout);
  // Every event read so far, in order.
  const std::vector<boost::json::object>& events() const { return events_; }
  // How many events named `name` were read.
  int count(const std::string& name) const;
  std::string stderr_text() const { return child_.stderr_text(); }

 private:
  boost::json::object parse(const std::string& line);
  ChildProcess child_;
  std::vector<boost::json::object> events_;
};

// A cgroup v2 subtree delegated to the test user, made as root under the machine's cgroup2
// mount as the cgroup v2 documentation describes (the directory and its cgroup.procs,
// cgroup.subtree_control and cgroup.threads chowned), with two children: `leaf()`, where the
// supervisor runs (it must share a delegated ancestor with the sandboxes' cgroups, and must
// not sit in their parent), and `parent()`, the sandboxes' parent. Only this subtree is
// touched; the destructor kills what the tests left in it and removes it, deepest first.
class DelegatedCgroup {
 public:
  DelegatedCgroup();  // throws std::runtime_error
  ~DelegatedCgroup();
  DelegatedCgroup(const DelegatedCgroup&) = delete;
  DelegatedCgroup& operator=(const DelegatedCgroup&) = delete;

  const std::string& mount() const { return mount_; }  // the cgroup2 mount point
  const std::string& root() const { return root_; }
  const std::string& leaf() const { return leaf_; }
  const std::string& parent() const { return parent_; }
  // A new directory under root(), owned by the test user when `delegate`, else root 0755.
  std::string make_child(const std::string& name, bool delegate);
  // Moves `pid` (a process the test started) into `dir`, as root.
  static void move(pid_t pid, const std::string& dir);
  // The path of `dir` as /proc/PID/cgroup names it ("/sbx-it-.../vms/ID").
  std::string proc_path(const std::string& dir) const;

 private:
  std::string mount_, root_, leaf_, parent_;
};

// The cgroup v2 path of pid ("0::" line of /proc/PID/cgroup); "" if it is gone.
std::string cgroup_of(pid_t pid);

// What must be the same on the host after a sandbox is gone.
struct HostSnapshot {
  std::string mountinfo;
  std::vector<std::string> sandbox_root;
};

// A sandbox launched by the supervisor, up to `ready` and the probe's report.
struct Running {
  std::unique_ptr<SupervisorRun> run;
  boost::json::object started, ready, report;
  // The VMM's own pid (with a PID namespace, the init's child; `pgid` is then the init's).
  pid_t vmm_pid() const;
};

// The events, one JSON line each (for failure messages).
std::string events_text(const std::vector<boost::json::object>& events);

// Base fixture: the helper's environment plus the supervisor copy (remade for each suite, as the
// environment is).
class SupervisorEnvTest : public HelperEnvTest {
 protected:
  void SetUp() override;

  // The root-owned 0755 supervisor copy in the private dir.
  static const std::string& supervisor() { return supervisor_; }

  // A spec that launches the probe with `probe_flags` after --report (and --api-sock when
  // `with_api_socket`), in the env's netns, linking vmlinux and rootfs.ext4, with
  // "pid_namespace": false (set it to true, or remove it for the default).
  ProbeSpec probe_spec(const std::string& tag, const std::vector<std::string>& probe_flags = {},
                       bool with_api_socket = true);
  // A jailed probe under the default PID namespace: its report and API socket in a
  // per-sandbox directory given read-write (files.read_write), /usr read-only for its libraries
  // and loader. The policy must allow `read_only = /usr`.
  ProbeSpec jailed_spec(const std::string& tag, const std::vector<std::string>& probe_flags = {});
  // A restore-mode spec (kind cloud-hypervisor, the probe as its binary, one snapshot file,
  // no kernel): the probe serves the API socket and exits on SIGTERM.
  ProbeSpec restore_spec(const std::string& tag);
  // Writes the spec as a root 0644 file in work() (readable by the test user); returns its path.
  std::string write_spec(const boost::json::object& spec);
  std::string write_spec_text(const std::string& name, const std::string& text);

  // `sbx-supervisor run --spec FILE --helper H EXTRA...` as the test user (or as root).
  std::unique_ptr<SupervisorRun> start_run(const std::string& spec_path,
                                           const std::vector<std::string>& extra = {},
                                           const SpawnOptions& options = {}, bool as_root = false);
  // Any other supervisor command line as the test user, run to completion: its exit code
  // (exit_code_of), stdout and stderr.
  struct Output {
    int code;
    std::string out, err;
  };
  Output run_supervisor(const std::vector<std::string>& args);
  // `argv` as the test user, left running, its stdout read as events (JSON lines): a manager
  // process, or `sbx-supervisor events --follow`.
  std::unique_ptr<SupervisorRun> start_as_test_user(const std::vector<std::string>& argv);

  // The host's mount table, less the nsfs mounts of other network namespaces under /run/netns:
  // those come and go with whatever else runs on the machine (`ip netns add`), and no sandbox
  // makes one. Every other mount, ours or not, is kept.
  std::string host_mounts() const;

  HostSnapshot snapshot() const;
  // After the supervisor is reaped: no process of the test user, mounts and sandbox root as
  // they were.
  void expect_nothing_left(const HostSnapshot& before) const;

  // `run` for `spec` as the test user, up to `started`, `ready` (immediate without an API
  // socket) and the probe's report.
  Running launch(const ProbeSpec& spec, const std::vector<std::string>& extra = {},
                 const SpawnOptions& options = {});

  // The supervisor ends with setup_failed at `step` (errno `err`) as its only event, exits
  // with `exit_code`, and leaves nothing behind. Returns the exited event.
  boost::json::object expect_setup_failed(const ProbeSpec& spec, const std::string& step, int err,
                                          int exit_code = 125);

  // A fresh stderr file for a supervisor run.
  std::string stderr_path(const std::string& stem);

  // From now on start_run and run_supervisor first move the supervisor (as root, before it
  // drops to the test user) into the cgroup directory `leaf`; "" stops that.
  void run_supervisor_in_cgroup(const std::string& leaf) { cgroup_leaf_ = leaf; }

 private:
  static std::string supervisor_;
  static std::string supervisor_dir_;  // the env dir the copy belongs to
  // argv prefixed with the move into cgroup_leaf_ (when set) and the switch to the test user.
  std::vector<std::string> wrap(bool as_root) const;
  int counter_ = 0;
  std::string cgroup_leaf_;
};

// Waits until every pid has SIGTERM ignored (`ignored`) or caught (otherwise); false if one is
// gone or the timeout passes. The probe sets its disposition only after it listens and reports.
bool wait_sigterm_disposition(const std::vector<pid_t>& pids, bool ignored,
                              std::chrono::milliseconds timeout = kTimeout);

// Test-user processes other than `except` that are not zombies.
std::vector<pid_t> live_test_user_processes_except(pid_t except);

// The session id of pid as this process's /proc shows it; -1 if it is gone.
pid_t session_of(pid_t pid);

bool process_exists(pid_t pid);

// The process exists and is not a zombie: a killed process this test (a subreaper) has not
// reaped still exists.
bool process_alive(pid_t pid);

// Removes the report an earlier run of the same spec left, so that waiting for the report
// waits for this run's probe (ENOENT is fine; another error fails the test).
void forget_report(const ProbeSpec& spec);

// Polls until process_alive(pid) is false; false if it is still alive at the (stretched)
// timeout.
bool wait_not_alive(pid_t pid, std::chrono::milliseconds timeout = kTimeout);

// Entries in /proc/PID/fd.
int fd_count(pid_t pid);

bool path_exists(const std::string& path);

// Every exec the probe tried (--exec-written DIR..., --exec-memfd) refused by the VMM's filter
// (EPERM), in its report: what it wrote into each of `dirs`, directly and through the dynamic
// loader, and its memfd copy, by fd and by /proc/self/fd path.
void expect_no_exec(const boost::json::object& report, const std::vector<std::string>& dirs);

}  // namespace sbx::it
