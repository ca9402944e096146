// SPDX-License-Identifier: Apache-2.0
// The VMM's syscall filter (helper/seccomp.cc) tested directly, as root: installed in a forked
// child (it cannot be removed), every mount and namespace call must fail with EPERM where root
// without the filter succeeds or fails differently; clone with namespace flags is EPERM, clone3
// is ENOSYS (so libc falls back to clone), and a plain fork still works. Key management, mode,
// owner and xattr changes, and every exec but the helper's own (execveat from kExecFd) are
// EPERM too.
#include <fcntl.h>
#include <linux/kcmp.h>
#include <linux/keyctl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <thread>

#include "helper/seccomp.h"
#include "helper/seccomp_rules.h"

namespace sbx::seccomp {
namespace {

// Syscalls newer than this build's headers may name (seccomp_rules.h: kDeniedByNumber).
constexpr long kFchmodat2 = 452;
constexpr long kSetxattrat = 463;
constexpr long kRemovexattrat = 466;

// Exit codes of the child when it could not even get to the checks.
constexpr int kChildNoPrivateMounts = 100;
constexpr int kChildNoFilter = 101;

using Results = std::map<std::string, int>;  // call -> 0 (success) or its errno

// One "name errno" line on the result pipe. Runs in the forked child.
void record(int out, const char* name, long ret) {
  char line[96];
  int n = std::snprintf(line, sizeof(line), "%s %d\n", name, ret < 0 ? errno : 0);
  (void)!write(out, line, static_cast<size_t>(n));
}

// clone / clone3 that must not leave a running child: a child, if made, exits at once.
long clone_and_reap(long ret) {
  if (ret == 0) _exit(0);
  if (ret > 0) {
    int status;
    waitpid(static_cast<pid_t>(ret), &status, __WALL);
    return 0;
  }
  return ret;
}

// The checks, in the child. `scratch` is an empty directory made by the parent.
[[noreturn]] void child_checks(int out, bool with_filter, const std::string& scratch) {
  // Whatever happens below stays out of the host's mount namespace.
  if (unshare(CLONE_NEWNS) != 0 ||
      mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    _exit(kChildNoPrivateMounts);
  }
  if (with_filter) {
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) _exit(kChildNoFilter);
    if (!install_vmm_filter().ok()) _exit(kChildNoFilter);
  }
  const char* dir = scratch.c_str();
  const std::string missing = scratch + "/missing";

  long fd = syscall(SYS_fsopen, "tmpfs", 0);
  record(out, "fsopen", fd);
  if (fd >= 0) close(static_cast<int>(fd));
  record(out, "unshare", syscall(SYS_unshare, CLONE_NEWNS));
  record(out, "mount", mount("tmpfs", dir, "tmpfs", 0, "size=1m"));
  record(out, "pivot_root", syscall(SYS_pivot_root, missing.c_str(), missing.c_str()));
  record(out, "move_mount", syscall(SYS_move_mount, AT_FDCWD, missing.c_str(), AT_FDCWD, dir, 0));
  record(out, "fsmount", syscall(SYS_fsmount, -1, 0, 0));
  record(out, "fsconfig", syscall(SYS_fsconfig, -1, FSCONFIG_CMD_CREATE, nullptr, nullptr, 0));
  fd = syscall(SYS_fspick, AT_FDCWD, "/", 0);
  record(out, "fspick", fd);
  if (fd >= 0) close(static_cast<int>(fd));
  mount_attr attr{};
  record(out, "mount_setattr",
         syscall(SYS_mount_setattr, AT_FDCWD, missing.c_str(), 0, &attr, sizeof(attr)));
  fd = syscall(SYS_open_tree, AT_FDCWD, "/", OPEN_TREE_CLONE);
  record(out, "open_tree", fd);
  if (fd >= 0) close(static_cast<int>(fd));
  int netns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  record(out, "setns", syscall(SYS_setns, netns, CLONE_NEWNET));
  close(netns);
  record(out, "umount2", syscall(SYS_umount2, missing.c_str(), 0));

  record(out, "clone_newns", clone_and_reap(syscall(SYS_clone, CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0)));
  record(out, "clone_newuser",
         clone_and_reap(syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)));
  record(out, "clone_newnet",
         clone_and_reap(syscall(SYS_clone, CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0)));
  clone_args args{};
  args.exit_signal = SIGCHLD;
  record(out, "clone3", clone_and_reap(syscall(SYS_clone3, &args, sizeof(args))));

  // Reaching into another process: a paused child of this one (ptrace, pidfd_getfd, kcmp) and
  // this process itself (process_vm_*). Root without the filter succeeds at each.
  pid_t target = fork();
  if (target == 0) {
    for (;;) pause();
  }
  long attached = syscall(SYS_ptrace, PTRACE_ATTACH, target, nullptr, nullptr);
  record(out, "ptrace", attached);
  if (attached == 0) {
    waitpid(target, nullptr, __WALL);
    syscall(SYS_ptrace, PTRACE_DETACH, target, nullptr, nullptr);
  }
  int target_pidfd = static_cast<int>(syscall(SYS_pidfd_open, target, 0));
  fd = syscall(SYS_pidfd_getfd, target_pidfd, 0, 0);
  record(out, "pidfd_getfd", fd);
  if (fd >= 0) close(static_cast<int>(fd));
  close(target_pidfd);
  record(out, "kcmp",
         syscall(SYS_kcmp, static_cast<long>(getpid()), static_cast<long>(target),
                 static_cast<long>(KCMP_FILE), 0L, 0L));
  kill(target, SIGKILL);
  waitpid(target, nullptr, 0);
  char src[8] = "sbx", dst[8] = {};
  iovec local{dst, sizeof(dst)}, remote{src, sizeof(src)};
  record(out, "process_vm_readv",
         syscall(SYS_process_vm_readv, static_cast<long>(getpid()), &local, 1L, &remote, 1L, 0L));
  record(out, "process_vm_writev",
         syscall(SYS_process_vm_writev, static_cast<long>(getpid()), &remote, 1L, &local, 1L, 0L));
  record(out, "prctl_set_pdeathsig", prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0));
  int sig = -1;
  record(out, "prctl_get_pdeathsig", prctl(PR_GET_PDEATHSIG, &sig, 0, 0, 0));

  // The caller's keyrings (the child's own session keyring is the caller's here).
  record(out, "keyctl", syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING, 0));
  record(out, "add_key",
         syscall(SYS_add_key, "user", "sbx-seccomp-test", "x", 1, KEY_SPEC_PROCESS_KEYRING));
  record(out, "request_key",
         syscall(SYS_request_key, "user", "sbx-seccomp-absent", nullptr, KEY_SPEC_PROCESS_KEYRING));
  // Metadata of a file the parent made beside `scratch` (a tmpfs may be on `scratch` now).
  const std::string file = scratch + ".file";
  const char* f = file.c_str();
  int ffd = open(f, O_RDWR | O_CLOEXEC);
  record(out, "chmod", syscall(SYS_chmod, f, 0644));
  record(out, "fchmod", syscall(SYS_fchmod, ffd, 0644));
  record(out, "fchmodat", syscall(SYS_fchmodat, AT_FDCWD, f, 0644));
  record(out, "fchmodat2", syscall(kFchmodat2, AT_FDCWD, f, 0644, 0));
  record(out, "chown", syscall(SYS_chown, f, 0, 0));
  record(out, "fchown", syscall(SYS_fchown, ffd, 0, 0));
  record(out, "lchown", syscall(SYS_lchown, f, 0, 0));
  record(out, "fchownat", syscall(SYS_fchownat, AT_FDCWD, f, 0, 0, 0));
  record(out, "setxattr", syscall(SYS_setxattr, f, "user.sbx", "1", 1, 0));
  record(out, "lsetxattr", syscall(SYS_lsetxattr, f, "user.sbx", "1", 1, 0));
  record(out, "fsetxattr", syscall(SYS_fsetxattr, ffd, "user.sbx", "1", 1, 0));
  record(out, "removexattr", syscall(SYS_removexattr, f, "user.sbx"));
  record(out, "lremovexattr", syscall(SYS_lremovexattr, f, "user.sbx"));
  record(out, "fremovexattr", syscall(SYS_fremovexattr, ffd, "user.sbx"));
  record(out, "setxattrat", syscall(kSetxattrat, AT_FDCWD, f, 0, "user.sbx", nullptr, 0));
  record(out, "removexattrat", syscall(kRemovexattrat, AT_FDCWD, f, 0, "user.sbx"));
  close(ffd);
  // exec: nothing by path; execveat only from kExecFd with AT_EMPTY_PATH (closed here: EBADF
  // shows the filter let the call through to the kernel).
  char* const no_argv[] = {const_cast<char*>("x"), nullptr};
  char* const no_env[] = {nullptr};
  const std::string absent = scratch + "/absent";
  record(out, "execve", syscall(SYS_execve, absent.c_str(), no_argv, no_env));
  record(out, "execveat_path",
         syscall(SYS_execveat, static_cast<long>(AT_FDCWD), absent.c_str(), no_argv, no_env, 0L));
  const long exec_fd = kExecFd, empty_path = AT_EMPTY_PATH;  // whole longs: see exec_prepared
  record(out, "execveat_other_fd",
         syscall(SYS_execveat, exec_fd - 1, "", no_argv, no_env, empty_path));
  record(out, "execveat_other_flags",
         syscall(SYS_execveat, exec_fd, "", no_argv, no_env, empty_path | AT_SYMLINK_NOFOLLOW));
  record(out, "execveat_exec_fd_closed",
         syscall(SYS_execveat, exec_fd, "", no_argv, no_env, empty_path));
  // ... and from kExecFd, a real binary runs: the helper's own exec of the VMM.
  pid_t runner = fork();
  if (runner == 0) {
    // As the helper does: the soft file limit raised to make room for fd kExecFd.
    rlimit lim{};
    getrlimit(RLIMIT_NOFILE, &lim);
    if (lim.rlim_cur <= static_cast<rlim_t>(kExecFd) &&
        lim.rlim_max > static_cast<rlim_t>(kExecFd)) {
      lim.rlim_cur = static_cast<rlim_t>(kExecFd) + 1;
      setrlimit(RLIMIT_NOFILE, &lim);
    }
    int bin = open("/bin/true", O_PATH | O_CLOEXEC);
    if (bin < 0 || dup3(bin, kExecFd, O_CLOEXEC) != kExecFd) _exit(99);
    char* const true_argv[] = {const_cast<char*>("true"), nullptr};
    syscall(SYS_execveat, exec_fd, "", true_argv, no_env, empty_path);
    _exit(98);
  }
  int runner_status = 0;
  waitpid(runner, &runner_status, 0);
  errno = WIFEXITED(runner_status) ? WEXITSTATUS(runner_status) : EINTR;
  record(out, "execveat_exec_fd", errno == 0 ? 0 : -1);

  pid_t pid = fork();
  if (pid == 0) _exit(42);
  int status = 0;
  bool forked =
      pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 42;
  if (!forked) errno = pid < 0 ? errno : ECHILD;
  record(out, "fork", forked ? 0 : -1);
  _exit(0);
}

// Runs the checks in a forked child (with or without the filter) and returns what it saw.
Results run_checks(bool with_filter) {
  char tmpl[] = "/tmp/sbx-seccomp-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) {
    ADD_FAILURE() << "mkdtemp: " << std::strerror(errno);
    return {};
  }
  const std::string scratch = tmpl;
  close(open((scratch + ".file").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe2: " << std::strerror(errno);
    return {};
  }
  pid_t pid = fork();
  if (pid == 0) {
    close(pipe_fds[0]);
    child_checks(pipe_fds[1], with_filter, scratch);
  }
  close(pipe_fds[1]);
  std::string text;
  char buf[512];
  ssize_t n;
  while ((n = read(pipe_fds[0], buf, sizeof(buf))) != 0) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  close(pipe_fds[0]);
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (pid > 0 && waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::filesystem::remove(scratch);
  std::filesystem::remove(scratch + ".file");
  EXPECT_GT(pid, 0) << "fork: " << std::strerror(errno);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "the check child ended with status " << status << " (100: no private mount ns, "
      << "101: the filter did not install)";
  Results results;
  std::istringstream lines(text);
  std::string name;
  int err;
  while (lines >> name >> err) results[name] = err;
  return results;
}

class SeccompFilterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) {
      GTEST_SKIP() << "the filter is compared against what root may do without it; run as "
                      "root, as CI does";
    }
  }
};

TEST_F(SeccompFilterTest, DeniesMountAndNamespaceCallsWithEperm) {
  const Results filtered = run_checks(true);
  const Results control = run_checks(false);
  for (const char* name :
       {"fsopen", "unshare", "mount", "pivot_root", "move_mount", "fsmount", "fsconfig", "fspick",
        "mount_setattr", "open_tree", "setns", "umount2"}) {
    ASSERT_TRUE(filtered.count(name) && control.count(name)) << name << " was not checked";
    EXPECT_EQ(filtered.at(name), EPERM) << name;
    EXPECT_NE(control.at(name), EPERM) << name << ": root without the filter gets EPERM too, "
                                       << "so the check proves nothing";
  }
  // Root without the filter succeeds outright at these.
  for (const char* name : {"fsopen", "unshare", "mount", "fspick", "open_tree", "setns"}) {
    EXPECT_EQ(control.at(name), 0) << name;
  }
}

// A compromised VMM must not reach into its supervisor or a sibling VMM of the same uid, nor
// clear the parent-death signal that ties it to its supervisor.
TEST_F(SeccompFilterTest, DeniesReachingIntoOtherProcessesWithEperm) {
  const Results filtered = run_checks(true);
  const Results control = run_checks(false);
  for (const char* name : {"ptrace", "pidfd_getfd", "kcmp", "process_vm_readv", "process_vm_writev",
                           "prctl_set_pdeathsig"}) {
    ASSERT_TRUE(filtered.count(name) && control.count(name)) << name << " was not checked";
    EXPECT_EQ(filtered.at(name), EPERM) << name;
    EXPECT_EQ(control.at(name), 0) << name << ": the control must succeed";
  }
  // Only the setter is refused: reading the parent-death signal stays allowed.
  EXPECT_EQ(filtered.at("prctl_get_pdeathsig"), 0);
}

// A compromised VMM must not reach the caller's keyrings, open up a file of the caller's that
// `files` did not give it by changing its mode, owner or extended attributes (Landlock does not
// cover them), or start any program: no execve, and execveat only as the helper's own exec.
TEST_F(SeccompFilterTest, DeniesKeyringsMetadataChangesAndExecWithEperm) {
  const Results filtered = run_checks(true);
  const Results control = run_checks(false);
  for (const char* name : {"keyctl",
                           "add_key",
                           "request_key",
                           "chmod",
                           "fchmod",
                           "fchmodat",
                           "fchmodat2",
                           "chown",
                           "fchown",
                           "lchown",
                           "fchownat",
                           "setxattr",
                           "lsetxattr",
                           "fsetxattr",
                           "removexattr",
                           "lremovexattr",
                           "fremovexattr",
                           "setxattrat",
                           "removexattrat",
                           "execve",
                           "execveat_path",
                           "execveat_other_fd",
                           "execveat_other_flags"}) {
    ASSERT_TRUE(filtered.count(name) && control.count(name)) << name << " was not checked";
    EXPECT_EQ(filtered.at(name), EPERM) << name;
    EXPECT_NE(control.at(name), EPERM) << name << ": root without the filter gets EPERM too";
  }
  // Root without the filter succeeds outright at these.
  for (const char* name : {"keyctl", "add_key", "chmod", "fchmod", "fchmodat", "chown", "fchown",
                           "lchown", "fchownat"}) {
    EXPECT_EQ(control.at(name), 0) << name;
  }
  EXPECT_EQ(control.at("execve"), ENOENT);
  // The one execveat the filter lets through reaches the kernel (EBADF: nothing at kExecFd),
  // and with a binary at kExecFd it runs.
  EXPECT_EQ(filtered.at("execveat_exec_fd_closed"), EBADF);
  EXPECT_EQ(control.at("execveat_exec_fd_closed"), EBADF);
  EXPECT_EQ(filtered.at("execveat_exec_fd"), 0);
  EXPECT_EQ(control.at("execveat_exec_fd"), 0);
}

TEST_F(SeccompFilterTest, EveryNamedSyscallIsChecked) {
  const Results filtered = run_checks(true);
  for (std::string_view name : denied_syscalls()) {
    if (name == "umount") continue;  // not a syscall on x86_64; umount2 is checked
    EXPECT_TRUE(filtered.count(std::string(name))) << name << " has no check here";
  }
}

TEST_F(SeccompFilterTest, CloneWithNamespaceFlagsIsEperm) {
  const Results filtered = run_checks(true);
  const Results control = run_checks(false);
  for (const char* name : {"clone_newns", "clone_newuser", "clone_newnet"}) {
    ASSERT_TRUE(filtered.count(name) && control.count(name)) << name << " was not checked";
    EXPECT_EQ(filtered.at(name), EPERM) << name;
    EXPECT_EQ(control.at(name), 0) << name;
  }
}

TEST_F(SeccompFilterTest, Clone3IsEnosysSoLibcFallsBackToClone) {
  const Results filtered = run_checks(true);
  const Results control = run_checks(false);
  ASSERT_TRUE(filtered.count("clone3") && control.count("clone3"));
  EXPECT_EQ(filtered.at("clone3"), ENOSYS);
  EXPECT_EQ(control.at("clone3"), 0);
}

TEST_F(SeccompFilterTest, PlainForkStillWorks) {
  const Results filtered = run_checks(true);
  ASSERT_TRUE(filtered.count("fork"));
  EXPECT_EQ(filtered.at("fork"), 0);
}

}  // namespace
}  // namespace sbx::seccomp
