// SPDX-License-Identifier: Apache-2.0
// The fault matrix (issue 22): a real `sbx-supervisor run` as the test user, with the setcap'd
// helper copy and the probe VMM, under strace: a root-owned copy holding cap_sys_ptrace, run
// by setpriv as the test user so that setpriv's own calls are not traced (the helper keeps its
// file capabilities under a tracer that holds CAP_SYS_PTRACE, as under one that runs as root).
// One launch per mode is recorded with `strace -f`; then each
// chosen syscall occurrence is made to fail once (`-e inject=SYSCALL:error=ERRNO:when=N`, with
// the errno a real failure there gives) and to be a SIGKILL (`:signal=SIGKILL`), and after each
// run the test asserts that the supervisor exited 125/126/127 or with the VMM's own status (or
// was the process killed), within its budget; that a launch that failed before the VMM ran
// names its step; that the host's mount table and sandbox root are as they were and no process
// or cgroup of the sandbox is left; and that the helper's refusal is in the audit trail.
//
// strace counts `when=N` per traced process: an injection hits the N-th call of that syscall in
// every process that makes one (the supervisor, the helper, its PID-namespace init, the VMM).
// The candidates are the first few calls of each syscall in the supervisor, the helper and the
// init as recorded; each run names what it hits. CI runs a deterministic sample of them
// (SBX_FAULTS_PER_MODE); SBX_FAULTS_FULL=1 runs every candidate of the first
// SBX_FAULTS_OCCURRENCES (default 3) calls of each syscall.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/steps.h"
#include "tests/integration/audit_reader.h"
#include "tests/integration/helper_env.h"
#include "tests/integration/supervisor_env.h"

namespace sbx::it {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr const char* kStrace = "/usr/bin/strace";
// A run that takes longer than this is a hang: the supervisor's own budgets (ready 5 s, stop
// 3 s, 1 s more before `lost`) all end well inside it.
constexpr milliseconds kRunBudget = std::chrono::seconds(25);

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : fallback;
}

// Syscalls left out of the matrix: the ones that cannot fail in a way a program handles (exit,
// getpid, sigreturn), the allocator's and the C++ runtime's (an mmap or brk that fails is
// std::bad_alloc, which ends any C++ program), the tracer's own marker (execve, made by setpriv
// before the supervisor runs) and the per-thread setup of the C library.
const std::set<std::string>& skipped_syscalls() {
  static const std::set<std::string> s = {
      "exit",         "exit_group",   "rt_sigreturn",    "restart_syscall",
      "getpid",       "getppid",      "gettid",          "getuid",
      "geteuid",      "getgid",       "getegid",         "brk",
      "mmap",         "munmap",       "mprotect",        "madvise",
      "mremap",       "arch_prctl",   "set_tid_address", "set_robust_list",
      "rseq",         "execve",       "clock_gettime",   "sched_yield",
      "getrandom",    "rt_sigaction", "rt_sigprocmask",  "sigaltstack",
      "futex",        "uname",        "readlink",        "getcwd",
      "gettimeofday", "time",         "umask",
  };
  return s;
}

// The errnos a real failure of `name` gives; occurrences take them in turn.
std::vector<std::string> errnos_for(const std::string& name) {
  static const std::map<std::string, std::vector<std::string>> table = {
      // New fds: the fd table is full, or the kernel is out of memory.
      {"openat", {"EMFILE", "ENOMEM"}},
      {"openat2", {"EMFILE", "ENOMEM"}},
      {"open", {"EMFILE"}},
      {"socket", {"EMFILE", "ENOMEM"}},
      {"socketpair", {"EMFILE"}},
      {"pipe2", {"EMFILE"}},
      {"dup", {"EMFILE"}},
      {"dup2", {"EMFILE"}},
      {"dup3", {"EMFILE"}},
      {"fcntl", {"EMFILE"}},
      {"pidfd_open", {"EMFILE", "ENOMEM"}},
      {"signalfd4", {"EMFILE"}},
      {"accept4", {"EMFILE"}},
      {"memfd_create", {"EMFILE"}},
      {"landlock_create_ruleset", {"EMFILE", "ENOMEM"}},
      {"fsopen", {"EMFILE", "ENOMEM"}},
      {"fsmount", {"ENOMEM", "EMFILE"}},
      {"open_tree", {"ENOMEM", "EMFILE"}},
      // Mounts and namespaces: out of memory (or, for a tmpfs, of space).
      {"fsconfig", {"ENOMEM"}},
      {"move_mount", {"ENOMEM"}},
      {"mount", {"ENOMEM"}},
      {"mount_setattr", {"ENOMEM"}},
      {"umount2", {"ENOMEM"}},
      {"pivot_root", {"ENOMEM"}},
      {"unshare", {"ENOMEM"}},
      {"setns", {"ENOMEM"}},
      {"clone", {"ENOMEM", "EAGAIN"}},
      {"clone3", {"ENOMEM", "EAGAIN"}},
      {"vfork", {"ENOMEM"}},
      // The filesystem: full.
      {"mkdir", {"ENOSPC"}},
      {"mkdirat", {"ENOSPC"}},
      {"symlinkat", {"ENOSPC"}},
      {"linkat", {"ENOSPC"}},
      {"write", {"ENOSPC", "EPIPE", "EIO"}},
      {"pwrite64", {"ENOSPC", "EIO"}},
      // Sockets and pipes: an I/O error, or a signal (restartable waits).
      {"sendmsg", {"EIO", "ENOBUFS"}},
      {"sendto", {"EIO", "ENOBUFS"}},
      {"recvmsg", {"EIO", "ENOMEM"}},
      {"recvfrom", {"EIO", "ENOMEM"}},
      {"read", {"EIO"}},
      {"pread64", {"EIO"}},
      {"connect", {"EAGAIN", "ENOMEM"}},
      {"poll", {"ENOMEM"}},
      {"ppoll", {"ENOMEM"}},
      {"nanosleep", {"EINTR"}},
      {"clock_nanosleep", {"EINTR"}},
      {"rt_sigtimedwait", {"EINTR"}},
      {"close", {"EIO"}},
      // No errno a real call could return here: the waits (the supervisor and the init install
      // no handler, so nothing interrupts them; WNOHANG never sleeps), and the sandbox dir's
      // rmdir, whose failure leaves the (empty) dir by design. SIGKILL only.
      {"waitid", {}},
      {"wait4", {}},
      {"rmdir", {}},
      {"getdents64", {"EIO", "ENOMEM"}},
  };
  auto it = table.find(name);
  if (it != table.end()) return it->second;
  return {"ENOMEM"};  // anything else: the kernel out of memory
}

// The steps the helper can fail at after its audit record is sent (in the VMM's process, or
// its init): a failure there is logged through syslog only (docs/audit.md).
bool step_can_follow_audit_record(const std::string& step) {
  static const std::set<std::string> after = {
      "drop_capabilities", "no_new_privs", "install_seccomp", "landlock",
      "chdir_sandbox",     "prepare_fds",  "exec_vmm",        "fork_vmm"};
  return after.count(step) != 0;
}

// The steps before the request is read: a refusal there has no VM to name in its record (or,
// at check_invocation, no record), so the matrix cannot tell it from another run's; the audit
// suite covers them.
bool step_before_request(const std::string& step) {
  return step == "check_invocation" || step == "load_policy" || step == "read_request";
}

// The supervisor's own steps (the helper's are in common/steps.cc).
bool supervisor_step(const std::string& step) {
  return step == "spawn_helper" || step == "control_socket" || step == "create_cgroup" ||
         step == "enter_cgroup" || step == "validate_request";
}

// Syscalls the audit record goes out by: failing one of them loses the record by design (it
// then goes to syslog, or nowhere when the helper is killed).
bool audit_transport(const std::string& name) {
  static const std::set<std::string> s = {"socket", "sendmsg", "sendto", "recvmsg",   "recvfrom",
                                          "bind",   "connect", "close",  "setsockopt"};
  return s.count(name) != 0;
}

// One syscall made by a traced process, as strace printed it.
struct Call {
  std::string name;
  std::string line;
  int occurrence;  // strace's count of `name` in this process (when=N), from 1
};

struct TracedProcess {
  pid_t pid = 0;
  std::string role;  // setpriv, supervisor, helper, init, vmm, child
  std::vector<Call> calls;
  std::map<std::string, int> counts;
  std::map<std::string, int> role_counts;  // calls of each syscall made in the current role
  std::string pending;                     // an unfinished call's start, until it resumes
};

// A point to inject at: the N-th call of `syscall` in each traced process, what it hits as
// recorded, and the fault.
struct Injection {
  std::string syscall;
  int when = 0;
  std::string fault;  // "error=ENOMEM", "signal=SIGKILL"
  std::vector<std::string> hits;
  bool is_signal() const { return fault.starts_with("signal="); }
  std::string label() const { return syscall + ":" + fault + ":when=" + std::to_string(when); }
};

// Parses `strace -f -o FILE` output (a pid before each line) into the processes' calls, with
// each process's role from what it executed or who made it.
class TraceParser {
 public:
  TraceParser(std::string supervisor, std::string helper)
      : supervisor_(std::move(supervisor)), helper_(std::move(helper)) {}

  std::map<pid_t, TracedProcess> parse(const std::string& path) {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) take(line);
    return procs_;
  }

 private:
  void take(const std::string& line) {
    std::istringstream s(line);
    pid_t pid = 0;
    if (!(s >> pid)) return;
    size_t at = line.find_first_not_of(' ', line.find(' '));
    if (at == std::string::npos) return;
    std::string rest = line.substr(at);
    TracedProcess& p = process(pid);
    if (rest.starts_with("<...")) {  // "<... NAME resumed> ...) = RET"
      std::istringstream r(rest.substr(5));
      std::string name;
      r >> name;
      resumed(p, name, p.pending + rest.substr(rest.find('>') + 1));
      return;
    }
    if (rest.starts_with("---") || rest.starts_with("+++")) return;
    size_t paren = rest.find('(');
    if (paren == std::string::npos) return;
    std::string name = rest.substr(0, paren);
    if (name.empty() || name.find(' ') != std::string::npos) return;
    p.counts[name] += 1;
    p.role_counts[name] += 1;
    p.calls.push_back({name, p.role + ": " + rest, p.counts[name]});
    if (size_t u = rest.find(" <unfinished"); u != std::string::npos) {
      p.pending = rest.substr(0, u);
    } else {
      resumed(p, name, rest);
    }
  }

  // A call that returned: an exec changes the role, a fork makes a process of the parent's.
  void resumed(TracedProcess& p, const std::string& name, const std::string& rest) {
    size_t eq = rest.rfind(" = ");
    if (eq == std::string::npos) return;
    long ret = std::strtol(rest.c_str() + eq + 3, nullptr, 10);
    if ((name == "execve" || name == "execveat") && ret == 0) {
      std::string role = "vmm";
      if (name == "execve") {
        // The path executed is the first argument (setpriv's argv names the supervisor too).
        role = rest.starts_with("execve(\"" + supervisor_ + '"') ? "supervisor"
               : rest.starts_with("execve(\"" + helper_ + '"')   ? "helper"
               : rest.find("setpriv") != std::string::npos       ? "setpriv"
                                                                 : "other";
      }
      p.role = role;
      p.role_counts.clear();
    } else if ((name == "clone" || name == "clone3" || name == "vfork" || name == "fork") &&
               ret > 0) {
      TracedProcess& child = process(static_cast<pid_t>(ret));
      child.role = p.role == "helper" ? "init" : p.role == "init" ? "init-child" : "child";
    }
  }

  TracedProcess& process(pid_t pid) {
    auto [it, made] = procs_.try_emplace(pid);
    if (made) {
      it->second.pid = pid;
      it->second.role = procs_.size() == 1 ? "setpriv" : "child";
    }
    return it->second;
  }

  std::string supervisor_, helper_;
  std::map<pid_t, TracedProcess> procs_;
};

enum class Mode { kPlain, kFiles, kJail, kCgroup, kNoPidNamespace, kRestore };

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::kPlain:
      return "plain";
    case Mode::kFiles:
      return "files";
    case Mode::kJail:
      return "jail";
    case Mode::kCgroup:
      return "cgroup";
    case Mode::kNoPidNamespace:
      return "no-pid-namespace";
    case Mode::kRestore:
      return "restore";
  }
  return "?";
}

// What one supervisor run under strace did.
struct RunOutcome {
  bool hung = false;
  int code = 0;  // exit_code_of: -signal when killed
  std::vector<json::object> events;
  std::string stderr_text;
  bool started() const { return has("started"); }
  bool has(const std::string& name) const {
    for (const auto& e : events) {
      const auto* v = e.if_contains("event");
      if (v != nullptr && v->is_string() && v->as_string() == name) return true;
    }
    return false;
  }
  const json::object* exited() const {
    for (const auto& e : events) {
      const auto* v = e.if_contains("event");
      if (v != nullptr && v->is_string() && v->as_string() == "exited") return &e;
    }
    return nullptr;
  }
};

class FaultMatrixTest : public SupervisorEnvTest {
 protected:
  void SetUp() override {
    SupervisorEnvTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    struct stat st;
    ASSERT_EQ(stat(kStrace, &st), 0) << kStrace << " is needed (apt-get install strace)";
    // The tracer runs as the test user, started by setpriv untraced, so no call of setpriv's is
    // counted ahead of the supervisor's; a copy of strace with cap_sys_ptrace is what lets the
    // helper keep its file capabilities under it (the kernel grants them to a traced exec only
    // when the tracer holds CAP_SYS_PTRACE).
    if (strace_.empty() || !path_exists(strace_)) {
      strace_ = env().fresh_path("strace");
      ASSERT_NO_THROW(fs::copy_file(kStrace, strace_));
      ASSERT_EQ(chmod(strace_.c_str(), 0755), 0);
      std::string out;
      ASSERT_EQ(run_command({"/sbin/setcap", "cap_sys_ptrace+ep", strace_}, &out), 0) << out;
    }
    PolicySpec policy = env().default_policy();
    policy.extra_lines = {"read_only = /usr"};
    env().write_policy(policy);
  }
  void TearDown() override {
    SupervisorEnvTest::TearDown();
    run_supervisor_in_cgroup("");
    cgroup_.reset();
  }

  ProbeSpec spec_for(Mode mode, const std::string& tag) {
    ProbeSpec spec;
    switch (mode) {
      case Mode::kPlain:
      case Mode::kCgroup:
        spec = probe_spec(tag);
        spec.json.erase("pid_namespace");
        break;
      case Mode::kNoPidNamespace:
        spec = probe_spec(tag);
        break;
      case Mode::kFiles:
        spec = jailed_spec(tag);
        spec.json.erase("jail");
        break;
      case Mode::kJail:
        spec = jailed_spec(tag);
        break;
      case Mode::kRestore:
        spec = restore_spec(tag);
        break;
    }
    if (mode == Mode::kCgroup) spec.json["cgroup"] = json::object{{"parent", cgroup_->parent()}};
    spec.json["ready_timeout_ms"] = 5000;
    spec.json["stop_timeout_ms"] = 3000;
    return spec;
  }

  void use_mode(Mode mode) {
    if (mode == Mode::kCgroup) {
      cgroup_ = std::make_unique<DelegatedCgroup>();
      run_supervisor_in_cgroup(cgroup_->leaf());
    }
  }

  std::vector<std::string> cgroup_children() const {
    std::vector<std::string> out;
    if (!cgroup_) return out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(cgroup_->parent(), ec)) {
      if (e.is_directory(ec)) out.push_back(e.path().filename());
    }
    return out;
  }

  // The supervisor under strace as the test user: `strace_args` go before the command.
  RunOutcome run_traced(const ProbeSpec& spec, const std::vector<std::string>& strace_args) {
    std::vector<std::string> argv;
    if (cgroup_) {
      argv = {"/bin/sh", "-c", "echo $$ > \"$0\"/cgroup.procs && exec \"$@\"", cgroup_->leaf()};
    }
    auto user = as_test_user();
    argv.insert(argv.end(), user.begin(), user.end());
    argv.push_back(strace_);
    argv.insert(argv.end(), strace_args.begin(), strace_args.end());
    argv.emplace_back("--");
    argv.insert(argv.end(),
                {supervisor(), "run", "--spec", write_spec(spec.json), "--helper", env().helper()});
    const auto deadline = Clock::now() + kRunBudget;
    auto left = [&] {
      return std::max(milliseconds(1),
                      std::chrono::duration_cast<milliseconds>(deadline - Clock::now()));
    };
    SupervisorRun run(argv, {}, stderr_path("faults"));
    RunOutcome out;
    bool stopped = false;
    while (Clock::now() < deadline) {
      json::object ev;
      try {
        ev = run.next_event(left());
      } catch (const std::exception&) {
        break;  // EOF (or garbage, which the checks below report), or the budget is spent
      }
      const std::string name = json_str(ev, "event");
      if (name == "ready" && !stopped) {
        // The supervisor is strace's child (setpriv exec'd it in place).
        std::ifstream children("/proc/" + std::to_string(run.pid()) + "/task/" +
                               std::to_string(run.pid()) + "/children");
        pid_t supervisor_pid = 0;
        if (children >> supervisor_pid && supervisor_pid > 0) kill(supervisor_pid, SIGTERM);
        stopped = true;
      }
      if (name == "exited") break;
    }
    try {
      out.code = run.finish(left());
    } catch (const std::exception&) {
      out.hung = true;  // finish killed strace; the tracees go on untraced and are killed below
    }
    out.events = run.events();
    out.stderr_text = run.stderr_text();
    return out;
  }

  // The host as the launch found it, after `outcome`; `context` names the run in failures.
  void check_run(const Injection* inj, const ProbeSpec& spec, const RunOutcome& o,
                 const HostSnapshot& before, AuditListener* audit) {
    const std::string context =
        (inj != nullptr ? inj->label() : std::string("recording")) + "\nevents:\n" +
        events_text(o.events) + "stderr (end):\n" +
        o.stderr_text.substr(o.stderr_text.size() > 3000 ? o.stderr_text.size() - 3000 : 0);
    SCOPED_TRACE(context);
    EXPECT_FALSE(o.hung) << "the supervisor did not exit within " << kRunBudget.count() << " ms";
    const bool supervisor_killed = o.code == -SIGKILL && inj != nullptr && inj->is_signal();
    const json::object* exited = o.exited();
    if (exited != nullptr) {
      EXPECT_EQ(o.code, json_int(*exited, "exit_status")) << "the status is the event's";
      const std::string outcome = json_str(*exited, "outcome");
      if (outcome == "setup_failed") {
        const std::string step = json_str(*exited, "step");
        EXPECT_TRUE(step_from_name(step).has_value() || supervisor_step(step)) << step;
        EXPECT_FALSE(json_str(*exited, "detail").empty());
        EXPECT_TRUE(o.code == 125 || o.code == 126 || o.code == 127) << o.code;
        EXPECT_FALSE(o.started()) << "setup_failed after started";
        if (audit != nullptr && inj != nullptr && !inj->is_signal() &&
            !audit_transport(inj->syscall) && !supervisor_step(step) &&
            !step_before_request(step)) {
          expect_audit_refusal(*audit, spec, step);
        }
      } else if (outcome == "lost") {
        EXPECT_EQ(o.code, 125);
      } else {
        // A failed events write drops that one event; the sandbox runs its course.
        EXPECT_TRUE(o.started() || inj->syscall == "write") << "the VMM's status without `started`";
      }
    } else if (!supervisor_killed) {
      // No `exited`: the supervisor failed before it had a sandbox to report on (its spec, its
      // own setup), or the event's write was the call that failed.
      EXPECT_TRUE(o.code == 125 || o.code == 126 || o.code == 127) << "exit " << o.code;
      EXPECT_TRUE(inj != nullptr && inj->syscall == "write" || !o.started())
          << "started, then no exited event";
    }
    if (!o.started() && o.code >= 125 && o.code <= 127 && exited == nullptr) {
      EXPECT_TRUE(inj != nullptr && (inj->syscall == "write" ||
                                     o.stderr_text.find("sbx-supervisor") != std::string::npos))
          << "a failed launch that names no step and logs nothing";
    }
    EXPECT_TRUE(HelperEnv::wait_no_test_user_processes(std::chrono::seconds(5)))
        << "left: " << ::testing::PrintToString(HelperEnv::test_user_processes());
    EXPECT_EQ(host_mounts(), before.mountinfo);
    if (!supervisor_killed) {
      // A killed supervisor leaves its (empty) sandbox dir and its cgroup (README, "When the VM
      // manager restarts"); everything else is gone with it.
      EXPECT_EQ(sandbox_root_without(spec), before_without(before, spec));
      // A cgroup the kernel would not remove is named in `exited` (cgroup_left), never left
      // silently.
      std::vector<std::string> left;
      if (exited != nullptr && exited->contains("cgroup_left")) left.push_back(spec.id);
      EXPECT_EQ(cgroup_children(), left);
    }
  }

  // The sandbox root less the spec's own read_write dir (files and jail), which the test made
  // and the VMM writes its report into.
  std::vector<std::string> sandbox_root_without(const ProbeSpec& spec) const {
    HostSnapshot now{"", env().sandbox_root_listing()};
    return before_without(now, spec);
  }
  static std::vector<std::string> before_without(const HostSnapshot& snap, const ProbeSpec& spec) {
    std::vector<std::string> out;
    for (const auto& e : snap.sandbox_root) {
      if (!e.starts_with(spec.id + ".d")) out.push_back(e);
    }
    return out;
  }

  void expect_audit_refusal(AuditListener& audit, const ProbeSpec& spec, const std::string& step) {
    auto records = audit.record_set("vm=\"" + spec.id + "\"", std::chrono::seconds(2));
    const AuditRecord* control = nullptr;
    for (const auto& r : records) {
      if (r.type == AUDIT_VIRT_CONTROL) control = &r;
    }
    ASSERT_NE(control, nullptr) << "no audit record set for " << spec.id << " (step " << step
                                << ")";
    // The refusal names the step; a failure after the launch's record is logged through
    // syslog only, and the trail keeps the launch's `success` set.
    if (control->fields.at("res") == "failed") {
      EXPECT_EQ(control->fields.count("reason") ? control->fields.at("reason") : "", step)
          << control->body;
    } else {
      EXPECT_TRUE(step_can_follow_audit_record(step)) << control->body;
    }
  }

  // Undoes what a run left so the next starts clean (the checks above have reported it).
  void clean_after_run() {
    env().after_test();
    if (cgroup_) {
      for (const auto& name : cgroup_children()) {
        const std::string dir = cgroup_->parent() + "/" + name;
        std::ofstream(dir + "/cgroup.kill") << "1";
        for (int i = 0; i < 200 && rmdir(dir.c_str()) != 0 && errno == EBUSY; ++i) {
          std::this_thread::sleep_for(milliseconds(5));
        }
      }
    }
  }

  // One run: the snapshot, the run, the checks, the cleanup.
  RunOutcome run_and_check(Mode mode, const Injection* inj, const std::string& trace_path) {
    ProbeSpec spec = spec_for(mode, inj != nullptr ? "f" : "rec");
    const HostSnapshot before = snapshot();
    std::vector<std::string> args = {"-f", "-qq"};
    if (inj != nullptr) {
      args.insert(args.end(), {"-o", "/dev/null", "-e", "trace=" + inj->syscall, "-e",
                               "inject=" + inj->syscall + ":" + inj->fault +
                                   ":when=" + std::to_string(inj->when)});
    } else {
      args.insert(args.end(), {"-s", "96", "-o", trace_path});
    }
    std::unique_ptr<AuditListener> audit;
    if (audit_state_) audit = std::make_unique<AuditListener>();
    RunOutcome o = run_traced(spec, args);
    check_run(inj, spec, o, before, audit.get());
    clean_after_run();
    return o;
  }

  // The candidates from a recording: the first `occurrences` calls of each syscall made by the
  // supervisor, the helper and the init, where `roles` lists those looked at.
  static std::vector<Injection> candidates(const std::map<pid_t, TracedProcess>& procs,
                                           const std::set<std::string>& roles, int occurrences,
                                           const std::set<std::string>& only = {}) {
    std::map<std::pair<std::string, int>, Injection> by_point;
    std::vector<std::pair<std::string, int>> order;
    for (const auto& [pid, p] : procs) {
      std::map<std::string, int> seen;  // per role: the role's k-th call of the syscall
      std::string role;
      // The role a call was made in is the prefix of its line.
      for (const Call& c : p.calls) {
        std::string call_role = c.line.substr(0, c.line.find(':'));
        if (call_role != role) {
          role = call_role;
          seen.clear();
        }
        int k = ++seen[c.name];
        if (roles.count(role) == 0 || k > occurrences) continue;
        if (skipped_syscalls().count(c.name) != 0) continue;
        if (!only.empty() && only.count(c.name) == 0) continue;
        auto key = std::make_pair(c.name, c.occurrence);
        auto [it, made] = by_point.try_emplace(key);
        if (made) {
          it->second.syscall = c.name;
          it->second.when = c.occurrence;
          order.push_back(key);
        }
        it->second.hits.push_back(c.line.substr(0, 160));
      }
    }
    std::vector<Injection> out;
    for (const auto& key : order) out.push_back(by_point[key]);
    return out;
  }

  // A deterministic sample of `all`, at most `n`, spread over the whole launch, always with
  // the first call of each syscall.
  static std::vector<Injection> sample(const std::vector<Injection>& all, size_t n) {
    if (all.size() <= n) return all;
    std::vector<Injection> out;
    std::set<size_t> taken;
    std::set<std::string> names;
    for (size_t i = 0; i < all.size() && out.size() < n; ++i) {
      if (names.insert(all[i].syscall).second) taken.insert(i);
    }
    // The rest by an even stride over what is left.
    std::vector<size_t> rest;
    for (size_t i = 0; i < all.size(); ++i) {
      if (taken.count(i) == 0) rest.push_back(i);
    }
    if (taken.size() < n && !rest.empty()) {
      const size_t want = n - taken.size();
      for (size_t j = 0; j < want && j < rest.size(); ++j) {
        taken.insert(rest[j * rest.size() / want]);
      }
    }
    for (size_t i : taken) {
      if (out.size() < n) out.push_back(all[i]);
    }
    return out;
  }

  // Expands each point into its error runs (the errnos in turn by occurrence) and a SIGKILL.
  static std::vector<Injection> with_faults(const std::vector<Injection>& points,
                                            bool every_errno) {
    std::vector<Injection> out;
    for (const auto& p : points) {
      auto errnos = errnos_for(p.syscall);
      if (errnos.empty()) {
        // SIGKILL only.
      } else if (every_errno) {
        for (const auto& e : errnos) {
          out.push_back(p);
          out.back().fault = "error=" + e;
        }
      } else {
        out.push_back(p);
        out.back().fault = "error=" + errnos[static_cast<size_t>(p.when - 1) % errnos.size()];
      }
      out.push_back(p);
      out.back().fault = "signal=SIGKILL";
    }
    return out;
  }

  // The whole matrix for one mode: record, choose, inject, check.
  void run_matrix(Mode mode, const std::set<std::string>& roles,
                  const std::set<std::string>& only = {}, bool every_errno = false) {
    use_mode(mode);
    KernelAuditState audit_state(1);
    audit_state_ = &audit_state;
    const auto t0 = Clock::now();
    const std::string trace = env().work() + "/trace-" + mode_name(mode) + ".txt";
    RunOutcome rec = run_and_check(mode, nullptr, trace);
    // Stopped at `ready` with SIGTERM, which the probe leaves at its default under a PID
    // namespace (143) and catches without one (0).
    ASSERT_TRUE(rec.has("ready") && (rec.code == 0 || rec.code == 143))
        << "the recorded launch failed:\n"
        << events_text(rec.events) << rec.stderr_text;
    TraceParser parser(supervisor(), env().helper());
    auto procs = parser.parse(trace);
    size_t calls = 0;
    for (const auto& [pid, p] : procs) {
      if (roles.count(p.role) != 0 || p.role == "init") calls += p.calls.size();
    }
    const bool full = env_int("SBX_FAULTS_FULL", 0) != 0;
    const int occurrences = env_int("SBX_FAULTS_OCCURRENCES", full ? 3 : 2);
    auto points = candidates(procs, roles, occurrences, only);
    const size_t all_points = points.size();
    if (!full) points = sample(points, static_cast<size_t>(env_int("SBX_FAULTS_PER_MODE", 40)));
    auto runs = with_faults(points, every_errno);
    int failed_runs = 0;
    for (const auto& inj : runs) {
      const int failures_before = ::testing::UnitTest::GetInstance()->failed_test_count();
      (void)failures_before;
      std::string hits;
      for (const auto& h : inj.hits) hits += "\n  hits " + h;
      SCOPED_TRACE(std::string(mode_name(mode)) + ": " + inj.label() + hits);
      const bool had_failure = HasFailure();
      run_and_check(mode, &inj, "");
      if (!had_failure && HasFailure()) ++failed_runs;
      if (HasFailure() && ++reported_ > 40) break;  // enough to go on
    }
    const double secs =
        std::chrono::duration_cast<milliseconds>(Clock::now() - t0).count() / 1000.0;
    const size_t kills = static_cast<size_t>(
        std::count_if(runs.begin(), runs.end(), [](const Injection& i) { return i.is_signal(); }));
    std::printf(
        "fault matrix %s: %zu calls recorded, %zu injection points, %zu runs "
        "(%zu errors, %zu SIGKILLs), %d failed, %.1f s\n",
        mode_name(mode), calls, all_points, runs.size(), runs.size() - kills, kills, failed_runs,
        secs);
    audit_state_ = nullptr;
  }

  static std::string strace_;  // the cap_sys_ptrace copy, for this suite's environment
  std::unique_ptr<DelegatedCgroup> cgroup_;
  KernelAuditState* audit_state_ = nullptr;
  int reported_ = 0;
};

std::string FaultMatrixTest::strace_;

const std::set<std::string> kLaunchRoles = {"supervisor", "helper", "init"};

TEST_F(FaultMatrixTest, Plain) {
  run_matrix(Mode::kPlain, kLaunchRoles);
}

TEST_F(FaultMatrixTest, Files) {
  run_matrix(Mode::kFiles, kLaunchRoles);
}

TEST_F(FaultMatrixTest, Jail) {
  run_matrix(Mode::kJail, kLaunchRoles);
}

TEST_F(FaultMatrixTest, Cgroup) {
  run_matrix(Mode::kCgroup, kLaunchRoles);
}

TEST_F(FaultMatrixTest, NoPidNamespace) {
  run_matrix(Mode::kNoPidNamespace, kLaunchRoles);
}

TEST_F(FaultMatrixTest, Restore) {
  run_matrix(Mode::kRestore, kLaunchRoles);
}

// The supervisor's own calls, in the cgroup mode, where it makes all of them: the spawn, the
// pidfds and signals, the cgroup writes, the events writes (ENOSPC, EPIPE, EIO each), the
// readiness connect and the waits.
TEST_F(FaultMatrixTest, SupervisorCalls) {
  run_matrix(
      Mode::kCgroup, {"supervisor", "child"},
      {"clone",       "clone3",  "vfork",   "pidfd_open", "pidfd_send_signal", "waitid", "wait4",
       "openat",      "write",   "connect", "socket",     "socketpair",        "poll",   "ppoll",
       "sendmsg",     "recvmsg", "mkdir",   "rmdir",      "signalfd4",         "prctl",  "read",
       "close_range", "dup2",    "pipe2",   "kill"},
      /*every_errno=*/true);
}

// Regressions the matrix found, each run alone.

// A supervisor that cannot make its signalfd fails the launch before spawning anything:
// SIGTERM and SIGINT, blocked for it, would otherwise never reach it, and the sandbox could
// only be stopped with SIGKILL (it hung).
TEST_F(FaultMatrixTest, NoSignalfdIsASetupFailure) {
  Injection inj{"signalfd4", 1, "error=EMFILE", {}};
  RunOutcome o = run_and_check(Mode::kPlain, &inj, "");
  const json::object* ev = o.exited();
  ASSERT_NE(ev, nullptr) << events_text(o.events) << o.stderr_text;
  EXPECT_EQ(json_str(*ev, "outcome"), "setup_failed");
  EXPECT_EQ(json_str(*ev, "step"), "spawn_helper");
  EXPECT_EQ(json_str(*ev, "detail"), "signalfd");
  EXPECT_EQ(json_int(*ev, "errno"), EMFILE);
  EXPECT_FALSE(o.started());
  EXPECT_EQ(o.code, 125);
}

}  // namespace
}  // namespace sbx::it
