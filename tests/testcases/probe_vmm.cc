// SPDX-License-Identifier: Apache-2.0
// probe_vmm: a stand-in "VMM" for the sandbox integration tests. It runs where the real monitor
// would, records what it can observe about its confinement (ids, caps, namespaces, fds, mounts,
// seccomp verdicts) as one JSON report, then idles like a VMM until SIGTERM, so tests assert facts.
#include <dirent.h>
#include <fcntl.h>
#include <linux/keyctl.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

extern char** environ;

// Older headers lack the new mount API; the numbers are shared by x86_64 and aarch64.
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_fsopen
#define SYS_fsopen 430
#endif
#ifndef SYS_fsconfig
#define SYS_fsconfig 431
#endif
#ifndef SYS_fsmount
#define SYS_fsmount 432
#endif

namespace {

constexpr int kUsageExit = 2;
constexpr int kSetupExit = 3;

volatile sig_atomic_t g_sigterm = 0;
// Children we forked; killed only if setup fails, so a broken probe leaves no strays behind.
std::vector<pid_t> g_spawned;

void OnSigterm(int) {
  g_sigterm = 1;
}

[[noreturn]] void Fail(const std::string& what) {
  int err = errno;
  std::fprintf(stderr, "probe_vmm: %s: %s\n", what.c_str(), std::strerror(err));
  for (pid_t pid : g_spawned) kill(pid, SIGKILL);
  std::exit(kSetupExit);
}

[[noreturn]] void Usage(const std::string& msg) {
  std::fprintf(
      stderr,
      "probe_vmm: %s\nusage: probe_vmm --report PATH [--api-sock PATH] "
      "[--ignore-sigterm] [--children N] [--setsid-child] [--exit-code N] [--burn-ms N]\n"
      "       [--clear-pdeathsig] [--read-file PATH]... [--ioctl-device PATH]...\n"
      "       [--exec-written DIR]... [--exec-memfd] [--attack-file PATH] [--connect PATH]\n"
      "       [--swap-api-sock-to PATH | --swap-api-sock-hardlink-to PATH | --link-api-sock-to "
      "PATH]\n       [--write PATH=VALUE]...\n"
      "       [--make-ipc] [--shm-id N] [--key-id N] [--add-key] [--metadata PATH]...\n"
      "       [--touch-mib N] [--fork-until-fail N] [--spin-wall-ms N] [--control-request PATH]\n"
      "       [-- ARGS...]\n",
      msg.c_str());
  std::exit(kUsageExit);
}

// Minimal streaming JSON writer; tracks comma placement per nesting level. Methods chain, so a
// member reads as w.Key("pid").Int(pid).
class JsonWriter {
 public:
  JsonWriter& BeginObject() { return Open('{'); }
  JsonWriter& EndObject() { return Close('}'); }
  JsonWriter& BeginArray() { return Open('['); }
  JsonWriter& EndArray() { return Close(']'); }
  JsonWriter& Key(std::string_view key) {
    String(key).out_ += ':';
    after_key_ = true;
    return *this;
  }
  JsonWriter& String(std::string_view s) {
    Separate().out_ += '"';
    for (unsigned char c : s) {
      if (c == '"' || c == '\\') {
        out_ += '\\';
        out_ += static_cast<char>(c);
      } else if (c < 0x20 || c == 0x7f) {
        char buf[8];
        std::snprintf(buf, sizeof(buf), "\\u%04x", c);
        out_ += buf;
      } else {
        out_ += static_cast<char>(c);
      }
    }
    out_ += '"';
    return *this;
  }
  JsonWriter& Int(long long v) { return Raw(std::to_string(v)); }
  JsonWriter& Uint(unsigned long long v) { return Raw(std::to_string(v)); }
  JsonWriter& Null() { return Raw("null"); }
  JsonWriter& OptString(const std::optional<std::string>& s) { return s ? String(*s) : Null(); }
  JsonWriter& OptInt(const std::optional<long long>& v) { return v ? Int(*v) : Null(); }
  const std::string& str() const { return out_; }

 private:
  JsonWriter& Raw(const std::string& token) {
    Separate().out_ += token;
    return *this;
  }
  JsonWriter& Open(char c) {
    Separate().out_ += c;
    first_.push_back(true);
    return *this;
  }
  JsonWriter& Close(char c) {
    out_ += c;
    first_.pop_back();
    return *this;
  }
  JsonWriter& Separate() {
    if (after_key_) {
      after_key_ = false;
    } else if (!first_.empty()) {
      if (!first_.back()) out_ += ',';
      first_.back() = false;
    }
    return *this;
  }

  std::string out_;
  std::vector<bool> first_;
  bool after_key_ = false;
};

std::optional<std::string> ReadFile(const char* path, size_t limit) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string data;
  char buf[4096];
  while (data.size() < limit) {
    ssize_t n = read(fd, buf, std::min(sizeof(buf), limit - data.size()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return data;
}

std::vector<std::string> SplitLines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

// Splits on every single space, keeping empty fields: mountinfo escapes embedded spaces, and an
// empty mount source must not shift the super options into its slot.
std::vector<std::string> SplitSpaces(const std::string& line) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t end; (end = line.find(' ', start)) != std::string::npos; start = end + 1) {
    out.push_back(line.substr(start, end - start));
  }
  out.push_back(line.substr(start));
  return out;
}

// /proc/self/status as "Key" -> value with surrounding whitespace removed.
std::map<std::string, std::string> ReadStatus() {
  std::map<std::string, std::string> fields;
  auto text = ReadFile("/proc/self/status", 1 << 16);
  if (!text) return fields;
  for (const std::string& line : SplitLines(*text)) {
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    size_t b = line.find_first_not_of(" \t", colon + 1);
    size_t e = line.find_last_not_of(" \t");
    fields[line.substr(0, colon)] = b == std::string::npos ? "" : line.substr(b, e - b + 1);
  }
  return fields;
}

std::optional<std::string> Lookup(const std::map<std::string, std::string>& m, const char* key) {
  auto it = m.find(key);
  if (it == m.end()) return std::nullopt;
  return it->second;
}

std::optional<long long> LookupInt(const std::map<std::string, std::string>& m, const char* key) {
  auto s = Lookup(m, key);
  if (!s || s->empty()) return std::nullopt;
  char* end = nullptr;
  long long v = std::strtoll(s->c_str(), &end, 10);
  if (*end != '\0') return std::nullopt;
  return v;
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string UnescapeOctal(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    auto is_octal = [](char c) { return c >= '0' && c <= '7'; };
    if (s[i] == '\\' && i + 3 < s.size() && is_octal(s[i + 1]) && is_octal(s[i + 2]) &&
        is_octal(s[i + 3])) {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::optional<std::string> ReadLinkAt(int dirfd, const char* path) {
  char buf[4096];
  ssize_t n = readlinkat(dirfd, path, buf, sizeof(buf));
  if (n < 0) return std::nullopt;
  return std::string(buf, static_cast<size_t>(n));
}

std::optional<std::vector<std::string>> ListDir(const char* path) {
  DIR* dir = opendir(path);
  if (dir == nullptr) return std::nullopt;
  std::vector<std::string> names;
  while (dirent* ent = readdir(dir)) {
    std::string_view name = ent->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

void WriteNsInode(JsonWriter& w, const char* key, const char* path) {
  struct stat st;
  stat(path, &st) == 0 ? w.Key(key).Uint(st.st_ino) : w.Key(key).Null();
}

void WriteCwdMount(JsonWriter& w, const std::optional<std::string>& cwd) {
  w.Key("cwd_mount");
  auto text = ReadFile("/proc/self/mountinfo", 1 << 22);
  std::optional<std::vector<std::string>> match;
  size_t sep = 0;
  if (cwd && text) {
    for (const std::string& line : SplitLines(*text)) {
      std::vector<std::string> f = SplitSpaces(line);
      auto dash = std::find(f.begin() + std::min<size_t>(f.size(), 6), f.end(), "-");
      if (f.size() < 6 || dash == f.end() || f.end() - dash < 4) continue;
      // Last match wins: later lines are mounts stacked on top of earlier ones.
      if (UnescapeOctal(f[4]) == *cwd) {
        sep = static_cast<size_t>(dash - f.begin());
        match = std::move(f);
      }
    }
  }
  if (!match) {
    w.Null();
    return;
  }
  const std::vector<std::string>& f = *match;
  std::string propagation;
  for (size_t i = 6; i < sep; ++i) propagation += (i > 6 ? " " : "") + f[i];
  w.BeginObject().Key("fstype").String(f[sep + 1]).Key("mount_options").String(f[5]);
  w.Key("super_options").String(f[sep + 3]).Key("propagation").String(propagation).EndObject();
}

// errno of a raw syscall (0 on success); a returned fd is closed so probing leaks nothing.
long long SyscallErrno(long ret, bool returns_fd) {
  if (ret >= 0) {
    if (returns_fd) close(static_cast<int>(ret));
    return 0;
  }
  return errno;
}

// Runs unshare(CLONE_NEWUSER) in a throwaway child so success cannot change the probe itself.
// Negative result: the child died from that signal (e.g. a SECCOMP_RET_KILL filter).
std::optional<long long> ProbeUnshareNewuser() {
  pid_t pid = fork();
  if (pid < 0) return std::nullopt;
  if (pid == 0) _exit(syscall(SYS_unshare, CLONE_NEWUSER) == 0 ? 0 : errno);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return std::nullopt;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return std::nullopt;
}

void WriteDeniedSyscalls(JsonWriter& w) {
  w.Key("denied_syscalls").BeginObject();
  auto probe = [&w](const char* name, long ret, bool returns_fd) {
    long long err = SyscallErrno(ret, returns_fd);
    w.Key(name).Int(err);
  };
  probe("mount", syscall(SYS_mount, nullptr, nullptr, nullptr, 0, nullptr), false);
  probe("umount2", syscall(SYS_umount2, nullptr, 0), false);
  probe("pivot_root", syscall(SYS_pivot_root, nullptr, nullptr), false);
  probe("unshare", syscall(SYS_unshare, -1L), false);
  probe("setns", syscall(SYS_setns, -1, 0), false);
  probe("move_mount", syscall(SYS_move_mount, -1, nullptr, -1, nullptr, 0), false);
  probe("open_tree", syscall(SYS_open_tree, -1, nullptr, 0), true);
  probe("fsopen", syscall(SYS_fsopen, nullptr, 0), true);
  probe("fsmount", syscall(SYS_fsmount, -1, 0, 0), true);
  probe("fsconfig", syscall(SYS_fsconfig, -1, 0, nullptr, nullptr, 0), false);
  w.Key("unshare_newuser").OptInt(ProbeUnshareNewuser());
  w.EndObject();
}

struct Options {
  std::string report;
  std::optional<std::string> api_sock;
  bool ignore_sigterm = false;
  int children = 0;
  bool setsid_child = false;
  int exit_code = 0;
  // Attacks a compromised VMM would try (see the containment tests).
  bool clear_pdeathsig = false;
  std::vector<std::string> read_files;
  std::vector<std::string> ioctl_devices;
  std::vector<std::string> exec_written;
  std::optional<std::string> attack_file;
  std::optional<std::string> connect;
  // What the VMM's filesystem view holds (the jail tests).
  std::vector<std::string> check_paths;        // lstat errno of each
  std::vector<std::string> try_write_dirs;     // errno of creating a file in each
  std::vector<std::string> open_write;         // errno of opening each for writing
  std::vector<std::string> try_connect;        // errno of connecting to each unix socket
  std::optional<std::string> control_request;  // a supervisor's control socket: ask its state
  bool sigterm_default = false;                // leave SIGTERM at its default: it kills the probe
  bool exit_now = false;                       // exit (with --exit-code) right after the report
  std::optional<std::string> listen_abstract;  // an abstract unix socket kept listening
  std::vector<std::string> connect_abstract;   // errno of connecting to each abstract name
  int burn_ms = 0;  // CPU time to spend before the report (cgroup usage tests)
  // The cgroup limit tests: MiB to touch before the report, children to fork (each waits
  // until the probe exits) until a fork fails, wall-clock ms to spin.
  int touch_mib = 0;
  int fork_until_fail = 0;
  int spin_wall_ms = 0;
  // The API socket redirected to another sandbox's (the supervisor must not follow it):
  // replaced by a symlink to TARGET once the first connection (readiness) was accepted, or a
  // symlink from the start in place of a socket.
  std::optional<std::string> swap_api_sock_to;
  bool swap_with_hard_link = false;  // --swap-api-sock-hardlink-to: link(2), not symlink(2)
  std::optional<std::string> link_api_sock_to;
  std::vector<std::pair<std::string, std::string>> writes;  // --write PATH=VALUE: errno of each
  bool exec_memfd = false;  // a copy of this binary in a memfd, executed two ways
  // Metadata of each file: chmod 0644, chown to its own uid, an xattr, and new times.
  std::vector<std::string> metadata;
  // The caller's SysV IPC and keyrings: --make-ipc makes a 0600 shm segment and a key in the
  // user keyring and reports their ids; --shm-id / --key-id / --add-key attack them.
  bool make_ipc = false;
  std::optional<long> shm_id;
  std::optional<long> key_id;
  bool add_key = false;
};

// ---------------------------------------------------------------------------------------------
// Attacks of a compromised VMM. Each records the errno it met (0: the attack worked).

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif
#ifndef TUNGETFEATURES
#define TUNGETFEATURES _IOR('T', 207, unsigned int)
#endif

// What --fork-until-fail found: {children made, the failing fork's errno}.
std::optional<std::pair<int, int>> g_forks;
// The CPU time --spin-wall-ms got, in ms.
std::optional<int64_t> g_spin_cpu_ms;

long long ErrnoOf(long ret) {
  return ret < 0 ? errno : 0;
}

// What one process of the same uid is exposed to: ptrace, its fds, its root, its memory, a signal.
void WriteAttacksOn(JsonWriter& w, pid_t pid) {
  w.BeginObject();
  long r = syscall(SYS_ptrace, PTRACE_ATTACH, pid, nullptr, nullptr);
  w.Key("ptrace").Int(ErrnoOf(r));
  if (r == 0) {
    waitpid(pid, nullptr, __WALL);
    syscall(SYS_ptrace, PTRACE_DETACH, pid, nullptr, nullptr);
  }
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  w.Key("pidfd_open").Int(ErrnoOf(pidfd));
  if (pidfd >= 0) {
    long fd = syscall(SYS_pidfd_getfd, pidfd, 1, 0);
    w.Key("pidfd_getfd").Int(SyscallErrno(fd, true));
    close(pidfd);
  } else {
    w.Key("pidfd_getfd").Null();
  }
  const std::string proc = "/proc/" + std::to_string(pid);
  w.Key("proc_root")
      .Int(SyscallErrno(open((proc + "/root/").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), true));
  w.Key("proc_mem").Int(SyscallErrno(open((proc + "/mem").c_str(), O_RDWR | O_CLOEXEC), true));
  w.Key("kill").Int(ErrnoOf(kill(pid, 0)));
  w.EndObject();
}

// The peer of the first connection to the API socket (the supervisor checking readiness): its
// pidfd through SO_PEERPIDFD, then one of its fds through pidfd_getfd (fd 1: the events).
struct PeerAttack {
  bool done = false;
  long long peer_pid = -1;
  long long peerpidfd = -1;
  std::optional<long long> pidfd_getfd;
};
PeerAttack g_peer;

void AttackPeer(int conn) {
  if (g_peer.done) return;
  g_peer.done = true;
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) g_peer.peer_pid = cred.pid;
  int pidfd = -1;
  len = sizeof(pidfd);
  g_peer.peerpidfd = ErrnoOf(getsockopt(conn, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len));
  if (g_peer.peerpidfd == 0) {
    g_peer.pidfd_getfd = SyscallErrno(syscall(SYS_pidfd_getfd, pidfd, 1, 0), true);
    close(pidfd);
  }
}

// Reads "NAME PID" lines from the attack file, attacks each, and writes REPORT.attacks.
void RunAttackFile(const std::string& path, const std::string& report);

#if defined(__x86_64__)
constexpr const char* kLoader = "/lib64/ld-linux-x86-64.so.2";
#elif defined(__aarch64__)
constexpr const char* kLoader = "/lib/ld-linux-aarch64.so.1";
#endif

// Runs `exec(child)` in a child: the exec's errno, read back on a close-on-exec pipe, or 0 if
// it happened (the program then runs with the arguments given: this probe exits with its
// usage status). `exec` gets the argv, null-terminated.
template <typename Exec>
long long ExecErrnoInChild(const std::vector<const char*>& args, Exec exec) {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) return errno;
  std::vector<char*> argv;
  for (const char* a : args) argv.push_back(const_cast<char*>(a));
  argv.push_back(nullptr);
  pid_t child = fork();
  if (child == 0) {
    exec(argv.data());
    int err = errno;
    (void)!write(pipe_fds[1], &err, sizeof(err));
    _exit(127);
  }
  close(pipe_fds[1]);
  int err = 0;
  ssize_t n = read(pipe_fds[0], &err, sizeof(err));
  close(pipe_fds[0]);
  int status = 0;
  if (child > 0) waitpid(child, &status, 0);
  return child < 0 ? EAGAIN : n == static_cast<ssize_t>(sizeof(err)) ? err : 0;
}

long long RunInChild(const char* path, const std::vector<const char*>& args) {
  return ExecErrnoInChild(args, [path](char** argv) { execv(path, argv); });
}

// A copy of this binary in a memfd, executed by its fd and by its /proc/self/fd path.
void WriteMemfdExec(JsonWriter& w) {
  w.Key("exec_memfd").BeginObject();
  auto self = ReadFile("/proc/self/exe", 64 << 20);
  int fd = static_cast<int>(syscall(SYS_memfd_create, "sbx-probe", 0));
  w.Key("memfd_create").Int(ErrnoOf(fd));
  if (fd >= 0 && self &&
      write(fd, self->data(), self->size()) == static_cast<ssize_t>(self->size())) {
    w.Key("execveat").Int(ExecErrnoInChild({"memfd-probe"}, [fd](char** argv) {
      char* env[] = {nullptr};
      syscall(SYS_execveat, static_cast<long>(fd), "", argv, env, static_cast<long>(AT_EMPTY_PATH));
    }));
    const std::string via = "/proc/self/fd/" + std::to_string(fd);
    w.Key("proc_fd").Int(RunInChild(via.c_str(), {via.c_str()}));
  } else {
    w.Key("execveat").Null();
    w.Key("proc_fd").Null();
  }
  if (fd >= 0) close(fd);
  w.EndObject();
}

void WriteMetadata(JsonWriter& w, const Options& opt) {
  w.Key("metadata").BeginObject();
  for (const auto& path : opt.metadata) {
    w.Key(path).BeginObject();
    w.Key("chmod").Int(ErrnoOf(chmod(path.c_str(), 0644)));
    w.Key("chown").Int(ErrnoOf(chown(path.c_str(), getuid(), getgid())));
    w.Key("setxattr").Int(ErrnoOf(setxattr(path.c_str(), "user.sbx", "1", 1, 0)));
    const timespec times[2] = {{1000000000, 0}, {1000000000, 0}};
    w.Key("utimensat").Int(ErrnoOf(utimensat(AT_FDCWD, path.c_str(), times, 0)));
    w.EndObject();
  }
  w.EndObject();
}

void WriteWrites(JsonWriter& w, const Options& opt) {
  w.Key("writes").BeginObject();
  for (const auto& [path, value] : opt.writes) {
    int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
    long long err = ErrnoOf(fd);
    if (fd >= 0) {
      if (write(fd, value.data(), value.size()) != static_cast<ssize_t>(value.size())) {
        err = errno == 0 ? EIO : errno;
      }
      close(fd);
    }
    w.Key(path).Int(err);
  }
  w.EndObject();
}

constexpr char kIpcSecret[] = "sbx-ipc-secret";
// Key permissions (keyutils.h's KEY_POS_ALL, KEY_USR_VIEW | KEY_USR_READ | KEY_USR_SEARCH).
constexpr unsigned long kKeyPossessorAll = 0x3f000000;
constexpr unsigned long kKeyUserViewReadSearch = 0x000b0000;

void WriteIpc(JsonWriter& w, const Options& opt) {
  if (opt.make_ipc) {
    w.Key("made_ipc").BeginObject();
    int shm = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
    if (shm >= 0) {
      void* at = shmat(shm, nullptr, 0);
      if (at != reinterpret_cast<void*>(-1)) {
        std::memcpy(at, kIpcSecret, sizeof(kIpcSecret));
        shmdt(at);
      }
    }
    w.Key("shm_id").Int(shm);
    long key = syscall(SYS_add_key, "user", "sbx-it-key", kIpcSecret, sizeof(kIpcSecret) - 1,
                       KEY_SPEC_USER_KEYRING);
    // Readable by the uid, not only by a possessor: the attack needs no keyring link.
    if (key >= 0) {
      syscall(SYS_keyctl, KEYCTL_SETPERM, key, kKeyPossessorAll | kKeyUserViewReadSearch);
    }
    w.Key("key_id").Int(key);
    w.EndObject();
  }
  w.Key("ipc_attacks").BeginObject();
  if (opt.shm_id) {
    void* at = shmat(static_cast<int>(*opt.shm_id), nullptr, SHM_RDONLY);
    const bool attached = at != reinterpret_cast<void*>(-1);
    w.Key("shmat").Int(attached ? 0 : errno);
    w.Key("shm_secret").Int(attached && std::memcmp(at, kIpcSecret, sizeof(kIpcSecret)) == 0);
    if (attached) shmdt(at);
  }
  if (opt.key_id) {
    char buf[64] = {};
    long n = syscall(SYS_keyctl, KEYCTL_READ, *opt.key_id, buf, sizeof(buf) - 1);
    w.Key("keyctl_read").Int(ErrnoOf(n));
    w.Key("key_secret").Int(n > 0 && std::string_view(buf) == kIpcSecret);
  }
  if (opt.add_key) {
    long key = syscall(SYS_add_key, "user", "sbx-it-added", "x", 1, KEY_SPEC_USER_KEYRING);
    w.Key("add_key").Int(ErrnoOf(key));
    if (key >= 0) syscall(SYS_keyctl, KEYCTL_INVALIDATE, key);
  }
  w.EndObject();
}

void WriteFileAttacks(JsonWriter& w, const Options& opt) {
  w.Key("read_files").BeginObject();
  for (const auto& path : opt.read_files) {
    w.Key(path).Int(SyscallErrno(open(path.c_str(), O_RDONLY | O_CLOEXEC), true));
  }
  w.EndObject();
  w.Key("ioctl_devices").BeginObject();
  for (const auto& path : opt.ioctl_devices) {
    w.Key(path).BeginObject();
    int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
    w.Key("open").Int(ErrnoOf(fd));
    if (fd >= 0) {
      // An ioctl the device's driver answers for an unprivileged caller: the pty number of a
      // /dev/ptmx master, a tun device's features; anything else gets ENOTTY from its driver.
      unsigned int value = 0;
      const bool ptmx = path == "/dev/ptmx";
      w.Key("ioctl").Int(ErrnoOf(ioctl(fd, ptmx ? TIOCGPTN : TUNGETFEATURES, &value)));
      close(fd);
    } else {
      w.Key("ioctl").Null();
    }
    w.EndObject();
  }
  w.EndObject();
  // A binary written into DIR (a copy of this one), then executed: a child runs it with no
  // arguments, which makes the probe exit with its usage status, and reports an exec failure
  // on a close-on-exec pipe.
  w.Key("exec_written").BeginObject();
  for (const auto& dir : opt.exec_written) {
    w.Key(dir).BeginObject();
    const std::string path = dir + "/written-vmm-" + std::to_string(getpid());
    auto self = ReadFile("/proc/self/exe", 64 << 20);
    int fd = self ? open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0755) : -1;
    long long write_err = self ? ErrnoOf(fd) : errno;
    if (fd >= 0) {
      if (write(fd, self->data(), self->size()) != static_cast<ssize_t>(self->size())) {
        write_err = errno == 0 ? EIO : errno;
      }
      close(fd);
    }
    w.Key("write").Int(write_err);
    if (write_err == 0) {
      const long long exec_err = RunInChild(path.c_str(), {path.c_str()});
      w.Key("exec").Int(exec_err);
      w.Key("loader").Int(RunInChild(kLoader, {kLoader, path.c_str()}));
      // What a loader does with it: map it for execution (a noexec mount refuses).
      int map_fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
      void* mapped = map_fd < 0
                         ? MAP_FAILED
                         : mmap(nullptr, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, map_fd, 0);
      w.Key("mmap_exec").Int(map_fd < 0 ? errno : mapped == MAP_FAILED ? errno : 0);
      if (mapped != MAP_FAILED) munmap(mapped, 4096);
      if (map_fd >= 0) close(map_fd);
      unlink(path.c_str());
    } else {
      w.Key("exec").Null();
    }
    w.EndObject();
  }
  w.EndObject();
  if (opt.exec_memfd) WriteMemfdExec(w);
  WriteMetadata(w, opt);
  WriteWrites(w, opt);
  WriteIpc(w, opt);
}

// A unix socket address: a path, or with `abstract` a name in the abstract namespace.
socklen_t UnixAddress(const std::string& name, bool abstract, sockaddr_un* addr) {
  *addr = {};
  addr->sun_family = AF_UNIX;
  const size_t offset = abstract ? 1 : 0;
  const size_t n = std::min(name.size(), sizeof(addr->sun_path) - 1 - offset);
  std::memcpy(addr->sun_path + offset, name.data(), n);
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + offset + n + (abstract ? 0 : 1));
}

long long ConnectErrno(const std::string& name, bool abstract = false) {
  sockaddr_un addr;
  socklen_t len = UnixAddress(name, abstract, &addr);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  long long err = ErrnoOf(connect(fd, reinterpret_cast<sockaddr*>(&addr), len));
  close(fd);
  return err;
}

// A compromised VMM that found its supervisor's control socket: connects, asks for the state
// (and to stop), and reports the errno of the connect and the first line that came back.
void WriteControlRequest(JsonWriter& w, const std::string& path) {
  sockaddr_un addr;
  socklen_t len = UnixAddress(path, false, &addr);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  long long err = fd < 0 ? errno : ErrnoOf(connect(fd, reinterpret_cast<sockaddr*>(&addr), len));
  std::string reply;
  if (err == 0) {
    const std::string req = "{\"op\":\"state\"}\n{\"op\":\"stop\"}\n";
    (void)!send(fd, req.data(), req.size(), MSG_NOSIGNAL);
    pollfd pfd{fd, POLLIN, 0};
    char c;
    while (reply.size() < 4096 && poll(&pfd, 1, 2000) == 1 && read(fd, &c, 1) == 1 && c != '\n') {
      reply += c;
    }
  }
  if (fd >= 0) close(fd);
  w.Key("control_request").BeginObject();
  w.Key("errno").Int(err);
  w.Key("reply").String(reply);
  w.EndObject();
}

// Listens on an abstract unix socket name for the life of the probe; -1 on failure.
int ListenAbstract(const std::string& name) {
  sockaddr_un addr;
  socklen_t len = UnixAddress(name, true, &addr);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || listen(fd, 4) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// The filesystem view: mount points, /dev, /proc's pids, and what can be reached or written.
void WriteViewFacts(JsonWriter& w, const Options& opt) {
  const auto mountinfo = ReadFile("/proc/self/mountinfo", 1 << 22);
  w.Key("mount_points").BeginArray();
  if (mountinfo) {
    for (const std::string& line : SplitLines(*mountinfo)) {
      std::vector<std::string> f = SplitSpaces(line);
      if (f.size() > 4) w.String(UnescapeOctal(f[4]));
    }
  }
  w.EndArray();
  // The filesystem type of each mount, in the same order (the word after " - ").
  w.Key("mount_types").BeginArray();
  if (mountinfo) {
    for (const std::string& line : SplitLines(*mountinfo)) {
      const size_t dash = line.find(" - ");
      if (dash != std::string::npos) w.String(SplitSpaces(line.substr(dash + 3)).at(0));
    }
  }
  w.EndArray();
  w.Key("dev_entries");
  if (auto names = ListDir("/dev")) {
    w.BeginArray();
    for (const auto& n : *names) w.String(n);
    w.EndArray();
  } else {
    w.Null();
  }
  w.Key("proc_pids");
  if (auto names = ListDir("/proc")) {
    w.BeginArray();
    for (const auto& n : *names) {
      if (!n.empty() && n.find_first_not_of("0123456789") == std::string::npos) w.String(n);
    }
    w.EndArray();
  } else {
    w.Null();
  }
  w.Key("check_paths").BeginObject();
  for (const auto& p : opt.check_paths) {
    struct stat st;
    w.Key(p).Int(ErrnoOf(lstat(p.c_str(), &st)));
  }
  w.EndObject();
  w.Key("try_write").BeginObject();
  for (const auto& dir : opt.try_write_dirs) {
    const std::string path = dir + "/probe-write-" + std::to_string(getpid());
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    w.Key(dir).Int(ErrnoOf(fd));
    if (fd >= 0) {
      close(fd);
      unlink(path.c_str());
    }
  }
  w.EndObject();
  w.Key("open_write").BeginObject();
  for (const auto& p : opt.open_write) {
    w.Key(p).Int(SyscallErrno(open(p.c_str(), O_WRONLY | O_CLOEXEC), true));
  }
  w.EndObject();
  w.Key("try_connect").BeginObject();
  for (const auto& p : opt.try_connect) w.Key(p).Int(ConnectErrno(p));
  w.EndObject();
  if (opt.control_request) WriteControlRequest(w, *opt.control_request);
  w.Key("connect_abstract").BeginObject();
  for (const auto& n : opt.connect_abstract) w.Key(n).Int(ConnectErrno(n, true));
  w.EndObject();
}

int ConnectTo(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return -1;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  for (int attempt = 0; attempt < 1000; ++attempt) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) return fd;
    close(fd);
    poll(nullptr, 0, 10);
  }
  return -1;
}

int ParseInt(const std::string& flag, const char* value, int lo, int hi) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(value, &end, 10);
  if (errno != 0 || end == value || *end != '\0' || v < lo || v > hi) {
    Usage(flag + " needs an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return static_cast<int>(v);
}

Options ParseArgs(int argc, char** argv) {
  Options opt;
  bool have_report = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") break;  // everything after is recorded in "argv" only
    const std::pair<const char*, bool*> switches[] = {
        {"--ignore-sigterm", &opt.ignore_sigterm},
        {"--setsid-child", &opt.setsid_child},
        {"--clear-pdeathsig", &opt.clear_pdeathsig},
        {"--sigterm-default", &opt.sigterm_default},
        {"--exit-now", &opt.exit_now},
        {"--exec-memfd", &opt.exec_memfd},
        {"--make-ipc", &opt.make_ipc},
        {"--add-key", &opt.add_key},
    };
    bool is_switch = false;
    for (const auto& [name, flag] : switches) {
      if (arg == name) *flag = is_switch = true;
    }
    if (is_switch) continue;
    if (arg != "--report" && arg != "--api-sock" && arg != "--api-socket" && arg != "-qmp" &&
        arg != "--children" && arg != "--exit-code" && arg != "--read-file" &&
        arg != "--ioctl-device" && arg != "--exec-written" && arg != "--attack-file" &&
        arg != "--connect" && arg != "--check-path" && arg != "--try-write" &&
        arg != "--open-write" && arg != "--try-connect" && arg != "--listen-abstract" &&
        arg != "--connect-abstract" && arg != "--burn-ms" && arg != "--swap-api-sock-to" &&
        arg != "--swap-api-sock-hardlink-to" && arg != "--metadata" && arg != "--touch-mib" &&
        arg != "--fork-until-fail" && arg != "--spin-wall-ms" && arg != "--link-api-sock-to" &&
        arg != "--write" && arg != "--shm-id" && arg != "--key-id" && arg != "--control-request") {
      Usage("unknown argument: " + arg);
    }
    if (i + 1 >= argc) Usage(arg + " needs a value");
    std::string value = argv[++i];
    if (arg == "--listen-abstract") {
      opt.listen_abstract = value;
    } else if (arg == "--swap-api-sock-to" || arg == "--swap-api-sock-hardlink-to") {
      opt.swap_api_sock_to = value;
      opt.swap_with_hard_link = arg == "--swap-api-sock-hardlink-to";
    } else if (arg == "--link-api-sock-to") {
      opt.link_api_sock_to = value;
    } else if (arg == "--metadata") {
      opt.metadata.push_back(value);
    } else if (arg == "--write") {
      const size_t eq =
          value.find('=', value.rfind('/') == std::string::npos ? 0 : value.rfind('/'));
      if (eq == std::string::npos) Usage("--write needs PATH=VALUE");
      opt.writes.emplace_back(value.substr(0, eq), value.substr(eq + 1));
    } else if (arg == "--shm-id") {
      opt.shm_id = ParseInt(arg, value.c_str(), 0, 1 << 30);
    } else if (arg == "--key-id") {
      opt.key_id = ParseInt(arg, value.c_str(), 0, 1 << 30);
    } else if (arg == "--connect-abstract") {
      opt.connect_abstract.push_back(value);
    } else if (arg == "--check-path") {
      opt.check_paths.push_back(value);
    } else if (arg == "--try-write") {
      opt.try_write_dirs.push_back(value);
    } else if (arg == "--open-write") {
      opt.open_write.push_back(value);
    } else if (arg == "--control-request") {
      opt.control_request = value;
    } else if (arg == "--try-connect") {
      opt.try_connect.push_back(value);
    } else if (arg == "--read-file") {
      opt.read_files.push_back(value);
    } else if (arg == "--ioctl-device") {
      opt.ioctl_devices.push_back(value);
    } else if (arg == "--exec-written") {
      opt.exec_written.push_back(value);
    } else if (arg == "--attack-file") {
      opt.attack_file = value;
    } else if (arg == "--connect") {
      opt.connect = value;
    } else if (arg == "--report") {
      opt.report = value;
      have_report = true;
    } else if (arg == "--api-sock") {
      opt.api_sock = value;
    } else if (arg == "--api-socket") {
      // cloud-hypervisor spelling: "path=SOCK[,...]"; a bare path is accepted too.
      if (value.rfind("path=", 0) == 0) {
        opt.api_sock = value.substr(5, value.find(',') - 5);
      } else if (value.find('=') == std::string::npos) {
        opt.api_sock = value;
      } else {
        Usage("unsupported --api-socket value: " + value);
      }
    } else if (arg == "-qmp") {
      // QEMU spelling: "unix:SOCK,server=on,wait=off".
      if (value.rfind("unix:", 0) != 0) Usage("unsupported -qmp value: " + value);
      opt.api_sock = value.substr(5, value.find(',') - 5);
    } else if (arg == "--children") {
      opt.children = ParseInt(arg, value.c_str(), 0, 64);
    } else if (arg == "--burn-ms") {
      opt.burn_ms = ParseInt(arg, value.c_str(), 0, 60000);
    } else if (arg == "--touch-mib") {
      opt.touch_mib = ParseInt(arg, value.c_str(), 0, 65536);
    } else if (arg == "--fork-until-fail") {
      opt.fork_until_fail = ParseInt(arg, value.c_str(), 0, 4096);
    } else if (arg == "--spin-wall-ms") {
      opt.spin_wall_ms = ParseInt(arg, value.c_str(), 0, 60000);
    } else {
      opt.exit_code = ParseInt(arg, value.c_str(), 0, 255);
    }
  }
  if (!have_report || opt.report.empty()) Usage("--report PATH is required");
  if (opt.api_sock && opt.api_sock->empty()) Usage("empty api socket path");
  return opt;
}

int CreateListenSocket(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    errno = ENAMETOOLONG;
    Fail("api socket path " + path);
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  // Non-blocking so an accept() after a peer hung up cannot stall the SIGTERM check.
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) Fail("socket(AF_UNIX)");
  // No unlink first: a stale path must surface as a failure, not be silently replaced.
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0) Fail("bind " + path);
  if (listen(fd, 16) < 0) Fail("listen " + path);
  return fd;
}

// A child's life: its session and SIGTERM disposition set up, then a byte on `ready`, then
// pause until killed.
[[noreturn]] void ChildLoop(bool ignore_sigterm, bool new_session, int ready) {
  if (new_session && setsid() < 0) {
    std::fprintf(stderr, "probe_vmm: child setsid: %s\n", std::strerror(errno));
    _exit(kSetupExit);
  }
  signal(SIGTERM, ignore_sigterm ? SIG_IGN : SIG_DFL);
  (void)!write(ready, "r", 1);
  close(ready);
  for (;;) pause();
}

// Returns once the child has set itself up, so the report (and every test reading it) sees
// the child as it stays, however slowly the machine runs it.
pid_t SpawnChild(bool ignore_sigterm, bool new_session, int listen_fd) {
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) Fail("pipe2");
  pid_t pid = fork();
  if (pid < 0) Fail("fork child");
  if (pid == 0) {
    // The socket belongs to the probe alone; a child holding it would keep it alive.
    if (listen_fd >= 0) close(listen_fd);
    close(ready[0]);
    ChildLoop(ignore_sigterm, new_session, ready[1]);
  }
  close(ready[1]);
  char byte;
  while (read(ready[0], &byte, 1) < 0 && errno == EINTR) {
  }
  close(ready[0]);
  g_spawned.push_back(pid);
  return pid;
}

// errno of prctl(PR_SET_PDEATHSIG, 0) with --clear-pdeathsig; -1 when not tried.
long long g_clear_pdeathsig = -1;

// The fds open at exec time (recorded first thing in main).
std::vector<int> g_inherited_fds;
std::map<int, std::optional<std::string>> g_inherited_fd_targets;

void RecordInheritedFds() {
  std::vector<int>& fds = g_inherited_fds;
  std::map<int, std::optional<std::string>>& fd_targets = g_inherited_fd_targets;
  if (DIR* dir = opendir("/proc/self/fd")) {
    int skip = dirfd(dir);
    while (dirent* ent = readdir(dir)) {
      char* end = nullptr;
      long fd = std::strtol(ent->d_name, &end, 10);
      if (end == ent->d_name || *end != '\0' || fd == skip) continue;
      fds.push_back(static_cast<int>(fd));
      fd_targets[static_cast<int>(fd)] = ReadLinkAt(skip, ent->d_name);
    }
    closedir(dir);
  }
  std::sort(fds.begin(), fds.end());
}

std::string BuildReport(int argc, char** argv, const Options& opt, const char* sigterm_disp,
                        const std::vector<pid_t>& children, std::optional<pid_t> setsid_child) {
  JsonWriter w;
  w.BeginObject();
  // The fds as the probe found them at exec, before it opened anything of its own (its api
  // socket, the report): the sandbox's fd hygiene is about what the VMM inherits.
  const std::vector<int>& fds = g_inherited_fds;
  const std::map<int, std::optional<std::string>>& fd_targets = g_inherited_fd_targets;

  const std::pair<const char*, long long> ids[] = {
      {"pid", getpid()}, {"ppid", getppid()}, {"pgid", getpgid(0)}, {"sid", getsid(0)},
      {"uid", getuid()}, {"gid", getgid()},   {"euid", geteuid()},  {"egid", getegid()}};
  for (const auto& [key, value] : ids) w.Key(key).Int(value);

  auto status = ReadStatus();
  const std::pair<const char*, const char*> caps[] = {{"cap_inh", "CapInh"},
                                                      {"cap_prm", "CapPrm"},
                                                      {"cap_eff", "CapEff"},
                                                      {"cap_bnd", "CapBnd"},
                                                      {"cap_amb", "CapAmb"}};
  for (const auto& [key, field] : caps) w.Key(key).OptString(Lookup(status, field));
  w.Key("no_new_privs").Int(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
  w.Key("status_no_new_privs").OptInt(LookupInt(status, "NoNewPrivs"));
  w.Key("seccomp_mode").OptInt(LookupInt(status, "Seccomp"));
  int pdeathsig = 0;
  w.Key("pdeathsig");
  prctl(PR_GET_PDEATHSIG, &pdeathsig, 0, 0, 0) == 0 ? w.Int(pdeathsig) : w.Null();
  w.Key("dumpable").Int(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0));
  WriteNsInode(w, "netns_inode", "/proc/self/ns/net");
  WriteNsInode(w, "mntns_inode", "/proc/self/ns/mnt");
  WriteNsInode(w, "pidns_inode", "/proc/self/ns/pid");

  std::optional<std::string> cwd;
  char cwd_buf[4096];
  if (getcwd(cwd_buf, sizeof(cwd_buf)) != nullptr) cwd = cwd_buf;
  w.Key("cwd").OptString(cwd);
  WriteCwdMount(w, cwd);
  struct stat st;
  w.Key("cwd_stat");
  if (stat(".", &st) == 0) {
    w.BeginObject().Key("mode").Int(st.st_mode & 07777);
    w.Key("uid").Int(st.st_uid).Key("gid").Int(st.st_gid).EndObject();
  } else {
    w.Null();
  }
  struct statfs sfs;
  w.Key("cwd_statfs");
  if (statfs(".", &sfs) == 0) {
    w.BeginObject().Key("f_type").Int(static_cast<long long>(sfs.f_type));
    w.Key("size_bytes").Uint(static_cast<unsigned long long>(sfs.f_blocks) * sfs.f_bsize);
    w.EndObject();
  } else {
    w.Null();
  }
  w.Key("links");
  if (auto names = ListDir(".")) {
    w.BeginObject();
    // readlink fails (EINVAL) for anything but a symlink, which is exactly the null we want.
    for (const std::string& name : *names)
      w.Key(name).OptString(ReadLinkAt(AT_FDCWD, name.c_str()));
    w.EndObject();
  } else {
    w.Null();
  }

  w.Key("fds").BeginArray();
  for (int fd : fds) w.Int(fd);
  w.EndArray();
  w.Key("fd_targets").BeginObject();
  for (const auto& [fd, target] : fd_targets) w.Key(std::to_string(fd)).OptString(target);
  w.EndObject();

  w.Key("environ").BeginArray();
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) w.String(*e);
  w.EndArray();
  w.Key("argv").BeginArray();
  for (int i = 0; i < argc; ++i) w.String(argv[i]);
  w.EndArray();

  w.Key("etc_hosts").OptString(ReadFile("/etc/hosts", 64 * 1024));
  w.Key("sys_class_net");
  if (auto names = ListDir("/sys/class/net")) {
    w.BeginArray();
    for (const std::string& name : *names) w.String(name);
    w.EndArray();
  } else {
    w.Null();
  }
  auto comm = ReadFile("/proc/1/comm", 4096);
  if (comm && !comm->empty() && comm->back() == '\n') comm->pop_back();
  w.Key("proc_pid1_comm").OptString(comm);

  mode_t mask = umask(0);
  umask(mask);
  w.Key("umask").Int(mask);
  rlimit rl{};
  w.Key("rlimit_nofile");
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    w.BeginArray();
    for (rlim_t v : {rl.rlim_cur, rl.rlim_max}) v == RLIM_INFINITY ? w.Int(-1) : w.Uint(v);
    w.EndArray();
  } else {
    w.Null();
  }
  w.Key("sigterm_disposition").String(sigterm_disp);
  w.Key("clear_pdeathsig");
  g_clear_pdeathsig < 0 ? w.Null() : w.Int(g_clear_pdeathsig);
  w.Key("blocked_signals").OptString(Lookup(status, "SigBlk"));
  w.Key("cpus_allowed_list").OptString(Lookup(status, "Cpus_allowed_list"));
  w.Key("spin_cpu_ms").OptInt(g_spin_cpu_ms);
  w.Key("forks");
  if (g_forks) {
    w.BeginObject().Key("made").Int(g_forks->first).Key("errno").Int(g_forks->second).EndObject();
  } else {
    w.Null();
  }

  WriteDeniedSyscalls(w);

  w.Key("children").BeginArray();
  for (pid_t pid : children) w.Int(pid);
  w.EndArray();
  w.Key("setsid_child");
  setsid_child ? w.Int(*setsid_child) : w.Null();
  w.Key("api_sock").OptString(opt.api_sock);
  w.Key("exe").OptString(ReadLinkAt(AT_FDCWD, "/proc/self/exe"));
  w.Key("self_cgroup").OptString(ReadFile("/proc/self/cgroup", 4096));  // as its cgroup ns shows
  WriteFileAttacks(w, opt);
  WriteViewFacts(w, opt);
  w.EndObject();
  return w.str() + "\n";
}

// Written to PATH.tmp and renamed so a test polling for PATH never sees a partial report.
void WriteReportAtomically(const std::string& path, const std::string& data) {
  std::string tmp = path + ".tmp";
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) Fail("open " + tmp);
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) Fail("write " + tmp);
    done += static_cast<size_t>(n);
  }
  if (close(fd) < 0) Fail("close " + tmp);
  if (rename(tmp.c_str(), path.c_str()) < 0) Fail("rename " + tmp + " -> " + path);
}

void RunAttackFile(const std::string& path, const std::string& report) {
  auto text = ReadFile(path.c_str(), 1 << 16);
  JsonWriter w;
  w.BeginObject().Key("targets").BeginObject();
  for (const std::string& line : SplitLines(text.value_or(""))) {
    size_t space = line.find(' ');
    if (space == std::string::npos) continue;
    w.Key(line.substr(0, space));
    WriteAttacksOn(w, static_cast<pid_t>(std::atoi(line.c_str() + space + 1)));
  }
  w.EndObject().Key("peer");
  if (g_peer.done) {
    w.BeginObject().Key("pid").Int(g_peer.peer_pid).Key("peerpidfd").Int(g_peer.peerpidfd);
    w.Key("pidfd_getfd").OptInt(g_peer.pidfd_getfd).EndObject();
  } else {
    w.Null();
  }
  w.EndObject();
  WriteReportAtomically(report + ".attacks", w.str() + "\n");
}

// Touches `mib` MiB of fresh anonymous memory, a page at a time (a memory.max below it makes
// the kernel OOM-kill the probe here).
void TouchMemory(int mib) {
  if (mib <= 0) return;
  const size_t size = static_cast<size_t>(mib) << 20;
  auto* p = static_cast<volatile char*>(
      mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (p == MAP_FAILED) Fail("mmap for --touch-mib");
  for (size_t off = 0; off < size; off += 4096) p[off] = 1;
}

// Forks up to `limit` children that wait for this process to exit (a pipe's hang-up), until a
// fork fails: how many came, and the failing fork's errno (0: none failed).
std::pair<int, int> ForkUntilFailure(int limit) {
  int hold[2];
  if (pipe2(hold, O_CLOEXEC) != 0) Fail("pipe2");
  int made = 0, err = 0;
  for (; made < limit; ++made) {
    pid_t pid = fork();
    if (pid < 0) {
      err = errno;
      break;
    }
    if (pid == 0) {
      signal(SIGTERM, SIG_DFL);
      close(hold[1]);
      char c;
      while (read(hold[0], &c, 1) < 0 && errno == EINTR) {
      }
      _exit(0);
    }
  }
  close(hold[0]);
  // hold[1] stays open (close-on-exec) until the probe exits: the children live until then.
  return {made, err};
}

// Spins for `ms` of wall-clock time; returns the CPU time it got, in ms.
int64_t SpinWall(int ms) {
  if (ms <= 0) return 0;
  auto ms_of = [](clockid_t clock) {
    timespec t;
    clock_gettime(clock, &t);
    return static_cast<int64_t>(t.tv_sec) * 1000 + t.tv_nsec / 1000000;
  };
  const int64_t wall0 = ms_of(CLOCK_MONOTONIC), cpu0 = ms_of(CLOCK_PROCESS_CPUTIME_ID);
  volatile uint64_t sink = 0;
  do {
    for (int i = 0; i < 10000; ++i) sink = sink + static_cast<uint64_t>(i);
  } while (ms_of(CLOCK_MONOTONIC) - wall0 < ms);
  return ms_of(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
}

// Spins on the CPU for `ms` of this process's own CPU time.
void BurnCpu(int ms) {
  if (ms <= 0) return;
  timespec ts;
  auto cpu_ms = [&] {
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
  };
  const int64_t until = cpu_ms() + ms;
  volatile uint64_t sink = 0;
  while (cpu_ms() < until) {
    for (int i = 0; i < 100000; ++i) sink = sink + static_cast<uint64_t>(i);
  }
}

int Run(int argc, char** argv) {
  Options opt = ParseArgs(argc, argv);

  // Sampled before anything here touches SIGTERM: tests check what the sandbox handed us.
  struct sigaction old {};
  sigaction(SIGTERM, nullptr, &old);
  const char* sigterm_disp = "handler";
  if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_DFL) sigterm_disp = "default";
  if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_IGN) sigterm_disp = "ignored";

  // Before anything else: a VMM clearing the parent-death signal to outlive its supervisor.
  long long clear_pdeathsig_err = -1;
  if (opt.clear_pdeathsig) clear_pdeathsig_err = ErrnoOf(prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0));
  g_clear_pdeathsig = clear_pdeathsig_err;
  // The probe's own SIGTERM disposition, set before its API socket listens and its report is
  // written: a test that saw either may stop it and count on the outcome (exit 0 from the
  // handler), however slowly the probe got there. A SIGTERM during the setup below ends the
  // idle loop at once. Children set their own.
  struct sigaction sa {};
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = opt.ignore_sigterm ? SIG_IGN : opt.sigterm_default ? SIG_DFL : OnSigterm;
  if (sigaction(SIGTERM, &sa, nullptr) < 0) Fail("sigaction(SIGTERM)");
  // Held open for the life of the probe: the listener sees a live peer.
  [[maybe_unused]] int connected = opt.connect ? ConnectTo(*opt.connect) : -1;
  if (opt.connect && connected < 0) Fail("connect " + *opt.connect);
  [[maybe_unused]] int abstract_listener =
      opt.listen_abstract ? ListenAbstract(*opt.listen_abstract) : -1;
  if (opt.listen_abstract && abstract_listener < 0) Fail("listen on @" + *opt.listen_abstract);
  // The socket comes before the children so a bind failure leaves no stray processes behind.
  int listen_fd = -1;
  if (opt.api_sock && opt.link_api_sock_to) {
    if (symlink(opt.link_api_sock_to->c_str(), opt.api_sock->c_str()) != 0) {
      Fail("symlink " + *opt.api_sock);
    }
  } else if (opt.api_sock) {
    listen_fd = CreateListenSocket(*opt.api_sock);
  }
  std::vector<pid_t> children;
  for (int i = 0; i < opt.children; ++i) {
    children.push_back(SpawnChild(opt.ignore_sigterm, false, listen_fd));
  }
  std::optional<pid_t> setsid_child;
  if (opt.setsid_child) setsid_child = SpawnChild(true, true, listen_fd);
  BurnCpu(opt.burn_ms);
  TouchMemory(opt.touch_mib);
  g_spin_cpu_ms = opt.spin_wall_ms > 0 ? std::optional(SpinWall(opt.spin_wall_ms)) : std::nullopt;
  g_forks =
      opt.fork_until_fail > 0 ? std::optional(ForkUntilFailure(opt.fork_until_fail)) : std::nullopt;

  WriteReportAtomically(opt.report,
                        BuildReport(argc, argv, opt, sigterm_disp, children, setsid_child));

  if (opt.exit_now) return opt.exit_code;
  // From here on children are the sandbox's business: the tests check it reaps them.
  g_spawned.clear();

  bool attacked = false;
  while (!g_sigterm) {
    if (listen_fd < 0) {
      poll(nullptr, 0, opt.attack_file ? 10 : 100);
    } else {
      pollfd pfd{listen_fd, POLLIN, 0};
      poll(&pfd, 1, opt.attack_file ? 10 : 100);
      // Accept whatever is queued (non-blocking) before looking at the attack file, so a
      // connection made before the file appeared is always attacked first.
      int conn;
      while ((conn = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC)) >= 0) {
        if (opt.attack_file) AttackPeer(conn);
        close(conn);
        // Readiness was seen: now the path leads to another sandbox's socket.
        if (opt.swap_api_sock_to) {
          const std::string tmp = *opt.api_sock + ".swap";
          const char* target = opt.swap_api_sock_to->c_str();
          if ((opt.swap_with_hard_link ? link(target, tmp.c_str())
                                       : symlink(target, tmp.c_str())) != 0 ||
              rename(tmp.c_str(), opt.api_sock->c_str()) != 0) {
            Fail("swap " + *opt.api_sock + " for a symlink");
          }
          opt.swap_api_sock_to.reset();
        }
      }
    }
    if (opt.attack_file && !attacked && access(opt.attack_file->c_str(), F_OK) == 0) {
      attacked = true;
      RunAttackFile(*opt.attack_file, opt.report);
    }
  }
  return opt.exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  RecordInheritedFds();
  try {
    return Run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "probe_vmm: unexpected error: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "probe_vmm: unexpected error\n");
  }
  return kSetupExit;
}
