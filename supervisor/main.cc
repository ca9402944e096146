// SPDX-License-Identifier: Apache-2.0
// sbx-supervisor: the unprivileged per-VM monitor. `run` launches one sandbox through
// sbx-nsexec and supervises it; `check` validates a spec and prints what would run; `doctor`
// says whether this host and user can run sandboxes, and how to fix what is missing.
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <string_view>

#include "supervisor/cgroup.h"
#include "supervisor/commands.h"
#include "supervisor/control.h"
#include "supervisor/doctor.h"
#include "supervisor/logging.h"
#include "supervisor/privileges.h"
#include "supervisor/run.h"
#include "supervisor/spec.h"
#include "supervisor/state_dir.h"

#ifndef SBX_VERSION
#define SBX_VERSION "0.0.0"
#endif
#ifndef SBX_HELPER_PATH
#define SBX_HELPER_PATH "/usr/libexec/sbx/sbx-nsexec"
#endif

namespace {

using namespace sbx::supervisor;
using sbx::UniqueFd;

constexpr int kSetupFailure = 125;

void usage(FILE* out) {
  std::fprintf(
      out,
      "usage: sbx-supervisor run --spec FILE|- [--helper PATH] [--events-fd N]\n"
      "                          [--stop-timeout-ms N] [--log-format text|json]\n"
      "                          [--cgroup-parent PATH] [--allow-root]\n"
      "                          [--state-dir DIR [--detach]]\n"
      "       sbx-supervisor ps --state-dir DIR [--json]\n"
      "       sbx-supervisor events ID --state-dir DIR [--follow]\n"
      "       sbx-supervisor stop ID --state-dir DIR [--timeout-ms N]\n"
      "       sbx-supervisor wait ID --state-dir DIR\n"
      "       sbx-supervisor rm ID --state-dir DIR\n"
      "       sbx-supervisor check --spec FILE|-\n"
      "       sbx-supervisor doctor [--json] [--helper PATH] [--cgroup-parent PATH]\n"
      "       sbx-supervisor --help | --version\n"
      "\n"
      "run     launch one sandbox through sbx-nsexec (default helper %s),\n"
      "        write JSON-lines events to fd N (default 1), stop it on SIGTERM/SIGINT,\n"
      "        and exit with the VMM's status (128+signal if signaled; 125 setup\n"
      "        failure, 126 VMM not executable, 127 VMM not found).\n"
      "        --cgroup-parent PATH: the sandbox gets the cgroup v2 PATH/ID (delegated\n"
      "        to this user, holding no process) unless the spec's cgroup names a parent\n"
      "        --state-dir DIR: keep DIR/ID/ (lock, state.json, events.jsonl, exit.json,\n"
      "        control.sock) so that the commands below find the sandbox; --detach: return\n"
      "        once it has started, printing `started`, and supervise it in the background\n"
      "ps      one line per sandbox of DIR: id, pids, age, state (starting, running,\n"
      "        ready, stopping, exited, lost) and how it ended (--json: JSON lines)\n"
      "events  a sandbox's events from the first; --follow: then the live ones to `exited`\n"
      "stop    run the stop ladder (budget N ms if given), wait, exit with the VMM's status\n"
      "wait    wait for the sandbox to exit and exit with its status (125 if it is lost)\n"
      "rm      remove the state of an exited or lost sandbox\n"
      "check   validate the spec and print the VMM argv, links, netns and cgroup as JSON\n"
      "doctor  check the helper, its policy, /dev/kvm, /dev/net/tun, userfaultfd,\n"
      "        Landlock, Yama, cgroup v2 (and a --cgroup-parent's delegation), /run/netns\n"
      "        and audit; one line each, OK or the problem and the command that fixes\n"
      "        it (--json: one object). Exit 0 when everything needed is OK, else 1\n",
      SBX_HELPER_PATH);
}

bool read_spec(const std::string& where, std::string* text, std::string* error) {
  std::stringstream buf;
  if (where == "-") {
    buf << std::cin.rdbuf();
  } else {
    std::ifstream in(where);
    if (!in) {
      *error = "cannot read spec file " + where;
      return false;
    }
    buf << in.rdbuf();
  }
  *text = buf.str();
  return true;
}

struct Args {
  std::string command, spec_path, helper = SBX_HELPER_PATH;
  int events_fd = 1;
  std::optional<uint32_t> stop_timeout_ms;
  LogFormat log_format = LogFormat::kText;
  bool allow_root = false;
  GroupSignalMode signal_mode = GroupSignalMode::kAuto;
  std::optional<std::string> cgroup_parent;
  CgroupKillMode cgroup_kill_mode = CgroupKillMode::kAuto;
  bool cgroup_spawn_into = true;
  bool json = false;  // doctor, ps
  std::string id;     // events, stop, wait, rm
  std::optional<std::string> state_dir;
  bool detach = false, follow = false;
  std::optional<uint32_t> timeout_ms;  // stop
};

bool is_state_command(const std::string& c) {
  return c == "ps" || c == "events" || c == "stop" || c == "wait" || c == "rm";
}

bool parse_number(const std::string& s, long min, long max, long* out) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno != 0 || v < min || v > max) return false;
  *out = v;
  return true;
}

// Returns an error message, or "" when args are complete.
std::string parse_args(int argc, char** argv, Args* a) {
  if (argc < 2) return "missing command";
  a->command = argv[1];
  if (a->command != "run" && a->command != "check" && a->command != "doctor" &&
      !is_state_command(a->command)) {
    return "unknown command '" + a->command + "'";
  }
  const bool run_or_doctor = a->command == "run" || a->command == "doctor";
  int first = 2;
  if (is_state_command(a->command) && a->command != "ps") {
    if (argc < 3 || argv[2][0] == '-') return a->command + " needs a sandbox ID";
    a->id = argv[2];
    first = 3;
  }
  for (int i = first; i < argc; ++i) {
    std::string opt = argv[i];
    auto value = [&](std::string* v) {
      if (i + 1 >= argc) return false;
      *v = argv[++i];
      return true;
    };
    std::string v;
    long n;
    if (opt == "--spec" && a->command != "doctor") {
      if (!value(&a->spec_path)) return "--spec needs FILE or -";
    } else if (opt == "--json" && (a->command == "doctor" || a->command == "ps")) {
      a->json = true;
    } else if (opt == "--state-dir" && (a->command == "run" || is_state_command(a->command))) {
      if (!value(&v) || v.empty()) return "--state-dir needs a directory";
      a->state_dir = v;
    } else if (opt == "--detach" && a->command == "run") {
      a->detach = true;
    } else if (opt == "--follow" && a->command == "events") {
      a->follow = true;
    } else if (opt == "--timeout-ms" && a->command == "stop") {
      if (!value(&v) || !parse_number(v, 0, kMaxStopTimeoutMs, &n)) {
        return "--timeout-ms needs a number in 0..3600000";
      }
      a->timeout_ms = static_cast<uint32_t>(n);
    } else if (opt == "--cgroup-parent" && run_or_doctor) {
      if (!value(&v) || v.empty() || v[0] != '/') return "--cgroup-parent needs an absolute path";
      while (v.size() > 1 && v.back() == '/') v.pop_back();
      a->cgroup_parent = v;
    } else if (opt == "--cgroup-kill-mode" && a->command == "run") {
      // SIGKILL to each pid in cgroup.procs instead of cgroup.kill: the path before Linux 5.14.
      if (!value(&v) || (v != "auto" && v != "procs"))
        return "--cgroup-kill-mode needs auto or procs";
      a->cgroup_kill_mode = v == "procs" ? CgroupKillMode::kProcs : CgroupKillMode::kAuto;
    } else if (opt == "--cgroup-enter" && a->command == "run") {
      // Spawn and then move the helper into its cgroup: the path before Linux 5.7.
      if (!value(&v) || (v != "clone3" && v != "move")) {
        return "--cgroup-enter needs clone3 or move";
      }
      a->cgroup_spawn_into = v == "clone3";
    } else if (opt == "--helper" && run_or_doctor) {
      if (!value(&a->helper) || a->helper.empty() || a->helper[0] != '/') {
        return "--helper needs an absolute path";
      }
    } else if (opt == "--events-fd" && a->command == "run") {
      if (!value(&v) || !parse_number(v, 1, 1 << 20, &n)) return "--events-fd needs a number >= 1";
      a->events_fd = static_cast<int>(n);
    } else if (opt == "--stop-timeout-ms" && a->command == "run") {
      if (!value(&v) || !parse_number(v, 0, kMaxStopTimeoutMs, &n)) {
        return "--stop-timeout-ms needs a number in 0..3600000";
      }
      a->stop_timeout_ms = static_cast<uint32_t>(n);
    } else if (opt == "--log-format" && a->command == "run") {
      if (!value(&v) || (v != "text" && v != "json")) return "--log-format needs text or json";
      a->log_format = v == "json" ? LogFormat::kJson : LogFormat::kText;
    } else if (opt == "--allow-root" && a->command == "run") {
      a->allow_root = true;
    } else if (opt == "--signal-mode" && a->command == "run") {
      // kill(-pgid) instead of pidfd group signals: the path older kernels take.
      if (!value(&v) || (v != "auto" && v != "kill")) return "--signal-mode needs auto or kill";
      a->signal_mode = v == "kill" ? GroupSignalMode::kKill : GroupSignalMode::kAuto;
    } else {
      return "unknown option '" + opt + "' for " + a->command;
    }
  }
  if (is_state_command(a->command)) {
    if (!a->state_dir) return a->command + " needs --state-dir DIR";
    return {};
  }
  if (a->spec_path.empty() && a->command != "doctor") return "--spec is required";
  if (a->detach && !a->state_dir) return "--detach needs --state-dir";
  return {};
}

int check(const Spec& spec) {
  auto req = launch_request(spec);
  boost::json::array argv{boost::json::value(req.vmm)};
  for (const auto& arg : req.args) argv.emplace_back(arg);
  boost::json::object links;
  for (const auto& l : req.links) links[l.name] = l.target;
  boost::json::object out{{"id", spec.id},
                          {"kind", std::string(kind_name(spec.kind))},
                          {"argv", argv},
                          {"sandbox_dir", spec.sandbox_dir},
                          {"links", links},
                          {"netns", spec.netns ? boost::json::value(*spec.netns) : nullptr},
                          {"pid_namespace", spec.pid_namespace},
                          {"jail", spec.jail}};
  if (req.files) {
    auto list = [](const std::vector<std::string>& v) {
      boost::json::array a;
      for (const auto& e : v) a.emplace_back(e);
      return a;
    };
    out["files"] = boost::json::object{{"devices", list(req.devices)},
                                       {"read_only", list(req.read_only)},
                                       {"read_write", list(req.read_write)}};
    out["api_socket_dir"] =
        req.api_socket_dir ? boost::json::value(*req.api_socket_dir) : boost::json::value(nullptr);
  }
  if (spec.cgroup) {
    boost::json::object files;
    for (const auto& f : cgroup_limit_files(*spec.cgroup)) files[f.file] = f.value;
    out["cgroup"] = boost::json::object{
        {"parent", spec.cgroup->parent.empty() ? boost::json::value(nullptr)
                                               : boost::json::value(spec.cgroup->parent)},
        {"files", files}};
  } else {
    out["cgroup"] = nullptr;
  }
  std::cout << boost::json::serialize(out) << "\n";
  return 0;
}

// --detach: the supervisor goes on in a child, in a session of its own with no terminal (stdin
// and stdout /dev/null, stderr DIR/<id>/supervisor.log); this process relays the child's events
// to its own events fd up to `started` (exit 0) or the `exited` of a failed launch (its status).
int run_detached(const Spec& spec, RunOptions options, StateDir& state) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) {
    log_error(spec.id, std::string("pipe2: ") + std::strerror(errno));
    return kSetupFailure;
  }
  UniqueFd from_child(p[0]), to_parent(p[1]);
  const pid_t child = fork();
  if (child < 0) {
    log_error(spec.id, std::string("fork: ") + std::strerror(errno));
    return kSetupFailure;
  }
  if (child == 0) {
    from_child.reset();
    setsid();
    UniqueFd null(open("/dev/null", O_RDWR | O_CLOEXEC));
    UniqueFd log = state.open_log();
    if (!null || dup2(null.get(), STDIN_FILENO) < 0 || dup2(null.get(), STDOUT_FILENO) < 0 ||
        dup2(log ? log.get() : null.get(), STDERR_FILENO) < 0) {
      return kSetupFailure;  // the parent reports the child's silence
    }
    if (options.events_fd > STDERR_FILENO) close(options.events_fd);
    if (!state.take_over_lock()) {
      log_error(spec.id, std::string("retaking the lock after the fork: ") + std::strerror(errno));
      return kSetupFailure;
    }
    options.events_fd = to_parent.release();
    options.detached = true;
    return run_sandbox(spec, options);
  }
  to_parent.reset();
  std::string buffer;
  while (auto line = read_line(from_child.get(), &buffer)) {
    const std::string out = *line + "\n";
    (void)!write(options.events_fd, out.data(), out.size());
    boost::system::error_code ec;
    boost::json::value v = boost::json::parse(*line, ec);
    if (ec || !v.is_object()) continue;
    const boost::json::value* event = v.as_object().if_contains("event");
    if (event == nullptr || !event->is_string()) continue;
    if (event->as_string() == "started") return 0;
    if (event->as_string() == "exited") {
      waitpid(child, nullptr, 0);  // a failed launch: the child is done
      return exit_status_of(v.as_object());
    }
  }
  int status = 0;
  waitpid(child, &status, 0);
  // What it logged says why: the end of supervisor.log.
  std::string tail;
  UniqueFd log(openat(state.dir_fd(), kLogName, O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  char buf[2048];
  ssize_t n = log ? pread(log.get(), buf, sizeof(buf),
                          std::max<off_t>(
                              0, lseek(log.get(), 0, SEEK_END) - static_cast<off_t>(sizeof(buf))))
                  : -1;
  if (n > 0) tail.assign(buf, static_cast<size_t>(n));
  std::fprintf(stderr,
               "sbx-supervisor: the detached supervisor (pid %d) ended before the sandbox "
               "started; the end of %s/%s:\n%s",
               child, state.path().c_str(), kLogName, tail.c_str());
  return kSetupFailure;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string_view(argv[1]) == "--help") {
    usage(stdout);
    return 0;
  }
  if (argc == 2 && std::string_view(argv[1]) == "--version") {
    std::printf("sbx-supervisor %s\n", SBX_VERSION);
    return 0;
  }
  Args args;
  if (std::string err = parse_args(argc, argv, &args); !err.empty()) {
    std::fprintf(stderr, "sbx-supervisor: %s\n", err.c_str());
    usage(stderr);
    return 2;
  }
  if (args.command == "doctor") {
    auto checks = run_doctor_checks(DoctorOptions{args.helper, args.cgroup_parent});
    std::fputs((args.json ? doctor_json(checks) : doctor_text(checks)).c_str(), stdout);
    return doctor_passed(checks) ? 0 : 1;
  }
  if (is_state_command(args.command)) {
    return run_state_command(StateCommand{args.command, args.id, *args.state_dir, args.json,
                                          args.follow, args.timeout_ms});
  }
  const int fail = args.command == "check" ? 1 : kSetupFailure;
  std::string text, err;
  if (!read_spec(args.spec_path, &text, &err)) {
    std::fprintf(stderr, "sbx-supervisor: %s\n", err.c_str());
    return fail;
  }
  auto parsed = parse_spec(text);
  if (auto* e = std::get_if<std::string>(&parsed)) {
    std::fprintf(stderr, "sbx-supervisor: %s\n", e->c_str());
    return fail;
  }
  Spec spec = std::get<Spec>(std::move(parsed));
  if (args.command == "check") return check(spec);

  if (args.stop_timeout_ms) spec.stop_timeout_ms = *args.stop_timeout_ms;
  // --cgroup-parent gives the sandbox a cgroup; a parent named in the spec wins.
  if (args.cgroup_parent) {
    if (!spec.cgroup) spec.cgroup.emplace();
    if (spec.cgroup->parent.empty()) spec.cgroup->parent = *args.cgroup_parent;
  }
  init_logging(args.log_format);
  // Not dumpable before anything is spawned: a VMM of the same uid must not be able to ptrace
  // this process, pidfd_getfd its fds (the events stream, the control socket) or reach the host
  // mount namespace through /proc/PID/root.
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    log_error(spec.id, std::string("PR_SET_DUMPABLE 0: ") + std::strerror(errno));
    return kSetupFailure;
  }
  if (std::string why = drop_all_capabilities(); !why.empty()) {
    log_error(spec.id, "refusing to run with capabilities: " + why);
    return kSetupFailure;
  }
  if ((getuid() == 0 || geteuid() == 0) && !args.allow_root) {
    log_error(spec.id, "refusing to run as uid 0 without --allow-root");
    return kSetupFailure;
  }
  struct stat st;
  if (args.events_fd != 1 && fstat(args.events_fd, &st) != 0) {
    log_error(spec.id, "--events-fd " + std::to_string(args.events_fd) + " is not open");
    return kSetupFailure;
  }
  // The events fd must not leak into the helper or the VMM.
  fcntl(args.events_fd, F_SETFD, FD_CLOEXEC);
  RunOptions options;
  options.helper_path = args.helper;
  options.events_fd = args.events_fd;
  options.signal_mode = args.signal_mode;
  options.cgroup_kill_mode = args.cgroup_kill_mode;
  options.cgroup_spawn_into = args.cgroup_spawn_into;
  if (!args.state_dir) return run_sandbox(spec, options);

  // A detached VMM has no terminal to share: its stdio is null unless the spec says otherwise,
  // and `inherit` is refused.
  if (args.detach) {
    if (spec.stdio_given && spec.stdio == Stdio::kInherit) {
      log_error(spec.id, "spec: stdio: inherit cannot be used with --detach (use null)");
      return kSetupFailure;
    }
    spec.stdio = Stdio::kNull;
  }
  auto root = open_state_root(*args.state_dir);
  if (auto* e = std::get_if<std::string>(&root)) {
    log_error(spec.id, *e);
    return kSetupFailure;
  }
  auto claimed = StateDir::claim(std::get<UniqueFd>(root).get(), *args.state_dir, spec.id);
  if (auto* r = std::get_if<StateDir::Refusal>(&claimed)) {
    log_error(spec.id, r->message);
    return kSetupFailure;
  }
  StateDir& state = std::get<StateDir>(claimed);
  options.state_dir = &state;
  options.spec_path = args.spec_path;
  if (!args.detach) return run_sandbox(spec, options);
  return run_detached(spec, options, state);
}
