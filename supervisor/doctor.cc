// SPDX-License-Identifier: Apache-2.0
#include "supervisor/doctor.h"

#include <cap-ng.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/landlock.h>
#include <linux/magic.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/kernel_features.h"
#include "common/protocol.h"
#include "common/unique_fd.h"
#include "supervisor/cgroup.h"

namespace sbx::supervisor {
namespace {

namespace json = boost::json;

DoctorCheck ok(std::string name, bool needed, std::string detail) {
  return {std::move(name), CheckStatus::kOk, needed, std::move(detail), ""};
}

DoctorCheck problem(std::string name, bool needed, std::string detail, std::string fix) {
  return {std::move(name), needed ? CheckStatus::kFail : CheckStatus::kWarn, needed,
          std::move(detail), std::move(fix)};
}

// The name for `id` in /etc/passwd or /etc/group (field 3 is the id), else the number. Read
// directly: this binary is static, and glibc's NSS would dlopen its modules.
std::string name_in(const char* db, unsigned id) {
  std::ifstream in(db);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string name, pw, num;
    if (std::getline(f, name, ':') && std::getline(f, pw, ':') && std::getline(f, num, ':') &&
        num == std::to_string(id)) {
      return name;
    }
  }
  return std::to_string(id);
}

// Read once: every check names the user.
const std::string& user_name() {
  static const std::string name = name_in("/etc/passwd", geteuid());
  return name;
}

std::string group_name(gid_t gid) {
  return name_in("/etc/group", gid);
}

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Runs argv (no shell, empty environment), returns its exit status (or -1) and its stdout and
// stderr, bounded by `timeout_ms`.
int run_capture(const std::vector<std::string>& argv, std::string* output, int timeout_ms) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return -1;
  UniqueFd rd(p[0]), wr(p[1]);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, wr.get(), 1);
  posix_spawn_file_actions_adddup2(&fa, wr.get(), 2);
  std::vector<char*> a;
  for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
  a.push_back(nullptr);
  char* envp[] = {nullptr};
  pid_t pid;
  int rc = posix_spawn(&pid, a[0], &fa, nullptr, a.data(), envp);
  posix_spawn_file_actions_destroy(&fa);
  wr.reset();
  if (rc != 0) {
    *output = std::strerror(rc);
    return -1;
  }
  timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  char buf[4096];
  while (true) {
    timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t left =
        timeout_ms - ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000);
    pollfd pfd{rd.get(), POLLIN, 0};
    if (left <= 0 || poll(&pfd, 1, static_cast<int>(left)) <= 0) {
      kill(pid, SIGKILL);
      break;
    }
    ssize_t n = read(rd.get(), buf, sizeof(buf));
    if (n <= 0) break;
    if (output->size() < 65536) output->append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The file capabilities of `path` as setcap writes them ("cap_a,cap_b+ep"), or why not.
struct FileCaps {
  bool present = false;
  uint64_t permitted = 0, inheritable = 0;
  bool effective = false;
  std::string error;
};

FileCaps file_caps(const std::string& path) {
  FileCaps c;
  vfs_ns_cap_data data{};
  ssize_t n = getxattr(path.c_str(), "security.capability", &data, sizeof(data));
  if (n < 0) {
    if (errno != ENODATA) c.error = std::strerror(errno);
    return c;
  }
  if (n < static_cast<ssize_t>(XATTR_CAPS_SZ_1)) {
    c.error = "malformed security.capability";
    return c;
  }
  c.present = true;
  const uint32_t magic = data.magic_etc & VFS_CAP_REVISION_MASK;
  c.effective = (data.magic_etc & VFS_CAP_FLAGS_EFFECTIVE) != 0;
  c.permitted = data.data[0].permitted;
  c.inheritable = data.data[0].inheritable;
  if (magic != VFS_CAP_REVISION_1 && n >= static_cast<ssize_t>(XATTR_CAPS_SZ_2)) {
    c.permitted |= static_cast<uint64_t>(data.data[1].permitted) << 32;
    c.inheritable |= static_cast<uint64_t>(data.data[1].inheritable) << 32;
  }
  return c;
}

// The names as setcap writes them, from libcap-ng (which the supervisor links); a bit it does
// not know is cap_N.
std::string cap_names(uint64_t set) {
  std::string out;
  for (int bit = 0; bit < 64; ++bit) {
    if (!((set >> bit) & 1)) continue;
    const char* known = capng_capability_to_name(static_cast<unsigned>(bit));
    std::string name =
        known != nullptr ? std::string("cap_") + known : "cap_" + std::to_string(bit);
    out += (out.empty() ? "" : ",") + name;
  }
  return out;
}

void check_helper(const DoctorOptions& o, std::vector<DoctorCheck>* out) {
  const std::string& path = o.helper_path;
  const std::string setcap = "sudo setcap cap_sys_admin,cap_audit_write+ep " + path;
  struct stat st;
  const bool found = stat(path.c_str(), &st) == 0;
  if (!found || !S_ISREG(st.st_mode)) {
    out->push_back(problem("helper.installed", true,
                           path + ": " + (found ? "not a regular file" : std::strerror(errno)),
                           "sudo apt-get install ./sbx_VERSION_ARCH.deb (or pass --helper PATH)"));
    return;
  }
  out->push_back(ok(
      "helper.installed", true,
      path + " (owner " + std::to_string(st.st_uid) + ", group " + group_name(st.st_gid) +
          ", mode " +
          [&] {
            char m[8];
            std::snprintf(m, sizeof(m), "%04o", st.st_mode & 07777);
            return std::string(m);
          }() +
          ")"));
  if (faccessat(AT_FDCWD, path.c_str(), X_OK, AT_EACCESS) == 0) {
    out->push_back(ok("helper.executable", true, "executable by " + user_name()));
  } else {
    std::string why = std::strerror(errno);
    out->push_back(problem(
        "helper.executable", true, "not executable by " + user_name() + ": " + why,
        "sudo usermod -aG " + group_name(st.st_gid) + " " + user_name() + " (then log in again)"));
  }
  FileCaps caps = file_caps(path);
  const uint64_t want = (1ULL << CAP_SYS_ADMIN) | (1ULL << CAP_AUDIT_WRITE);
  if (!caps.error.empty()) {
    out->push_back(problem("helper.capabilities", true,
                           "security.capability of " + path + ": " + caps.error, setcap));
  } else if (!caps.present) {
    out->push_back(problem("helper.capabilities", true, "no file capabilities", setcap));
  } else {
    std::string have = cap_names(caps.permitted) + (caps.effective ? "+ep" : "+p");
    if ((caps.permitted & want) != want || !caps.effective) {
      out->push_back(problem("helper.capabilities", true, "has " + have, setcap));
    } else if (caps.permitted != want || caps.inheritable != 0) {
      out->push_back(problem("helper.capabilities", false,
                             "has " + have + ": more than cap_sys_admin,cap_audit_write+ep",
                             setcap));
    } else {
      out->push_back(ok("helper.capabilities", true, have));
    }
  }
  if (st.st_mode & (S_ISUID | S_ISGID)) {
    out->push_back(problem("helper.not_setuid", true, "setuid or setgid: it must never be",
                           "sudo chmod u-s,g-s " + path + " && " + setcap));
  } else {
    out->push_back(ok("helper.not_setuid", true, "neither setuid nor setgid"));
  }
  std::string text;
  int rc = run_capture({path, "--check-policy"}, &text, 5000);
  std::string first = trim(text.substr(0, text.find('\n')));
  if (rc == 0) {
    std::string policy = first.starts_with("# ") ? first.substr(2) : "the policy";
    out->push_back(ok("policy", true, policy + " parses (sbx-nsexec --check-policy)"));
  } else {
    out->push_back(problem("policy", true, "sbx-nsexec --check-policy failed: " + trim(text),
                           "sudoedit /etc/sbx/nsexec.conf (see sbx-nsexec.conf(5)), then " + path +
                               " --check-policy"));
  }
}

void check_device(const std::string& path, const std::string& name, bool needed,
                  const std::string& what_for, std::vector<DoctorCheck>* out) {
  UniqueFd fd(open(path.c_str(), O_RDWR | O_CLOEXEC | O_NONBLOCK));
  if (fd) {
    out->push_back(ok(name, needed, path + " is readable and writable by " + user_name()));
    return;
  }
  const int err = errno;
  if (err == ENOENT) {
    out->push_back(problem(name, needed, path + " does not exist (" + what_for + ")",
                           path == "/dev/kvm"
                               ? "sudo modprobe kvm_intel || sudo modprobe kvm_amd"
                               : "sudo modprobe " + path.substr(path.rfind('/') + 1)));
    return;
  }
  struct stat st;
  std::string fix = "sudo setfacl -m u:" + user_name() + ":rw " + path;
  if (stat(path.c_str(), &st) == 0 && st.st_gid != 0 && (st.st_mode & 060) == 060) {
    fix = "sudo usermod -aG " + group_name(st.st_gid) + " " + user_name() + " (then log in again)";
  }
  out->push_back(problem(name, needed,
                         path + " is not readable and writable by " + user_name() + ": " +
                             std::strerror(err) + " (" + what_for + ")",
                         fix));
}

void check_userfaultfd(std::vector<DoctorCheck>* out) {
  UniqueFd fd(open("/dev/userfaultfd", O_RDWR | O_CLOEXEC));
  const int dev_err = fd ? 0 : errno;
  auto sysctl = read_file("/proc/sys/vm/unprivileged_userfaultfd");
  const std::string value = sysctl ? trim(*sysctl) : "absent";
  const std::string state = "/dev/userfaultfd " +
                            (fd ? std::string("usable") : std::string(std::strerror(dev_err))) +
                            ", vm.unprivileged_userfaultfd = " + value;
  if (fd || value == "1") {
    out->push_back(ok("userfaultfd", false, state));
  } else {
    out->push_back(
        problem("userfaultfd", false, state + " (on-demand snapshot restore needs userfaultfd)",
                "sudo setfacl -m u:" + user_name() +
                    ":rw /dev/userfaultfd (or: sudo sysctl vm.unprivileged_userfaultfd=1)"));
  }
}

void check_landlock(std::vector<DoctorCheck>* out) {
  long abi = syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  if (abi >= 1) {
    std::string detail = "ABI " + std::to_string(abi);
    if (abi < 6) detail += " (signal and abstract-socket scoping need ABI 6)";
    out->push_back(ok("landlock", false, detail));
    return;
  }
  const int err = errno;
  out->push_back(problem("landlock", false,
                         std::string("not available: ") + std::strerror(err) +
                             (err == EOPNOTSUPP ? " (built in, not enabled at boot)" : ""),
                         "add landlock to the kernel's lsm= boot parameter (Linux >= 5.13)"));
}

// The running kernel against the oldest sbx works on, and every feature a launch needs probed
// (the list the helper checks at entry).
void check_kernel(std::vector<DoctorCheck>* out) {
  utsname u{};
  uname(&u);
  const std::string release = u.release;
  std::string found;
  for (const kernel::Feature& f : kernel::needed_features()) {
    if (!f.present()) {
      out->push_back(problem("kernel", true,
                             release + " lacks " + std::string(f.name) + " (Linux " +
                                 std::string(f.version) + "); sbx needs Linux " +
                                 std::string(kernel::kMinimumVersion) + " or newer",
                             "boot a newer kernel (Debian 12: linux-image-amd64, Linux 6.1)"));
      return;
    }
  }
  out->push_back(ok("kernel", true,
                    release + ": every needed feature present (sbx needs Linux " +
                        std::string(kernel::kMinimumVersion) + " or newer)"));
}

// The helper places the VMM's fd at protocol::kVmmExecFd, which takes a hard RLIMIT_NOFILE
// above it; without one every launch fails at prepare_fds (EMFILE).
void check_rlimit_nofile(std::vector<DoctorCheck>* out) {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) {
    out->push_back(problem("rlimit.nofile", true, std::string("getrlimit: ") + std::strerror(errno),
                           "check the process's limits"));
    return;
  }
  const std::string state = "hard RLIMIT_NOFILE " + std::to_string(lim.rlim_max);
  if (lim.rlim_max > static_cast<rlim_t>(protocol::kVmmExecFd)) {
    out->push_back(ok("rlimit.nofile", true, state));
    return;
  }
  out->push_back(problem(
      "rlimit.nofile", true,
      state + ": the helper needs fd " + std::to_string(protocol::kVmmExecFd) + " for the VMM",
      "raise it above " + std::to_string(protocol::kVmmExecFd) +
          " (LimitNOFILE= in the unit, or nofile in /etc/security/limits.conf)"));
}

void check_yama(std::vector<DoctorCheck>* out) {
  auto v = read_file("/proc/sys/kernel/yama/ptrace_scope");
  if (!v) {
    out->push_back(problem("yama.ptrace_scope", false,
                           "Yama is not enabled (no /proc/sys/kernel/yama/ptrace_scope): a "
                           "process may ptrace any other of its uid",
                           "add yama to the kernel's lsm= boot parameter"));
    return;
  }
  std::string value = trim(*v);
  if (value == "0") {
    out->push_back(problem("yama.ptrace_scope", false, "ptrace_scope = 0",
                           "sudo sysctl kernel.yama.ptrace_scope=1"));
  } else {
    out->push_back(ok("yama.ptrace_scope", false, "ptrace_scope = " + value));
  }
}

struct Mount {
  std::string point, root;
};

// cgroup2 mounts from /proc/self/mountinfo.
std::vector<Mount> cgroup2_mounts() {
  std::vector<Mount> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream after(line.substr(dash + 3));
    std::string fstype;
    after >> fstype;
    if (fstype != "cgroup2") continue;
    std::istringstream f(line);
    std::string id, parent, dev;
    Mount m;
    f >> id >> parent >> dev >> m.root >> m.point;
    out.push_back(m);
  }
  return out;
}

bool writable(const std::string& path) {
  return faccessat(AT_FDCWD, path.c_str(), W_OK, AT_EACCESS) == 0;
}

void check_cgroup(const DoctorOptions& o, std::vector<DoctorCheck>* out) {
  std::vector<Mount> mounts = cgroup2_mounts();
  const bool needed = o.cgroup_parent.has_value();
  if (mounts.empty()) {
    out->push_back(problem("cgroup.v2_mount", needed, "no cgroup2 mount (cgroup v1 only)",
                           "boot with systemd.unified_cgroup_hierarchy=1 (Debian 12's default)"));
    return;
  }
  const Mount& m = mounts.front();
  std::string controllers = trim(read_file(m.point + "/cgroup.controllers").value_or(""));
  std::string detail =
      "cgroup2 at " + m.point + ", controllers: " + (controllers.empty() ? "none" : controllers);
  if (m.point != "/sys/fs/cgroup") detail += " (a hybrid host: the other controllers are on v1)";
  out->push_back(ok("cgroup.v2_mount", needed, detail));

  if (!o.cgroup_parent) {
    out->push_back(ok("cgroup.parent", false,
                      "not checked (pass --cgroup-parent PATH to check a delegated parent)"));
    return;
  }
  const std::string& p = *o.cgroup_parent;
  const std::string delegate = "sudo chown " + user_name() + " " + p + " " + p + "/cgroup.procs " +
                               p + "/cgroup.subtree_control " + p +
                               "/cgroup.threads (or run the manager with systemd "
                               "Delegate=yes; see sbx-supervisor(1))";
  // The same checks `run` makes (check_cgroup_parent), each failure with its fix.
  if (auto e = check_cgroup_parent(p, true, nullptr)) {
    std::string fix = delegate;
    if (e->err == ENOENT) fix = "sudo mkdir " + p + " && " + delegate;
    if (e->err == EINVAL) fix = "use a directory under " + m.point;
    if (e->err == EBUSY) {
      fix = "move them to a leaf: mkdir " + p + "/manager && echo PID > " + p +
            "/manager/cgroup.procs";
    }
    const std::string prefix = "cgroup.parent: ";  // the check's own name, already said
    std::string why = e->detail;
    if (why.starts_with(prefix)) why.erase(0, prefix.size());
    out->push_back(problem("cgroup.parent", true, why, fix));
    return;
  }
  std::string available = trim(read_file(p + "/cgroup.controllers").value_or(""));
  out->push_back(ok("cgroup.parent", true,
                    p + " is delegated to " + user_name() +
                        ", holds no process; controllers "
                        "available: " +
                        (available.empty() ? "none" : available)));
  // Moving the helper into <parent>/<id> needs write access to the cgroup.procs of the common
  // ancestor of the supervisor's own cgroup and the target.
  const Mount* pm = &m;
  for (const auto& x : mounts) {
    if (p.starts_with(x.point + "/")) pm = &x;
  }
  // Paths inside the hierarchy, as /proc/self/cgroup names them (the mount's root is "/"
  // outside a cgroup namespace).
  const std::string self = proc_cgroup_of(getpid());
  const std::string target = (pm->root == "/" ? "" : pm->root) + p.substr(pm->point.size()) + "/ID";
  std::string common;
  for (size_t i = 1; i <= std::min(self.size(), target.size()); ++i) {
    const bool end_self = i == self.size() || self[i] == '/';
    const bool end_target = target[i] == '/';
    if (end_self && end_target) common = self.substr(0, i);
    if (i == self.size() || self[i] != target[i]) break;
  }
  const std::string ancestor =
      pm->point + common.substr(std::min(common.size(), pm->root == "/" ? 0 : pm->root.size()));
  if (writable(ancestor + "/cgroup.procs")) {
    out->push_back(ok("cgroup.placement", true,
                      "this process's cgroup " + self + " and " + p + " share " + ancestor +
                          ", whose cgroup.procs is writable"));
  } else {
    out->push_back(problem("cgroup.placement", true,
                           "this process's cgroup " + self + " and " + p + " meet at " + ancestor +
                               ", whose cgroup.procs " + user_name() +
                               " cannot write: the helper could not be moved into the sandbox's "
                               "cgroup",
                           "run sbx-supervisor in a leaf of the delegated subtree (e.g. mkdir " +
                               p + "/../manager && echo $$ > " + p + "/../manager/cgroup.procs)"));
  }
}

void check_netns(std::vector<DoctorCheck>* out) {
  struct stat st;
  if (stat("/run/netns", &st) == 0 && S_ISDIR(st.st_mode)) {
    out->push_back(ok("netns", false, "/run/netns exists"));
  } else {
    out->push_back(problem("netns", false, "/run/netns does not exist: no named netns to join yet",
                           "sudo ip netns add NAME"));
  }
}

void check_audit(std::vector<DoctorCheck>* out) {
  struct stat st;
  if (stat("/proc/self/loginuid", &st) != 0) {
    out->push_back(problem("audit", false,
                           "the kernel has no audit support: the helper's records are lost",
                           "a kernel built with CONFIG_AUDIT"));
    return;
  }
  std::string cmdline = read_file("/proc/cmdline").value_or("");
  if (cmdline.find("audit=0") != std::string::npos) {
    out->push_back(problem("audit", false, "audit=0 on the kernel command line",
                           "remove audit=0 from the kernel command line"));
    return;
  }
  if (stat("/run/auditd.pid", &st) == 0) {
    out->push_back(ok("audit", false, "kernel audit on, auditd running (/var/log/audit)"));
  } else {
    out->push_back(problem("audit", false,
                           "kernel audit on, auditd not running: the helper's records go only "
                           "to the kernel log",
                           "sudo apt-get install auditd"));
  }
}

const char* status_word(CheckStatus s) {
  switch (s) {
    case CheckStatus::kOk:
      return "ok";
    case CheckStatus::kWarn:
      return "warn";
    case CheckStatus::kFail:
      return "fail";
  }
  return "fail";
}

}  // namespace

std::vector<DoctorCheck> run_doctor_checks(const DoctorOptions& options) {
  std::vector<DoctorCheck> out;
  check_kernel(&out);
  check_helper(options, &out);
  check_device("/dev/kvm", "dev.kvm", true, "every VMM needs it", &out);
  check_device("/dev/net/tun", "dev.net_tun", false, "TAP networking needs it", &out);
  check_userfaultfd(&out);
  check_rlimit_nofile(&out);
  check_landlock(&out);
  check_yama(&out);
  check_cgroup(options, &out);
  check_netns(&out);
  check_audit(&out);
  return out;
}

bool doctor_passed(const std::vector<DoctorCheck>& checks) {
  for (const auto& c : checks) {
    if (c.needed && c.status == CheckStatus::kFail) return false;
  }
  return true;
}

std::string doctor_text(const std::vector<DoctorCheck>& checks) {
  std::string out;
  for (const auto& c : checks) {
    std::string word = status_word(c.status);
    for (auto& ch : word) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    out += word + std::string(6 - word.size(), ' ') + c.name + ": " + c.detail + "\n";
    if (!c.fix.empty()) out += "      fix: " + c.fix + "\n";
  }
  out += doctor_passed(checks) ? "this host can run sandboxes for " + user_name() + "\n"
                               : "this host cannot run sandboxes for " + user_name() +
                                     " until every FAIL above is fixed\n";
  return out;
}

std::string doctor_json(const std::vector<DoctorCheck>& checks) {
  json::array arr;
  for (const auto& c : checks) {
    arr.push_back(json::object{{"name", c.name},
                               {"status", status_word(c.status)},
                               {"needed", c.needed},
                               {"detail", c.detail},
                               {"fix", c.fix.empty() ? json::value(nullptr) : json::value(c.fix)}});
  }
  return json::serialize(json::object{{"ok", doctor_passed(checks)}, {"checks", arr}}) + "\n";
}

}  // namespace sbx::supervisor
