// SPDX-License-Identifier: Apache-2.0
// sbx-bench: launch and stop latency of sbx side by side with its baselines, in one run, and a
// scale run of concurrent `sbx-supervisor run` processes. Run as root (it makes the netns, the
// setcap'd helper copy and the policy); every sbx launch runs as an unprivileged bench user.
// Prints a table and writes the same numbers as JSON.
//
// Launch latency is from the launch request (just before the spawn or the library call) to the
// stub VMM's first instruction (its CLOCK_MONOTONIC stamp), with the same sandbox work for all
// but the floor: private mount ns, tmpfs sandbox dir, two links, join the bench's netns.
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "supervisor/helper_launch.h"
#include "supervisor/spec.h"

extern char** environ;

namespace {

namespace json = boost::json;
using sbx::supervisor::Spec;

constexpr uid_t kBenchUid = 64200;
constexpr gid_t kBenchGid = 64200;

int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "sbx-bench: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

int run(const std::vector<std::string>& argv, bool quiet = true) {
  std::vector<char*> a;
  for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
  a.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (quiet) {
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  }
  pid_t pid;
  if (posix_spawn(&pid, a[0], &fa, nullptr, a.data(), environ) != 0) die("spawn " + argv[0]);
  posix_spawn_file_actions_destroy(&fa);
  int status;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void must(const std::vector<std::string>& argv) {
  if (run(argv, false) != 0) {
    std::string cmd;
    for (const auto& a : argv) cmd += a + " ";
    errno = 0;
    die("command failed: " + cmd);
  }
}

int64_t read_stamp(const std::string& path) {
  std::ifstream in(path);
  int64_t v = -1;
  in >> v;
  unlink(path.c_str());
  return v;
}

struct Stats {
  double median_ms = 0, p99_ms = 0, mean_ms = 0;
  size_t n = 0;
};

Stats stats(std::vector<int64_t> ns) {
  Stats s;
  if (ns.empty()) return s;
  std::sort(ns.begin(), ns.end());
  s.n = ns.size();
  s.median_ms = ns[ns.size() / 2] / 1e6;
  s.p99_ms = ns[std::min(ns.size() - 1, (ns.size() * 99) / 100)] / 1e6;
  double sum = 0;
  for (auto v : ns) sum += v;
  s.mean_ms = sum / ns.size() / 1e6;
  return s;
}

// Everything the bench sets up as root, and removes at the end.
struct Setup {
  std::string dir, helper, stub, exec_once, supervisor, sandboxes, images, work, netns, policy_dir;
  std::string reference_script;
  // A cgroup v2 subtree delegated to the bench user: the bench user's processes run in
  // cgroup_leaf, the sandboxes of the cgroup row get cgroup_parent/<id>. Empty without cgroup2.
  std::string cgroup_root, cgroup_leaf, cgroup_parent;

  void create(const std::string& bin_dir, const std::string& src_dir) {
    char tmpl[] = "/run/sbx-bench-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) die("mkdtemp");
    dir = tmpl;
    chmod(dir.c_str(), 0755);
    helper = dir + "/sbx-nsexec";
    stub = dir + "/stub-vmm";
    supervisor = bin_dir + "/supervisor/sbx-supervisor";
    must({"/usr/bin/cp", bin_dir + "/helper/sbx-nsexec-bench", helper});
    must({"/usr/bin/cp", bin_dir + "/bench/sbx-bench-stub", stub});
    exec_once = dir + "/exec-once";
    must({"/usr/bin/cp", bin_dir + "/bench/sbx-bench-exec-once", exec_once});
    chmod(helper.c_str(), 0755);
    chmod(stub.c_str(), 0755);
    chmod(exec_once.c_str(), 0755);
    must({"/sbin/setcap", "cap_sys_admin,cap_audit_write+ep", helper});
    sandboxes = dir + "/sandboxes";
    images = dir + "/images";
    work = dir + "/work";
    mkdir(sandboxes.c_str(), 01770);
    if (chown(sandboxes.c_str(), 0, kBenchGid) != 0) die("chown " + sandboxes);
    chmod(sandboxes.c_str(), 01770);
    mkdir(images.c_str(), 0755);
    std::ofstream(images + "/vmlinux") << "kernel";
    std::ofstream(images + "/rootfs.ext4") << "rootfs";
    mkdir(work.c_str(), 0700);
    if (chown(work.c_str(), kBenchUid, kBenchGid) != 0) die("chown " + work);
    netns = "sbx-bench-" + std::to_string(getpid());
    must({"/usr/sbin/ip", "netns", "add", netns});
    policy_dir = "/run/sbx-bench";
    mkdir(policy_dir.c_str(), 0755);
    std::ofstream(policy_dir + "/nsexec.conf")
        << "vmm = " << stub << "\nsandbox_root = " << sandboxes << "\nimage_root = " << images
        << "\nnetns = sbx-bench-*\ntmpfs_size_mb = 4\n";
    reference_script = src_dir + "/bench/reference_launch.sh";
    make_delegated_cgroup();
  }

  void make_delegated_cgroup() {
    std::ifstream in("/proc/self/mountinfo");
    std::string line, mount;
    while (mount.empty() && std::getline(in, line)) {
      if (line.find(" - cgroup2 ") == std::string::npos) continue;
      std::istringstream f(line);
      std::string id, parent, dev, root;
      f >> id >> parent >> dev >> root >> mount;
    }
    if (mount.empty()) return;
    cgroup_root = mount + "/sbx-bench-" + std::to_string(getpid());
    cgroup_leaf = cgroup_root + "/bench";
    cgroup_parent = cgroup_root + "/vms";
    for (const auto& d : {cgroup_root, cgroup_leaf, cgroup_parent}) {
      if (mkdir(d.c_str(), 0755) != 0) die("mkdir " + d);
      for (const char* f : {"", "/cgroup.procs", "/cgroup.subtree_control", "/cgroup.threads"}) {
        if (chown((d + f).c_str(), kBenchUid, kBenchGid) != 0) die("chown " + d + f);
      }
    }
  }

  void destroy() {
    if (!cgroup_root.empty()) {
      rmdir(cgroup_parent.c_str());
      rmdir(cgroup_leaf.c_str());
      rmdir(cgroup_root.c_str());
    }
    run({"/usr/sbin/ip", "netns", "del", netns});
    unlink((policy_dir + "/nsexec.conf").c_str());
    rmdir(policy_dir.c_str());
    run({"/usr/bin/rm", "-rf", dir});
  }
};

Spec stub_spec(const Setup& s, const std::string& id, const std::vector<std::string>& args,
               bool api) {
  Spec spec;
  spec.id = id;
  spec.kind = sbx::supervisor::VmmKind::kGeneric;
  spec.binary = s.stub;
  spec.args = args;
  spec.sandbox_dir = s.sandboxes + "/" + id;
  spec.kernel = s.images + "/vmlinux";
  spec.rootfs = s.images + "/rootfs.ext4";
  spec.netns = s.netns;
  if (api) spec.api_socket = s.work + "/" + id + ".sock";
  spec.stdio = sbx::supervisor::Stdio::kNull;
  // Rows 4, 5, stop and scale keep the VMM as the helper's own process, as in earlier runs;
  // the rows that say so use the default PID namespace with its init.
  spec.pid_namespace = false;
  return spec;
}

// A per-sandbox directory the bench user owns, directly under the sandbox root, where a jailed
// stub writes its stamp (the jail's read_write entry). Made and removed by the caller.
std::string jail_dir(const Setup& s, const std::string& id) {
  return s.sandboxes + "/" + id + ".d";
}

// The stub jailed: its stamp in jail_dir, given read-write; nothing else beyond the images.
Spec jailed_stub_spec(const Setup& s, const std::string& id) {
  const std::string dir = jail_dir(s, id);
  Spec spec = stub_spec(s, id, {"--stamp", dir + "/stamp"}, false);
  spec.jail = true;
  spec.pid_namespace = true;  // a jail's /proc is its PID namespace's
  spec.files.emplace();
  spec.files->read_write = {dir};
  return spec;
}

std::string spec_json(const Spec& spec, int stop_timeout_ms) {
  json::array args;
  for (const auto& a : spec.args) args.emplace_back(a);
  json::object o{
      {"id", spec.id},
      {"vmm", json::object{{"kind", "generic"}, {"binary", spec.binary}, {"args", args}}},
      {"sandbox_dir", spec.sandbox_dir},
      {"kernel", *spec.kernel},
      {"rootfs", *spec.rootfs},
      {"netns", *spec.netns},
      {"stop_timeout_ms", stop_timeout_ms},
      {"ready_timeout_ms", 60000},
      {"pid_namespace", spec.pid_namespace},
      {"stdio", "null"}};
  if (spec.jail) o["jail"] = true;
  if (spec.files) {
    json::array rw;
    for (const auto& d : spec.files->read_write) rw.emplace_back(d);
    o["files"] = json::object{{"read_write", rw}};
  }
  if (spec.api_socket) o["api_socket"] = *spec.api_socket;
  if (spec.cgroup) o["cgroup"] = json::object{{"parent", spec.cgroup->parent}};
  return json::serialize(o);
}

std::string write_spec(const Setup& s, const Spec& spec, int stop_timeout_ms) {
  std::string path = s.work + "/" + spec.id + ".json";
  std::ofstream(path) << spec_json(spec, stop_timeout_ms);
  return path;
}

pid_t spawn(const std::vector<std::string>& argv, int stdout_fd = -1) {
  std::vector<char*> a;
  for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
  a.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (stdout_fd >= 0) {
    posix_spawn_file_actions_adddup2(&fa, stdout_fd, 1);
  } else {
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  }
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);  // supervisor logs
  pid_t pid;
  int rc = posix_spawn(&pid, a[0], &fa, nullptr, a.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    errno = rc;
    die("posix_spawn " + argv[0]);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// ---- the launch methods -----------------------------------------------------------------

// Spawns argv (which runs the stub with --stamp STAMP) and waits for it: the time from just
// before the spawn to the stub's first instruction, or -1 if the launch failed.
int64_t spawn_to_stamp(const std::vector<std::string>& argv, const std::string& stamp) {
  int64_t t0 = now_ns();
  int rc = wait_exit(spawn(argv));
  int64_t v = read_stamp(stamp) - t0;
  return rc == 0 ? v : -1;
}

int64_t launch_bare(const Setup& s, int i) {
  std::string stamp = s.work + "/stamp-bare-" + std::to_string(i);
  return spawn_to_stamp({s.stub, "--stamp", stamp}, stamp);
}

// Two execs and nothing else: a static program that execs the stub.
int64_t launch_two_execs(const Setup& s, int i) {
  std::string stamp = s.work + "/stamp-exec2-" + std::to_string(i);
  return spawn_to_stamp({s.exec_once, s.stub, "--stamp", stamp}, stamp);
}

int64_t launch_reference(const Setup& s, int i) {
  std::string stamp = s.work + "/stamp-ref-" + std::to_string(i);
  std::string dir = s.sandboxes + "/ref-" + std::to_string(i);
  int64_t v = spawn_to_stamp({s.reference_script, dir, s.images + "/vmlinux",
                              s.images + "/rootfs.ext4", s.netns, s.stub, "--stamp", stamp},
                             stamp);
  rmdir(dir.c_str());
  return v;
}

int64_t launch_bwrap(const Setup& s, int i) {
  std::string stamp = s.work + "/stamp-bwrap-" + std::to_string(i);
  std::string dir = s.sandboxes + "/bwrap-" + std::to_string(i);
  mkdir(dir.c_str(), 0700);
  int64_t v = spawn_to_stamp(
      {"/usr/bin/bwrap", "--bind", "/", "/", "--tmpfs", dir, "--symlink", s.images + "/vmlinux",
       dir + "/vmlinux", "--symlink", s.images + "/rootfs.ext4", dir + "/rootfs.ext4", "--chdir",
       dir, "--", s.stub, "--stamp", stamp},
      stamp);
  rmdir(dir.c_str());
  return v;
}

// Rows 4: a whole `sbx-supervisor run` process with `spec`, from the spawn to the stub's
// stamp at `stamp`.
int64_t run_row(const Setup& s, const Spec& spec, const std::string& stamp) {
  std::string path = write_spec(s, spec, 10000);
  int64_t v = spawn_to_stamp({s.supervisor, "run", "--spec", path, "--helper", s.helper}, stamp);
  unlink(path.c_str());
  return v;
}

// Rows 5: the in-process launch of `spec` (launch_helper), from the call to the stub's stamp
// at `stamp`. With a PID namespace the launch returns at VMM_STARTED; the stub's stamp comes
// from its first instruction either way.
int64_t in_process_row(const Setup& s, const Spec& spec, const std::string& stamp) {
  int64_t t0 = now_ns();
  auto launched = sbx::supervisor::launch_helper(s.helper, sbx::supervisor::launch_request(spec),
                                                 spec.stdio, false, 10000);
  if (launched.failure) {
    std::fprintf(stderr, "in-process launch %s failed: %s %s\n", spec.id.c_str(),
                 launched.failure->step.c_str(), launched.failure->detail.c_str());
    return -1;
  }
  wait_exit(launched.vmm_pid);
  int64_t v = read_stamp(stamp) - t0;
  rmdir(spec.sandbox_dir.c_str());
  return v;
}

// A jailed row's per-sandbox directory (its read_write entry, where the stub writes its
// stamp), made for the row and removed after it.
struct JailDir {
  std::string path;
  bool made;
  JailDir(const Setup& s, const std::string& id)
      : path(jail_dir(s, id)), made(mkdir(path.c_str(), 0700) == 0) {}
  ~JailDir() {
    unlink((path + "/stamp").c_str());
    rmdir(path.c_str());
  }
};

int64_t launch_supervisor_process(const Setup& s, int i) {
  std::string stamp = s.work + "/stamp-run-" + std::to_string(i);
  return run_row(s, stub_spec(s, "run-" + std::to_string(i), {"--stamp", stamp}, false), stamp);
}

// The same with the sandbox in its own cgroup: made before the spawn, the helper spawned into
// it (and the cgroup removed after the VMM exits, which is outside the measured span).
int64_t launch_supervisor_process_cgroup(const Setup& s, int i) {
  std::string stamp = s.work + "/stamp-runcg-" + std::to_string(i);
  Spec spec = stub_spec(s, "runcg-" + std::to_string(i), {"--stamp", stamp}, false);
  spec.cgroup.emplace();
  spec.cgroup->parent = s.cgroup_parent;
  return run_row(s, spec, stamp);
}

int64_t launch_in_process(const Setup& s, int i, bool pid_namespace = false) {
  std::string stamp = s.work + (pid_namespace ? "/stamp-libp-" : "/stamp-lib-") + std::to_string(i);
  Spec spec = stub_spec(s, (pid_namespace ? "libp-" : "lib-") + std::to_string(i),
                        {"--stamp", stamp}, false);
  spec.pid_namespace = pid_namespace;
  return in_process_row(s, spec, stamp);
}

// Row 4j: `run` jailed (with the PID namespace a jail needs: compare with 4p).
int64_t launch_supervisor_process_jailed(const Setup& s, int i) {
  const std::string id = "runj-" + std::to_string(i);
  JailDir dir(s, id);
  if (!dir.made) return -1;
  return run_row(s, jailed_stub_spec(s, id), dir.path + "/stamp");
}

// Row 4p: `run` with the default PID namespace and its forwarding init.
int64_t launch_supervisor_process_pidns(const Setup& s, int i) {
  std::string stamp = s.work + "/stamp-runp-" + std::to_string(i);
  Spec spec = stub_spec(s, "runp-" + std::to_string(i), {"--stamp", stamp}, false);
  spec.pid_namespace = true;
  return run_row(s, spec, stamp);
}

// Row 5j: the in-process launch, jailed (with its PID namespace: compare with 5p).
int64_t launch_in_process_jailed(const Setup& s, int i) {
  const std::string id = "libj-" + std::to_string(i);
  JailDir dir(s, id);
  if (!dir.made) return -1;
  return in_process_row(s, jailed_stub_spec(s, id), dir.path + "/stamp");
}

// Rows 6: the whole process, from the spawn to its exit, for a VMM that exits at once: `run`
// with the defaults (a PID namespace), jailed or not, and the reference pipeline.
int64_t spawn_to_exit(const std::vector<std::string>& argv) {
  int64_t t0 = now_ns();
  int rc = wait_exit(spawn(argv));
  int64_t v = now_ns() - t0;
  return rc == 0 ? v : -1;
}

int64_t whole_run(const Setup& s, int i, bool jailed) {
  const std::string id = (jailed ? "wholej-" : "whole-") + std::to_string(i);
  const std::string dir = jail_dir(s, id);
  if (jailed && mkdir(dir.c_str(), 0700) != 0) return -1;
  Spec spec = jailed ? jailed_stub_spec(s, id) : stub_spec(s, id, {}, false);
  spec.pid_namespace = true;
  std::string path = write_spec(s, spec, 10000);
  int64_t v = spawn_to_exit({s.supervisor, "run", "--spec", path, "--helper", s.helper});
  unlink(path.c_str());
  if (jailed) {
    unlink((dir + "/stamp").c_str());
    rmdir(dir.c_str());
  }
  return v;
}

int64_t whole_reference(const Setup& s, int i) {
  std::string dir = s.sandboxes + "/wholeref-" + std::to_string(i);
  int64_t v = spawn_to_exit(
      {s.reference_script, dir, s.images + "/vmlinux", s.images + "/rootfs.ext4", s.netns, s.stub});
  rmdir(dir.c_str());
  return v;
}

// Rows 4s and 6s: rows 4 and 6 with `--state-dir` (one state dir, made by the bench user; each
// round's id is new, so no run meets an earlier one's state).
std::string state_dir(const Setup& s) {
  return s.work + "/state";
}

int64_t launch_supervisor_process_state(const Setup& s, int i) {
  std::string stamp = s.work + "/stamp-runs-" + std::to_string(i);
  Spec spec = stub_spec(s, "runs-" + std::to_string(i), {"--stamp", stamp}, false);
  std::string path = write_spec(s, spec, 10000);
  int64_t v = spawn_to_stamp(
      {s.supervisor, "run", "--spec", path, "--helper", s.helper, "--state-dir", state_dir(s)},
      stamp);
  unlink(path.c_str());
  return v;
}

int64_t whole_run_state(const Setup& s, int i) {
  Spec spec = stub_spec(s, "wholes-" + std::to_string(i), {}, false);
  spec.pid_namespace = true;
  std::string path = write_spec(s, spec, 10000);
  int64_t v = spawn_to_exit(
      {s.supervisor, "run", "--spec", path, "--helper", s.helper, "--state-dir", state_dir(s)});
  unlink(path.c_str());
  return v;
}

// Runs `fn` in a child that is the bench user; returns what it wrote to the pipe.
template <typename Fn>
std::string as_bench_user(const Setup& s, Fn fn) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) die("pipe");
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    // Into the delegated leaf (as root, this process only): the supervisors it starts can then
    // move their helpers into sandbox cgroups beside it.
    if (!s.cgroup_leaf.empty()) {
      std::ofstream(s.cgroup_leaf + "/cgroup.procs") << getpid();
    }
    if (setgroups(0, nullptr) != 0 || setresgid(kBenchGid, kBenchGid, kBenchGid) != 0 ||
        setresuid(kBenchUid, kBenchUid, kBenchUid) != 0) {
      _exit(90);
    }
    std::string out = fn();
    (void)!write(p[1], out.data(), out.size());
    _exit(0);
  }
  close(p[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(p[0], buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  close(p[0]);
  wait_exit(pid);
  return out;
}

std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (auto x : v) s += std::to_string(x) + " ";
  return s;
}

std::vector<int64_t> split(const std::string& s) {
  std::vector<int64_t> v;
  std::istringstream in(s);
  int64_t x;
  while (in >> x) v.push_back(x);
  return v;
}

// ---- stop --------------------------------------------------------------------------------

// One supervisor with a serving stub; SIGTERM once ready; stop request to reaped, in ns.
int64_t stop_once(const Setup& s, int i, bool ignore_term, int budget_ms) {
  std::string id = std::string(ignore_term ? "stopk-" : "stopt-") + std::to_string(i);
  std::string sock = s.work + "/" + id + ".sock";
  std::vector<std::string> args = {"--serve", sock};
  if (ignore_term) args.push_back("--ignore-term");
  Spec spec = stub_spec(s, id, args, true);
  std::string path = write_spec(s, spec, budget_ms);
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return -1;
  pid_t pid = spawn({s.supervisor, "run", "--spec", path, "--helper", s.helper}, p[1]);
  close(p[1]);
  std::string buf;
  char c;
  while (buf.find("\"ready\"") == std::string::npos && read(p[0], &c, 1) == 1) buf += c;
  usleep(20000);  // let the stub install its SIGTERM disposition
  int64_t t0 = now_ns();
  kill(pid, SIGTERM);
  wait_exit(pid);
  int64_t t1 = now_ns();
  close(p[0]);
  unlink(path.c_str());
  return t1 - t0;
}

// ---- detached sandboxes -------------------------------------------------------------------

// `n` sandboxes started with `run --state-dir --detach` (stubs serving an API socket until
// SIGTERM); then `ps` over them, spawn to exit, beside `ps` over an empty state dir and
// `sbx-supervisor --version` (the process floor); each detached supervisor's VmHWM; then `stop`
// on each. Runs as the bench user; returns a JSON object.
long status_kib(pid_t pid, const char* key);

std::string detached_run(const Setup& s, int n) {
  const std::string dir = s.work + "/detached", empty = s.work + "/detached-empty";
  mkdir(dir.c_str(), 0700);
  mkdir(empty.c_str(), 0700);
  int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
  std::vector<std::string> ids;
  int started = 0;
  for (int i = 0; i < n; ++i) {
    std::string id = "det-" + std::to_string(i);
    Spec spec = stub_spec(s, id, {"--serve", s.work + "/" + id + ".sock"}, true);
    std::string path = write_spec(s, spec, 10000);
    started += wait_exit(spawn({s.supervisor, "run", "--spec", path, "--helper", s.helper,
                                "--state-dir", dir, "--detach"},
                               null)) == 0;
    ids.push_back(id);
  }
  auto time_it = [&](const std::vector<std::string>& argv) {
    std::vector<int64_t> v;
    for (int k = 0; k < 21; ++k) {
      int64_t t0 = now_ns();
      int rc = wait_exit(spawn(argv, null));
      if (rc == 0) v.push_back(now_ns() - t0);
    }
    return stats(v);
  };
  Stats ps = time_it({s.supervisor, "ps", "--state-dir", dir});
  Stats ps_json = time_it({s.supervisor, "ps", "--state-dir", dir, "--json"});
  Stats ps_empty = time_it({s.supervisor, "ps", "--state-dir", empty});
  Stats version = time_it({s.supervisor, "--version"});
  double hwm_sum = 0, hwm_max = 0;
  std::vector<pid_t> supervisors;
  for (const auto& id : ids) {
    std::ifstream lock(dir + "/" + id + "/lock");
    pid_t pid = 0;
    lock >> pid;
    supervisors.push_back(pid);
    long hwm = pid > 0 ? status_kib(pid, "VmHWM:") : -1;
    hwm_sum += static_cast<double>(hwm);
    hwm_max = std::max<double>(hwm_max, static_cast<double>(hwm));
  }
  int stopped = 0;
  for (const auto& id : ids) {
    stopped += wait_exit(spawn({s.supervisor, "stop", id, "--state-dir", dir}, null)) == 0;
  }
  // `stop` returns at `exited`; each supervisor then closes its socket and exits. The detached
  // ones were reparented to this process (a subreaper): reap them, for at most a second.
  bool clean = false;
  for (int64_t give_up = now_ns() + 1000000000LL; !clean && now_ns() < give_up;) {
    while (waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    clean = true;
    for (pid_t pid : supervisors) clean = clean && pid > 0 && kill(pid, 0) != 0;
    if (!clean) usleep(2000);
  }
  close(null);
  json::object o{{"sandboxes", n},
                 {"started", started},
                 {"stopped", stopped},
                 {"ps_median_ms", ps.median_ms},
                 {"ps_p99_ms", ps.p99_ms},
                 {"ps_json_median_ms", ps_json.median_ms},
                 {"ps_empty_median_ms", ps_empty.median_ms},
                 {"version_median_ms", version.median_ms},
                 {"detached_vmhwm_kib_mean", hwm_sum / n},
                 {"detached_vmhwm_kib_max", hwm_max},
                 {"clean", clean}};
  return json::serialize(o);
}

// ---- scale -------------------------------------------------------------------------------

struct ScaleResult {
  int sandboxes = 0;
  double to_all_ready_ms = 0;
  double peak_rss_kib_mean = 0, peak_rss_kib_max = 0, pss_kib_mean = 0;
  bool clean = false;
};

long status_kib(pid_t pid, const char* key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return std::atol(line.c_str() + std::strlen(key));
  }
  return -1;
}

long pss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Pss:", 0) == 0) return std::atol(line.c_str() + 4);
  }
  return -1;
}

std::string scale_run(const Setup& s, int n) {
  std::vector<pid_t> pids;
  std::vector<int> fds;
  std::vector<std::string> specs;
  int64_t t0 = now_ns();
  for (int i = 0; i < n; ++i) {
    std::string id = "scale-" + std::to_string(n) + "-" + std::to_string(i);
    Spec spec = stub_spec(s, id, {"--serve", s.work + "/" + id + ".sock"}, true);
    specs.push_back(write_spec(s, spec, 10000));
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) die("pipe");
    pids.push_back(
        spawn({s.supervisor, "run", "--spec", specs.back(), "--helper", s.helper}, p[1]));
    close(p[1]);
    fds.push_back(p[0]);
  }
  std::vector<std::string> bufs(n);
  std::vector<bool> ready(n, false);
  int ready_count = 0;
  int64_t deadline = now_ns() + 300LL * 1000000000LL;
  while (ready_count < n && now_ns() < deadline) {
    std::vector<pollfd> pfds;
    std::vector<int> idx;
    for (int i = 0; i < n; ++i) {
      if (!ready[i]) {
        pfds.push_back({fds[i], POLLIN, 0});
        idx.push_back(i);
      }
    }
    if (poll(pfds.data(), pfds.size(), 1000) <= 0) continue;
    for (size_t k = 0; k < pfds.size(); ++k) {
      if (!(pfds[k].revents & (POLLIN | POLLHUP))) continue;
      int i = idx[k];
      char buf[512];
      ssize_t r = read(fds[i], buf, sizeof(buf));
      if (r <= 0) {
        ready[i] = true;  // exited before ready: counted, reported as not clean below
        ++ready_count;
        continue;
      }
      bufs[i].append(buf, static_cast<size_t>(r));
      if (bufs[i].find("\"ready\"") != std::string::npos) {
        ready[i] = true;
        ++ready_count;
      }
    }
  }
  ScaleResult r;
  r.sandboxes = n;
  r.to_all_ready_ms = (now_ns() - t0) / 1e6;
  int all_ready = 0;
  for (auto& b : bufs) all_ready += b.find("\"ready\"") != std::string::npos;
  double rss_sum = 0, pss_sum = 0;
  for (pid_t pid : pids) {
    long hwm = status_kib(pid, "VmHWM:");
    rss_sum += hwm;
    r.peak_rss_kib_max = std::max<double>(r.peak_rss_kib_max, hwm);
    pss_sum += pss_kib(pid);
  }
  r.peak_rss_kib_mean = rss_sum / n;
  r.pss_kib_mean = pss_sum / n;
  for (pid_t pid : pids) kill(pid, SIGTERM);
  int ok_exits = 0;
  for (pid_t pid : pids) ok_exits += wait_exit(pid) == 0;
  for (int fd : fds) close(fd);
  for (const auto& p : specs) unlink(p.c_str());
  // Clean: every supervisor exited 0, nothing left in the sandbox root.
  int left = 0;
  if (auto* d = opendir(s.sandboxes.c_str())) {
    while (auto* e = readdir(d)) left += e->d_name[0] != '.';
    closedir(d);
  }
  r.clean = all_ready == n && ok_exits == n && left == 0;
  json::object o{{"sandboxes", n},
                 {"ready", all_ready},
                 {"to_all_ready_ms", r.to_all_ready_ms},
                 {"peak_rss_kib_mean", r.peak_rss_kib_mean},
                 {"peak_rss_kib_max", r.peak_rss_kib_max},
                 {"pss_kib_mean", r.pss_kib_mean},
                 {"clean_exits", ok_exits},
                 {"sandbox_dirs_left", left},
                 {"clean", r.clean}};
  return json::serialize(o);
}

}  // namespace

int main(int argc, char** argv) {
  int launches = 200, stop_runs = 50, stop_budget_ms = 300, detached_runs = 200;
  std::vector<int> scales = {100, 500, 1000};
  std::string json_out = "bench-results.json";
  std::string bin_dir, src_dir;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--launches")
      launches = std::atoi(next().c_str());
    else if (a == "--stop-runs")
      stop_runs = std::atoi(next().c_str());
    else if (a == "--stop-budget-ms")
      stop_budget_ms = std::atoi(next().c_str());
    else if (a == "--detached")
      detached_runs = std::atoi(next().c_str());
    else if (a == "--json")
      json_out = next();
    else if (a == "--bin-dir")
      bin_dir = next();
    else if (a == "--src-dir")
      src_dir = next();
    else if (a == "--scale") {
      scales.clear();
      std::stringstream ss(next());
      std::string tok;
      while (std::getline(ss, tok, ',')) {
        if (!tok.empty()) scales.push_back(std::atoi(tok.c_str()));
      }
    } else {
      std::fprintf(stderr,
                   "usage: sbx-bench --bin-dir BUILD --src-dir SRC [--launches N] [--stop-runs N]"
                   " [--stop-budget-ms T] [--detached N] [--scale 100,500,1000] [--json PATH]\n");
      return 2;
    }
  }
  if (geteuid() != 0) {
    std::fprintf(stderr, "sbx-bench: run as root (bench/run.sh does)\n");
    return 2;
  }
  rlimit nofile{65536, 65536};
  setrlimit(RLIMIT_NOFILE, &nofile);
  Setup s;
  s.create(bin_dir, src_dir);

  // Interleaved launches: method m of round i, for every i, in turn.
  std::map<std::string, std::vector<int64_t>> lat, whole;
  for (int i = 0; i < launches; ++i) {
    lat["1 bare posix_spawn"].push_back(launch_bare(s, i));
    lat["1b two execs, no work"].push_back(launch_two_execs(s, i));
    lat["2 reference pipeline"].push_back(launch_reference(s, i));
    whole["6r reference pipeline"].push_back(whole_reference(s, i));
    std::string user = as_bench_user(s, [&] {
      mkdir(state_dir(s).c_str(), 0700);
      std::vector<int64_t> v{launch_bwrap(s, i),
                             launch_supervisor_process(s, i),
                             launch_in_process(s, i),
                             launch_supervisor_process_jailed(s, i),
                             launch_in_process_jailed(s, i),
                             launch_supervisor_process_pidns(s, i),
                             whole_run(s, i, false),
                             whole_run(s, i, true),
                             launch_in_process(s, i, true),
                             launch_supervisor_process_state(s, i),
                             whole_run_state(s, i)};
      if (!s.cgroup_parent.empty()) v.push_back(launch_supervisor_process_cgroup(s, i));
      return join(v);
    });
    auto v = split(user);
    if (v.size() >= 11) {
      lat["3 bwrap (no netns join)"].push_back(v[0]);
      lat["4 sbx-supervisor run"].push_back(v[1]);
      lat["5 in-process launch"].push_back(v[2]);
      lat["4j sbx-supervisor run, jailed"].push_back(v[3]);
      lat["5j in-process launch, jailed"].push_back(v[4]);
      lat["4p sbx-supervisor run, pidns"].push_back(v[5]);
      whole["6 sbx-supervisor run"].push_back(v[6]);
      whole["6j sbx-supervisor run, jailed"].push_back(v[7]);
      lat["5p in-process launch, pidns"].push_back(v[8]);
      lat["4s sbx-supervisor run, state dir"].push_back(v[9]);
      whole["6s sbx-supervisor run, state dir"].push_back(v[10]);
    }
    if (v.size() == 12) lat["4c sbx-supervisor run, cgroup"].push_back(v[11]);
  }
  std::map<std::string, Stats> st, wst;
  int failures = 0;
  for (auto& [name, v] : lat) {
    std::vector<int64_t> ok;
    for (auto x : v) (x > 0 ? ok.push_back(x) : (void)++failures);
    st[name] = stats(ok);
  }
  for (auto& [name, v] : whole) {
    std::vector<int64_t> ok;
    for (auto x : v) (x > 0 ? ok.push_back(x) : (void)++failures);
    wst[name] = stats(ok);
  }

  std::vector<int64_t> stop_term, overshoot;
  std::string stops = as_bench_user(s, [&] {
    std::vector<int64_t> a, b;
    for (int i = 0; i < stop_runs; ++i) {
      a.push_back(stop_once(s, i, false, 10000));
      b.push_back(stop_once(s, i, true, stop_budget_ms) - stop_budget_ms * 1000000LL);
    }
    return join(a) + "| " + join(b);
  });
  size_t bar = stops.find('|');
  stop_term = split(stops.substr(0, bar));
  overshoot = split(stops.substr(bar + 1));

  const std::string detached =
      detached_runs > 0 ? as_bench_user(s, [&] { return detached_run(s, detached_runs); }) : "";
  std::vector<std::string> scale_results;
  for (int n : scales) scale_results.push_back(as_bench_user(s, [&] { return scale_run(s, n); }));
  s.destroy();

  // Report.
  const double floor = st["1 bare posix_spawn"].median_ms;
  const double ref = st["2 reference pipeline"].median_ms;
  std::printf("\nLaunch latency, request to the VMM's first instruction (%d interleaved rounds)\n",
              launches);
  std::printf("%-28s %9s %9s %10s %10s\n", "method", "median ms", "p99 ms", "x floor", "ref / x");
  json::object out;
  json::object lj;
  for (auto& [name, v] : st) {
    std::printf("%-28s %9.3f %9.3f %10.2f %10.2f\n", name.c_str(), v.median_ms, v.p99_ms,
                v.median_ms / floor, ref / v.median_ms);
    lj[name] =
        json::object{{"median_ms", v.median_ms},       {"p99_ms", v.p99_ms},
                     {"mean_ms", v.mean_ms},           {"n", v.n},
                     {"x_floor", v.median_ms / floor}, {"speedup_vs_reference", ref / v.median_ms}};
  }
  std::printf("(bwrap cannot join an existing netns; its row has no netns work)\n");
  std::printf("(4c: 4 with a cgroup per sandbox in a delegated subtree of %s)\n",
              s.cgroup_root.empty() ? "(no cgroup2 mount: not run)" : s.cgroup_root.c_str());
  std::printf(
      "(1b: a static program that only execs the stub: the least a helper process costs)\n");
  std::printf(
      "(4, 5: no PID namespace; 4p, 5p: the default PID namespace and its init; 4j, 5j: jailed, "
      "with the PID namespace a jail needs; 4s: 4 with --state-dir)\n");
  const double whole_ref = wst["6r reference pipeline"].median_ms;
  std::printf(
      "\nThe whole process, spawn to exit, for a VMM that exits at once (default PID "
      "namespace)\n");
  std::printf("%-32s %9s %9s %10s\n", "method", "median ms", "p99 ms", "ref / x");
  json::object wj;
  for (auto& [name, v] : wst) {
    std::printf("%-32s %9.3f %9.3f %10.2f\n", name.c_str(), v.median_ms, v.p99_ms,
                whole_ref / v.median_ms);
    wj[name] = json::object{{"median_ms", v.median_ms},
                            {"p99_ms", v.p99_ms},
                            {"mean_ms", v.mean_ms},
                            {"n", v.n},
                            {"speedup_vs_reference", whole_ref / v.median_ms}};
  }
  out["whole_process"] = wj;
  Stats t = stats(stop_term), o = stats(overshoot);
  std::printf("\nStop, request to reaped (%d runs each)\n", stop_runs);
  std::printf("exits on SIGTERM:             median %.3f ms  p99 %.3f ms\n", t.median_ms, t.p99_ms);
  std::printf("ignores SIGTERM, budget %d ms: overshoot median %.3f ms  p99 %.3f ms\n",
              stop_budget_ms, o.median_ms, o.p99_ms);
  std::printf("\nScale: concurrent `sbx-supervisor run`\n");
  json::array sj;
  for (const auto& r : scale_results) {
    json::object o2 = json::parse(r).as_object();
    std::printf(
        "%5lld sandboxes: all ready in %8.1f ms, supervisor peak RSS mean %.0f KiB (max %.0f),"
        " PSS mean %.0f KiB, clean: %s\n",
        static_cast<long long>(o2["sandboxes"].as_int64()),
        o2["to_all_ready_ms"].to_number<double>(), o2["peak_rss_kib_mean"].to_number<double>(),
        o2["peak_rss_kib_max"].to_number<double>(), o2["pss_kib_mean"].to_number<double>(),
        o2["clean"].as_bool() ? "yes" : "NO");
    sj.push_back(o2);
  }
  if (!detached.empty()) {
    json::object d = json::parse(detached).as_object();
    std::printf("\nDetached sandboxes (run --state-dir --detach)\n");
    std::printf(
        "%lld started, %lld stopped, clean: %s\n"
        "ps over them: median %.1f ms (p99 %.1f, --json %.1f); ps over none %.1f ms; "
        "sbx-supervisor --version %.1f ms\n"
        "detached supervisor VmHWM: mean %.0f KiB, max %.0f KiB\n",
        static_cast<long long>(d["started"].as_int64()),
        static_cast<long long>(d["stopped"].as_int64()), d["clean"].as_bool() ? "yes" : "NO",
        d["ps_median_ms"].to_number<double>(), d["ps_p99_ms"].to_number<double>(),
        d["ps_json_median_ms"].to_number<double>(), d["ps_empty_median_ms"].to_number<double>(),
        d["version_median_ms"].to_number<double>(),
        d["detached_vmhwm_kib_mean"].to_number<double>(),
        d["detached_vmhwm_kib_max"].to_number<double>());
    out["detached"] = d;
  }
  out["launch"] = lj;
  out["launch_failures"] = failures;
  out["stop_sigterm"] = json::object{{"median_ms", t.median_ms}, {"p99_ms", t.p99_ms}};
  out["stop_kill_overshoot"] =
      json::object{{"budget_ms", stop_budget_ms}, {"median_ms", o.median_ms}, {"p99_ms", o.p99_ms}};
  out["scale"] = sj;
  std::ofstream(json_out) << json::serialize(out) << "\n";
  std::printf("\nJSON: %s\n", json_out.c_str());
  return failures == 0 ? 0 : 1;
}
