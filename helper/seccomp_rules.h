// SPDX-License-Identifier: Apache-2.0
// What the VMM's syscall filter refuses, in one place: the build-time generator
// (gen_seccomp_filter.cc) compiles it to BPF, and the tests read the same lists.
#pragma once

#include <sched.h>
#include <sys/prctl.h>

#include <array>
#include <string_view>

#include "common/protocol.h"

namespace sbx::seccomp {

// Refused with EPERM: every way to change the mount or namespace view; every way to reach
// into another process of the same uid (the supervisor, sibling VMMs): ptrace, the
// process_vm_* copies, pidfd_getfd, kcmp; the key-management calls, which reach the caller's
// own keyrings (Docker's and runc's default profiles refuse them too); the metadata changes
// Landlock does not cover (mode, owner, extended attributes), which would let the VMM open up
// a file of the caller's that `files` never gave it; and execve: the VMM starts no program
// (execveat is refused too, but for the helper's own exec of the VMM: kExecFd below). Names
// that are not syscalls on the build architecture (umount on x86_64) are skipped by the
// generator; names this libseccomp does not know go by number (kDeniedByNumber).
inline constexpr std::array<std::string_view, 38> kDenied = {
    "mount",         "umount2",      "pivot_root",       "unshare",
    "setns",         "move_mount",   "open_tree",        "fsopen",
    "fsmount",       "fsconfig",     "fspick",           "mount_setattr",
    "umount",        "ptrace",       "process_vm_readv", "process_vm_writev",
    "pidfd_getfd",   "kcmp",         "keyctl",           "add_key",
    "request_key",   "chmod",        "fchmod",           "fchmodat",
    "fchmodat2",     "chown",        "fchown",           "lchown",
    "fchownat",      "setxattr",     "lsetxattr",        "fsetxattr",
    "removexattr",   "lremovexattr", "fremovexattr",     "setxattrat",
    "removexattrat", "execve",
};

// Syscalls newer than Debian 12's libseccomp (2.5.4), refused by number where it cannot
// resolve the name. The numbers are the same on x86_64 and aarch64 (the unified table that
// every architecture shares from 403 on).
struct NumberedSyscall {
  std::string_view name;
  int number;
};
inline constexpr std::array<NumberedSyscall, 3> kDeniedByNumber = {{
    {"fchmodat2", 452},
    {"setxattrat", 463},
    {"removexattrat", 466},
}};

// The helper executes the VMM with execveat(kExecFd, "", argv, envp, AT_EMPTY_PATH), and the
// filter refuses every other execveat: any other fd, any other flags. The VMM can never hold
// an fd of this number: the helper lowers RLIMIT_NOFILE's hard limit to kExecFd (so no fd
// at or above it can be made, by dup2, SCM_RIGHTS or open) after placing the VMM's own fd
// here, close-on-exec, and nothing can raise the limit again without CAP_SYS_RESOURCE. So
// once the VMM runs, no exec succeeds in the sandbox: not of a file it wrote, not of a memfd,
// not of the dynamic loader with a written file as its argument. 4095: the kernel's default
// hard limit is 4096, so any caller that did not lower its own can place it, and the VMM
// keeps a hard limit of 4095 fds (Firecracker's jailer gives it 2048 by default).
inline constexpr int kExecFd = protocol::kVmmExecFd;

// prctl options refused with EPERM: PR_SET_PDEATHSIG would let the VMM clear the parent-death
// signal the helper set and outlive a SIGKILLed supervisor.
inline constexpr std::array<unsigned long, 1> kDeniedPrctlOptions = {PR_SET_PDEATHSIG};

// clone with any of these flags is refused with EPERM; clone3 is ENOSYS, because the filter
// cannot read its flags (they are behind a pointer) and libc then falls back to clone.
inline constexpr std::array<unsigned long, 8> kNamespaceCloneFlags = {
    CLONE_NEWNS,  CLONE_NEWUTS, CLONE_NEWIPC,    CLONE_NEWUSER,
    CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP, CLONE_NEWTIME,
};

}  // namespace sbx::seccomp
