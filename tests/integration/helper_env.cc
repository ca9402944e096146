// SPDX-License-Identifier: Apache-2.0
#include "tests/integration/helper_env.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace sbx::it {

int kernel_landlock_abi() {
  constexpr unsigned kVersion = 1U << 0;  // LANDLOCK_CREATE_RULESET_VERSION
  const long abi = syscall(SYS_landlock_create_ruleset, nullptr, 0L, static_cast<long>(kVersion));
  return abi > 0 ? static_cast<int>(abi) : 0;
}

int layer_landlock_abi() {
  return std::min(kernel_landlock_abi(), 6);
}

bool kernel_at_least(int major, int minor) {
  utsname u{};
  if (uname(&u) != 0) return false;
  int ma = 0, mi = 0;
  if (std::sscanf(u.release, "%d.%d", &ma, &mi) != 2) return false;
  return ma > major || (ma == major && mi >= minor);
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string read_text_or_empty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::map<std::string, std::string> proc_status(pid_t pid) {
  std::map<std::string, std::string> out;
  std::istringstream in(read_text_or_empty("/proc/" + std::to_string(pid) + "/status"));
  for (std::string line; std::getline(in, line);) {
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    size_t b = line.find_first_not_of(" \t", colon + 1);
    out[line.substr(0, colon)] = b == std::string::npos ? "" : line.substr(b);
  }
  return out;
}

std::string process_tree_report(pid_t pid) {
  std::string out;
  std::vector<std::pair<pid_t, int>> todo{{pid, 0}};
  while (!todo.empty() && out.size() < 16384) {
    auto [p, depth] = todo.back();
    todo.pop_back();
    const std::string proc = "/proc/" + std::to_string(p);
    const std::string state = proc_status(p)["State"];
    out += std::string(2 * depth, ' ') + "pid " + std::to_string(p);
    if (state.empty()) {
      out += ": gone\n";
      continue;
    }
    out += " (" + trimmed(read_text_or_empty(proc + "/comm")) + ") " + state + ", wchan " +
           read_text_or_empty(proc + "/wchan") + "\n";
    std::istringstream stack(read_text_or_empty(proc + "/stack"));
    for (std::string line; std::getline(stack, line);) {
      out += std::string(2 * depth + 4, ' ') + line + "\n";
    }
    // Children of every thread (CONFIG_PROC_CHILDREN, which Debian's kernels have).
    std::error_code ec;
    for (const auto& task : std::filesystem::directory_iterator(proc + "/task", ec)) {
      std::istringstream kids(read_text_or_empty(task.path().string() + "/children"));
      for (pid_t kid; kids >> kid;) todo.emplace_back(kid, depth + 1);
    }
  }
  return out;
}

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kSetcap = "/sbin/setcap";
constexpr const char* kIp = "/usr/sbin/ip";
constexpr const char* kLockPath = "/run/lock/sbx-it.lock";
constexpr const char* kPolicyHeader = "# written by sbx_helper_integration_tests";
// Markers in the private dir that let a later run undo what a crashed run did to the policy.
constexpr const char* kPolicyBackup = "policy.orig";
constexpr const char* kPolicyCreated = "policy-created";
constexpr const char* kPolicyDirCreated = "policy-dir-created";

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what);
}

[[noreturn]] void fail_errno(const std::string& what) {
  fail(what + ": " + std::strerror(errno));
}

// Children spawned through ChildProcess, so orphan reaping never steals their status.
std::set<pid_t>& owned_children() {
  static std::set<pid_t> pids;
  return pids;
}

std::string getenv_or_fail(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') fail(std::string("environment variable ") + name + " is not set");
  return v;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& text, mode_t mode, uid_t uid,
                gid_t gid) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) fail_errno("create " + path);
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      close(fd);
      fail_errno("write " + path);
    }
    done += static_cast<size_t>(n);
  }
  if (fchown(fd, uid, gid) != 0 || fchmod(fd, mode) != 0) {
    close(fd);
    fail_errno("chown/chmod " + path);
  }
  close(fd);
}

void make_dir(const std::string& path, mode_t mode, uid_t uid, gid_t gid) {
  if (mkdir(path.c_str(), mode) != 0) fail_errno("mkdir " + path);
  if (chown(path.c_str(), uid, gid) != 0 || chmod(path.c_str(), mode) != 0) {
    fail_errno("chown/chmod " + path);
  }
}

void copy_file(const std::string& from, const std::string& to, mode_t mode, uid_t uid, gid_t gid) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) fail("copy " + from + " to " + to + ": " + ec.message());
  if (chown(to.c_str(), uid, gid) != 0 || chmod(to.c_str(), mode) != 0) {
    fail_errno("chown/chmod " + to);
  }
}

void make_symlink(const std::string& target, const std::string& path) {
  if (symlink(target.c_str(), path.c_str()) != 0) fail_errno("symlink " + path);
}

std::string exit_text(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

bool is_number(const char* s) {
  if (*s == '\0') return false;
  for (; *s != '\0'; ++s) {
    if (*s < '0' || *s > '9') return false;
  }
  return true;
}

// Reaps children handed to this process (a subreaper) that no ChildProcess owns.
void reap_orphans() {
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return;
  std::vector<pid_t> orphans;
  const pid_t self = getpid();
  while (dirent* e = readdir(proc)) {
    if (!is_number(e->d_name)) continue;
    std::ifstream in(std::string("/proc/") + e->d_name + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), {});
    size_t paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    std::istringstream rest(stat.substr(paren + 1));
    std::string state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    pid_t pid = std::atoi(e->d_name);
    if (ppid == self && owned_children().count(pid) == 0) orphans.push_back(pid);
  }
  closedir(proc);
  for (pid_t pid : orphans) waitpid(pid, nullptr, WNOHANG);
}

void kill_test_user_processes() {
  for (pid_t pid : HelperEnv::test_user_processes()) kill(pid, SIGKILL);
}

// Puts `text` at `path` atomically (root 0644): the helper never sees a half-written policy.
void install_policy_text(const std::string& path, const std::string& text) {
  std::string tmp = path + ".it-tmp";
  unlink(tmp.c_str());
  write_file(tmp, text, 0644, 0, 0);
  if (rename(tmp.c_str(), path.c_str()) != 0) fail_errno("rename " + tmp);
}

// Undoes what a crashed run left. Runs under the lock, so no other run is live.
void remove_leftovers(const std::string& policy_path) {
  bool policy_is_ours = read_text_or_empty(policy_path).starts_with(kPolicyHeader);
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/run", ec)) {
    std::string name = entry.path().filename();
    if (!name.starts_with("sbx-it-") || entry.is_symlink() || !entry.is_directory()) continue;
    std::string d = entry.path();
    if (policy_is_ours) {
      if (fs::exists(d + "/" + kPolicyBackup)) {
        install_policy_text(policy_path, read_text(d + "/" + kPolicyBackup));
        policy_is_ours = false;
      } else if (fs::exists(d + "/" + kPolicyCreated)) {
        unlink(policy_path.c_str());
        if (fs::exists(d + "/" + kPolicyDirCreated)) {
          rmdir(fs::path(policy_path).parent_path().c_str());
        }
        policy_is_ours = false;
      }
    }
    fs::remove_all(entry.path(), ec);
  }
  if (policy_is_ours) unlink(policy_path.c_str());
  for (const auto& entry : fs::directory_iterator("/run/netns", ec)) {
    std::string name = entry.path().filename();
    if (!name.starts_with("sbx-it-")) continue;
    // `ip netns del` detaches and unlinks a netns; a plain file (a "not nsfs" test) is unlinked.
    run_command({kIp, "netns", "del", name});
    unlink(entry.path().c_str());
  }
  for (const auto& entry : fs::directory_iterator("/etc/netns", ec)) {
    if (std::string(entry.path().filename()).starts_with("sbx-it-")) {
      fs::remove_all(entry.path(), ec);
    }
  }
  kill_test_user_processes();
  HelperEnv::wait_no_test_user_processes();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// ChildProcess

ChildProcess::ChildProcess(const std::vector<std::string>& argv, const SpawnOptions& options,
                           const std::string& stderr_path)
    : stderr_path_(stderr_path) {
  if (argv.empty()) fail("ChildProcess: empty argv");
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) fail_errno("pipe2");
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  int err = stderr_path.empty()
                ? out[1]
                : open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (devnull < 0 || err < 0) {
    int e = errno;
    close(out[0]);
    close(out[1]);
    if (devnull >= 0) close(devnull);
    errno = e;
    fail_errno("open stdio for " + argv[0]);
  }
  // Everything the child needs is built before fork: after it only async-signal-safe calls.
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  std::vector<int> keep;
  for (const auto& [child_fd, parent_fd] : options.fd_map) keep.push_back(child_fd);
  for (int fd : options.inherit) keep.push_back(fd);

  pid_ = fork();
  if (pid_ < 0) fail_errno("fork");
  if (pid_ == 0) {
    // Lift every source above the numbers being assigned, then place them.
    constexpr int kHigh = 1000;
    int l_in = fcntl(devnull, F_DUPFD_CLOEXEC, kHigh);
    int l_out = fcntl(out[1], F_DUPFD_CLOEXEC, kHigh);
    int l_err = fcntl(err, F_DUPFD_CLOEXEC, kHigh);
    int lifted[64];
    size_t n_map = std::min<size_t>(options.fd_map.size(), 64);
    for (size_t i = 0; i < n_map; ++i) {
      lifted[i] = fcntl(options.fd_map[i].second, F_DUPFD_CLOEXEC, kHigh);
    }
    if (l_in < 0 || l_out < 0 || l_err < 0 || dup2(l_in, 0) < 0 || dup2(l_out, 1) < 0 ||
        dup2(l_err, 2) < 0) {
      _exit(120);
    }
    for (size_t i = 0; i < n_map; ++i) {
      if (lifted[i] < 0 || dup2(lifted[i], options.fd_map[i].first) < 0) _exit(121);
    }
    close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
    for (int fd : keep) {
      if (fcntl(fd, F_SETFD, 0) != 0) _exit(122);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGTERM, options.ignore_sigterm ? SIG_IGN : SIG_DFL);
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  owned_children().insert(pid_);
  close(out[1]);
  close(devnull);
  if (!stderr_path.empty()) close(err);
  stdout_fd_ = out[0];
}

ChildProcess::~ChildProcess() {
  if (!reaped_) {
    kill(pid_, SIGKILL);
    while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  owned_children().erase(pid_);
  if (stdout_fd_ >= 0) close(stdout_fd_);
}

std::optional<std::string> ChildProcess::read_line(std::chrono::milliseconds timeout) {
  return read_line_until(deadline_after(timeout));
}

std::optional<std::string> ChildProcess::read_line_until(Clock::time_point deadline) {
  while (true) {
    size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return line;
    }
    if (eof_) {
      if (buffer_.empty()) return std::nullopt;
      return std::exchange(buffer_, {});
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd pfd{stdout_fd_, POLLIN, 0};
    int r = poll(&pfd, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fail_errno("poll");
    if (r == 0) return std::nullopt;
    char buf[4096];
    ssize_t n = read(stdout_fd_, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail_errno("read child stdout");
    if (n == 0) {
      eof_ = true;
    } else {
      buffer_.append(buf, static_cast<size_t>(n));
    }
  }
}

std::string ChildProcess::read_all(std::chrono::milliseconds timeout) {
  const auto deadline = deadline_after(timeout);
  std::string all;
  while (true) {
    auto line = read_line_until(deadline);
    if (line) {
      all += *line + "\n";
      continue;
    }
    if (eof_) return all;
    fail("no EOF from pid " + std::to_string(pid_) + " in time; got: " + all);
  }
}

std::optional<int> ChildProcess::wait(std::chrono::milliseconds timeout) {
  if (reaped_) fail("wait: pid " + std::to_string(pid_) + " already reaped");
  const auto deadline = deadline_after(timeout);
  while (true) {
    int status = 0;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      return status;
    }
    if (r < 0 && errno != EINTR) fail_errno("waitpid");
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid_, SIGKILL);
  while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
  }
  reaped_ = true;
  return std::nullopt;
}

std::string ChildProcess::stderr_text() const {
  if (stderr_path_.empty()) return {};
  return read_text_or_empty(stderr_path_);
}

int run_command(const std::vector<std::string>& argv, std::string* output) {
  ChildProcess child(argv, {}, "");
  std::string text = child.read_all(std::chrono::seconds(30));
  auto status = child.wait(std::chrono::seconds(30));
  if (!status) fail("timed out: " + argv[0]);
  if (output != nullptr) *output = text;
  return WIFEXITED(*status) ? WEXITSTATUS(*status) : 128 + WTERMSIG(*status);
}

Clock::time_point deadline_after(std::chrono::milliseconds timeout) {
  return Clock::now() + timeout * time_scale();
}

// ---------------------------------------------------------------------------------------------
// PolicySpec, Launch, JSON accessors

std::string PolicySpec::text() const {
  std::string out = std::string(kPolicyHeader) + " (pid " + std::to_string(getpid()) + ")\n";
  for (const auto& v : vmms) out += "vmm = " + v + "\n";
  for (const auto& v : sandbox_roots) out += "sandbox_root = " + v + "\n";
  for (const auto& v : image_roots) out += "image_root = " + v + "\n";
  for (const auto& v : netns_globs) out += "netns = " + v + "\n";
  out += "tmpfs_size_mb = " + std::to_string(tmpfs_size_mb) + "\n";
  out += "rlimit_nofile = " + std::to_string(rlimit_nofile) + "\n";
  out += std::string("allow_root_vmm = ") + (allow_root_vmm ? "true" : "false") + "\n";
  for (const auto& l : extra_lines) out += l + "\n";
  return out;
}

protocol::LaunchRequest make_request(const LaunchArgs& args) {
  protocol::LaunchRequest req;
  req.id = args.id;
  req.vmm = args.vmm;
  req.args = args.vmm_args;
  req.env = args.env;
  req.sandbox_dir = args.sandbox_dir;
  req.netns = args.netns;
  for (const auto& [name, target] : args.links) req.links.push_back({name, target});
  req.pid_namespace = args.pid_namespace;
  req.devices = args.devices;
  req.read_only = args.read_only;
  req.read_write = args.read_write;
  req.api_socket_dir = args.api_socket_dir;
  req.jail = args.jail;
  req.files = args.files || args.jail || !args.devices.empty() || !args.read_only.empty() ||
              !args.read_write.empty() || args.api_socket_dir;
  return req;
}

pid_t Launch::helper_pid() const {
  return static_cast<pid_t>(json_int(line, "helper_pid"));
}
pid_t Launch::vmm_pid() const {
  return static_cast<pid_t>(json_int(line, "vmm_pid"));
}

const boost::json::object& Launch::error() const {
  if (ok()) fail("the launch succeeded: " + boost::json::serialize(line));
  return line.at("error").as_object();
}

boost::json::object HelperEnvTest::expect_refused(const LaunchArgs& args, const std::string& step,
                                                  std::optional<int> err, int exit_code) {
  const std::string mounts = HelperEnv::host_mountinfo();
  const auto listing = env().sandbox_root_listing();
  Launch l = env().launch(args);
  boost::json::object error;
  if (l.ok()) {
    ADD_FAILURE() << "the helper launched the VMM: " << boost::json::serialize(l.line);
    env().stop(l);
  } else {
    error = l.error();
    EXPECT_EQ(json_str(error, "step"), step) << boost::json::serialize(error);
    if (err) {
      EXPECT_EQ(json_int(error, "errno"), *err) << boost::json::serialize(error);
    }
    boost::json::object exit = env().read_exit(l);
    EXPECT_EQ(json_int(exit, "pid"), l.helper_pid());
    EXPECT_EQ(exit.at("code"), boost::json::value(exit_code)) << boost::json::serialize(exit);
  }
  EXPECT_EQ(HelperEnv::host_mountinfo(), mounts);
  EXPECT_EQ(env().sandbox_root_listing(), listing);
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes())
      << "left: " << ::testing::PrintToString(HelperEnv::test_user_processes());
  return error;
}

std::string json_str(const boost::json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr || !v->is_string()) {
    fail(std::string("no string '") + key + "' in " + boost::json::serialize(o));
  }
  return std::string(v->as_string());
}

int64_t json_int(const boost::json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr || !(v->is_int64() || v->is_uint64())) {
    fail(std::string("no integer '") + key + "' in " + boost::json::serialize(o));
  }
  return v->to_number<int64_t>();
}

std::vector<int64_t> json_ints(const boost::json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr || !v->is_array()) {
    fail(std::string("no array '") + key + "' in " + boost::json::serialize(o));
  }
  std::vector<int64_t> out;
  for (const auto& e : v->as_array()) out.push_back(e.to_number<int64_t>());
  return out;
}

std::vector<std::string> json_strs(const boost::json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr || !v->is_array()) {
    fail(std::string("no array '") + key + "' in " + boost::json::serialize(o));
  }
  std::vector<std::string> out;
  for (const auto& e : v->as_array()) out.emplace_back(e.as_string());
  return out;
}

// ---------------------------------------------------------------------------------------------
// HelperEnv

HelperEnv::HelperEnv() {
  try {
    set_up();
  } catch (...) {
    tear_down();
    throw;
  }
}

HelperEnv::~HelperEnv() {
  tear_down();
}

void HelperEnv::set_up() {
  // A bad factor fails the environment by name, before any test runs on it.
  time_scale();
  loop_divisor();
  const std::string helper_src = getenv_or_fail("SBX_TEST_HELPER");
  const std::string probe_src = getenv_or_fail("SBX_TEST_PROBE");
  const std::string driver_src = getenv_or_fail("SBX_TEST_DRIVER");
  policy_path_ = getenv_or_fail("SBX_TEST_POLICY_PATH");

  // Orphans (a VMM whose driver was killed) come back here to be reaped, not to pid 1.
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) fail_errno("PR_SET_CHILD_SUBREAPER");

  // One run at a time on this machine: the policy path and the test uid are shared.
  lock_fd_ = open(kLockPath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (lock_fd_ < 0) fail_errno(std::string("open ") + kLockPath);
  const auto lock_deadline = deadline_after(std::chrono::seconds(60));
  while (flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) fail_errno("flock");
    if (Clock::now() >= lock_deadline)
      fail("another integration run holds " + std::string(kLockPath));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  remove_leftovers(policy_path_);

  char tmpl[] = "/run/sbx-it-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) fail_errno("mkdtemp /run/sbx-it-XXXXXX");
  dir_ = tmpl;
  if (chown(dir_.c_str(), 0, 0) != 0 || chmod(dir_.c_str(), 0755) != 0) fail_errno("chmod " + dir_);

  bin_ = dir_ + "/bin";
  make_dir(bin_, 0755, 0, 0);
  helper_ = bin_ + "/sbx-nsexec";
  copy_file(helper_src, helper_, 0755, 0, 0);
  std::string out;
  if (int rc = run_command({kSetcap, "cap_sys_admin,cap_audit_write+ep", helper_}, &out); rc != 0) {
    fail("setcap cap_sys_admin,cap_audit_write+ep " + helper_ + " failed (" + std::to_string(rc) +
         "): " + out);
  }
  driver_ = bin_ + "/sbx-test-launch";
  copy_file(driver_src, driver_, 0755, 0, 0);
  probe_ = bin_ + "/sbx-probe-vmm";
  copy_file(probe_src, probe_, 0755, 0, 0);

  images_ = dir_ + "/images";
  make_dir(images_, 0755, 0, 0);
  write_file(images_ + "/vmlinux", "not a kernel\n", 0644, 0, 0);
  write_file(images_ + "/rootfs.ext4", "not a filesystem\n", 0644, 0, 0);
  make_dir(images_ + "/sub", 0755, 0, 0);
  write_file(images_ + "/sub/snap.bin", "not a snapshot\n", 0644, 0, 0);
  make_symlink("/etc/passwd", images_ + "/evil-link");
  make_symlink("sub", images_ + "/linkdir");

  sandboxes_ = dir_ + "/sandboxes";
  make_dir(sandboxes_, 01770, 0, kTestGid);
  work_ = dir_ + "/work";
  make_dir(work_, 0700, kTestUid, kTestGid);
  root_work_ = dir_ + "/root-work";
  make_dir(root_work_, 0700, 0, 0);
  logs_ = dir_ + "/logs";
  make_dir(logs_, 0700, 0, 0);

  netns_ = "sbx-it-" + std::to_string(getpid());
  if (int rc = run_command({kIp, "netns", "add", netns_}, &out); rc != 0) {
    fail("ip netns add " + netns_ + " failed: " + out);
  }
  netns_made_ = true;
  struct stat st;
  if (lstat("/etc/netns", &st) != 0) {
    make_dir("/etc/netns", 0755, 0, 0);
    etc_netns_made_ = true;
  }
  netns_etc_dir_ = "/etc/netns/" + netns_;
  make_dir(netns_etc_dir_, 0755, 0, 0);
  hosts_marker_ = "192.0.2.77 sbx-it-marker-" + std::to_string(getpid()) + "-" +
                  fs::path(dir_).filename().string();
  write_file(netns_etc_dir_ + "/hosts", "127.0.0.1 localhost\n" + hosts_marker_ + "\n", 0644, 0, 0);

  // The policy: remember what was there (in the private dir, so a crashed run can be undone).
  std::string policy_dir = fs::path(policy_path_).parent_path();
  if (lstat(policy_dir.c_str(), &st) != 0) {
    write_file(dir_ + "/" + kPolicyDirCreated, "", 0600, 0, 0);
    make_dir(policy_dir, 0755, 0, 0);
    policy_dir_made_ = true;
  }
  if (lstat(policy_path_.c_str(), &st) == 0) {
    write_file(dir_ + "/" + kPolicyBackup, read_text(policy_path_), 0600, 0, 0);
    policy_existed_ = true;
  } else {
    write_file(dir_ + "/" + kPolicyCreated, "", 0600, 0, 0);
  }
  policy_dirty_ = true;
  restore_default_policy();
}

void HelperEnv::tear_down() {
  auto best_effort = [](const char* what, auto&& fn) {
    try {
      fn();
    } catch (const std::exception& e) {
      std::cerr << "helper_env teardown: " << what << ": " << e.what() << "\n";
    }
  };
  best_effort("processes", [] {
    kill_test_user_processes();
    wait_no_test_user_processes();
  });
  if (netns_made_) {
    best_effort("netns", [this] {
      std::string out;
      if (run_command({kIp, "netns", "del", netns_}, &out) != 0) {
        fail("ip netns del " + netns_ + ": " + out);
      }
      netns_made_ = false;
    });
  }
  std::error_code ec;
  if (!netns_etc_dir_.empty()) fs::remove_all(netns_etc_dir_, ec);
  if (etc_netns_made_) rmdir("/etc/netns");
  if (!policy_path_.empty() && !dir_.empty() && policy_dirty_) {
    best_effort("policy", [this] {
      if (policy_existed_) {
        install_policy_text(policy_path_, read_text(dir_ + "/" + kPolicyBackup));
      } else {
        unlink(policy_path_.c_str());
        if (policy_dir_made_) rmdir(fs::path(policy_path_).parent_path().c_str());
      }
    });
  }
  if (!dir_.empty()) fs::remove_all(dir_, ec);
  if (lock_fd_ >= 0) close(lock_fd_);
  lock_fd_ = -1;
}

PolicySpec HelperEnv::default_policy() const {
  PolicySpec p;
  p.vmms = {probe_};
  p.sandbox_roots = {sandboxes_};
  p.image_roots = {images_};
  p.netns_globs = {"sbx-it-*"};
  p.tmpfs_size_mb = 8;
  p.rlimit_nofile = 512;
  return p;
}

void HelperEnv::write_policy(const PolicySpec& spec) {
  write_policy_text(spec.text());
}

void HelperEnv::write_policy_text(const std::string& text) {
  install_policy_text(policy_path_, text);
}

void HelperEnv::restore_default_policy() {
  write_policy(default_policy());
}

std::string HelperEnv::install_vmm_copy(const std::string& name, uid_t uid, mode_t mode) {
  std::string path = bin_ + "/" + name;
  copy_file(probe_, path, mode, uid, 0);
  return path;
}

std::string HelperEnv::make_work_file(const std::string& name, const std::string& content) {
  std::string path = work_ + "/" + name;
  write_file(path, content, 0644, 0, 0);
  return path;
}

std::string HelperEnv::make_caller_dir(const std::string& name) {
  std::string path = sandboxes_ + "/" + name;
  make_dir(path, 0700, kTestUid, kTestGid);
  return path;
}

std::string HelperEnv::fresh_path(const std::string& stem) {
  return dir_ + "/" + stem + "-" + std::to_string(++counter_);
}

LaunchArgs HelperEnv::probe_args(const std::string& tag) {
  LaunchArgs a;
  a.id = "it-" + tag + "-" + std::to_string(++counter_);
  a.vmm = probe_;
  a.sandbox_dir = sandboxes_ + "/" + a.id;
  a.netns = netns_;
  a.links = {{"vmlinux", images_ + "/vmlinux"}, {"rootfs.ext4", images_ + "/rootfs.ext4"}};
  a.env = {"SBX_TEST=1", "PATH=/usr/bin"};
  a.vmm_args = {"--report", work_ + "/report-" + a.id + ".json", "--api-sock",
                work_ + "/api-" + a.id + ".sock"};
  return a;
}

std::string HelperEnv::report_path(const LaunchArgs& args) const {
  for (size_t i = 0; i + 1 < args.vmm_args.size(); ++i) {
    if (args.vmm_args[i] == "--report") return args.vmm_args[i + 1];
  }
  fail("the launch has no --report");
}

Launch HelperEnv::launch(const LaunchArgs& args) {
  std::vector<std::string> argv;
  if (!args.as_root) {
    argv = as_test_user();
  }
  argv.insert(argv.end(), {driver_, "--helper", args.helper.empty() ? helper_ : args.helper});
  if (!args.raw_file.empty()) {
    argv.insert(argv.end(), {"--raw", args.raw_file});
  } else if (args.empty) {
    argv.push_back("--empty");
  } else {
    argv.insert(argv.end(),
                {"--id", args.id, "--vmm", args.vmm, "--sandbox-dir", args.sandbox_dir});
    if (args.netns) argv.insert(argv.end(), {"--netns", *args.netns});
    for (const auto& [name, target] : args.links) {
      argv.insert(argv.end(), {"--link", name + "=" + target});
    }
    for (const auto& e : args.env) argv.insert(argv.end(), {"--env", e});
    if (args.pid_namespace) argv.push_back("--pidns");
    for (const auto& [path, target] : args.pass_files) {
      argv.insert(argv.end(), {"--pass-file", path + ":" + std::to_string(target)});
    }
    if (args.files) argv.push_back("--files");
    if (args.jail) argv.push_back("--jail");
    for (const auto& d : args.devices) argv.insert(argv.end(), {"--device", d});
    for (const auto& r : args.read_only) argv.insert(argv.end(), {"--read-only", r});
    for (const auto& r : args.read_write) argv.insert(argv.end(), {"--read-write", r});
    if (args.api_socket_dir) argv.insert(argv.end(), {"--api-socket-dir", *args.api_socket_dir});
  }
  if (!args.vmm_args.empty()) {
    argv.push_back("--");
    argv.insert(argv.end(), args.vmm_args.begin(), args.vmm_args.end());
  }
  SpawnOptions options;
  options.inherit = args.inherit_fds;
  options.ignore_sigterm = args.ignore_sigterm;
  Launch l;
  l.driver = std::make_unique<ChildProcess>(
      argv, options, logs_ + "/driver-" + std::to_string(++counter_) + ".stderr");
  auto line = l.driver->read_line();
  if (!line) fail("no launch line from the driver; its stderr: " + l.driver->stderr_text());
  boost::json::value v = boost::json::parse(*line);
  if (!v.is_object() || json_str(v.as_object(), "event") != "launch") {
    fail("expected a launch line, got: " + *line);
  }
  l.line = std::move(v.as_object());
  return l;
}

boost::json::object HelperEnv::read_exit(Launch& launch) {
  auto line = launch.driver->read_line();
  if (!line) fail("no exit line from the driver; its stderr: " + launch.driver->stderr_text());
  boost::json::value v = boost::json::parse(*line);
  if (!v.is_object() || json_str(v.as_object(), "event") != "exit") {
    fail("expected an exit line, got: " + *line);
  }
  auto status = launch.driver->wait();
  if (!status) fail("the driver did not exit after its exit line");
  if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    fail("the driver ended with " + exit_text(*status) +
         "; stderr: " + launch.driver->stderr_text());
  }
  return std::move(v.as_object());
}

boost::json::object HelperEnv::stop(Launch& launch) {
  if (!launch.ok()) fail("stop: the launch failed: " + boost::json::serialize(launch.line));
  pid_t pid = launch.vmm_pid();
  // The probe installs its SIGTERM handler just after writing its report; wait for it so the
  // signal is handled (and, as pid 1 of a PID namespace, not dropped).
  const auto deadline = deadline_after(kTimeout);
  while (Clock::now() < deadline) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    if (!in) break;
    std::string l;
    bool caught = false;
    while (std::getline(in, l)) {
      if (l.starts_with("SigCgt:")) {
        unsigned long long mask = std::stoull(l.substr(7), nullptr, 16);
        caught = (mask >> (SIGTERM - 1)) & 1;
      }
    }
    if (caught) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (kill(pid, SIGTERM) != 0) fail_errno("kill SIGTERM " + std::to_string(pid));
  return read_exit(launch);
}

boost::json::object HelperEnv::wait_for_report(const std::string& path,
                                               std::chrono::milliseconds timeout) const {
  const auto deadline = deadline_after(timeout);
  struct stat st;
  while (lstat(path.c_str(), &st) != 0) {
    if (Clock::now() >= deadline) fail("no probe report at " + path);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  boost::json::value v = boost::json::parse(read_text(path));
  if (!v.is_object()) fail("the report at " + path + " is not an object");
  return std::move(v.as_object());
}

std::unique_ptr<ChildProcess> HelperEnv::spawn_helper(const std::vector<std::string>& args,
                                                      const SpawnOptions& options, bool as_root) {
  std::vector<std::string> argv;
  if (!as_root) {
    argv = as_test_user();
  }
  argv.push_back(helper_);
  argv.insert(argv.end(), args.begin(), args.end());
  return std::make_unique<ChildProcess>(
      argv, options, logs_ + "/helper-" + std::to_string(++counter_) + ".stderr");
}

std::string HelperEnv::host_mountinfo() {
  return read_text("/proc/self/mountinfo");
}

std::vector<std::string> HelperEnv::sandbox_root_listing() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(sandboxes_, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) fail("list " + sandboxes_ + ": " + ec.message());
    struct stat st;
    if (lstat(it->path().c_str(), &st) != 0) fail_errno("lstat " + it->path().string());
    std::ostringstream line;
    line << fs::relative(it->path(), sandboxes_).string() << " mode=" << std::oct << st.st_mode
         << std::dec << " uid=" << st.st_uid << " gid=" << st.st_gid;
    out.push_back(line.str());
  }
  if (ec) fail("list " + sandboxes_ + ": " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<pid_t> HelperEnv::test_user_processes() {
  std::vector<pid_t> out;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) fail_errno("opendir /proc");
  while (dirent* e = readdir(proc)) {
    if (!is_number(e->d_name)) continue;
    std::ifstream in(std::string("/proc/") + e->d_name + "/status");
    std::string line;
    while (std::getline(in, line)) {
      if (!line.starts_with("Uid:")) continue;
      std::istringstream ids(line.substr(4));
      long id;
      while (ids >> id) {
        if (id == static_cast<long>(kTestUid)) {
          out.push_back(std::atoi(e->d_name));
          break;
        }
      }
      break;
    }
  }
  closedir(proc);
  return out;
}

bool HelperEnv::wait_no_test_user_processes(std::chrono::milliseconds timeout) {
  const auto deadline = deadline_after(timeout);
  while (true) {
    reap_orphans();
    if (test_user_processes().empty()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void HelperEnv::after_test() {
  restore_default_policy();
  kill_test_user_processes();
  if (!wait_no_test_user_processes()) fail("processes of the test user survived SIGKILL");
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(sandboxes_, ec)) {
    fs::remove_all(entry.path(), ec);
  }
}

std::vector<std::string> as_test_user() {
  return {kSetpriv, "--reuid=" + std::to_string(kTestUid), "--regid=" + std::to_string(kTestGid),
          "--clear-groups"};
}

// ---------------------------------------------------------------------------------------------
// HelperEnvTest

std::unique_ptr<HelperEnv> HelperEnvTest::env_;
std::string HelperEnvTest::setup_error_;

void HelperEnvTest::SetUpTestSuite() {
  if (geteuid() != 0) return;
  setup_error_.clear();
  try {
    env_ = std::make_unique<HelperEnv>();
  } catch (const std::exception& e) {
    setup_error_ = e.what();
  }
}

void HelperEnvTest::TearDownTestSuite() {
  env_.reset();
}

void HelperEnvTest::SetUp() {
  if (geteuid() != 0) {
    GTEST_SKIP() << "the helper's integration tests need root (setcap, ip netns, setpriv, "
                    "a root-owned policy); run them as root, as CI does";
  }
  ASSERT_NE(env_, nullptr) << "the test environment could not be built: " << setup_error_;
}

void HelperEnvTest::TearDown() {
  if (env_ == nullptr) return;
  try {
    env_->after_test();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "cleanup after the test: " << e.what();
  }
}

}  // namespace sbx::it
