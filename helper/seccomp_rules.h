// SPDX-License-Identifier: Apache-2.0
// What the VMM's syscall filter refuses, in one place: the build-time generator
// (gen_seccomp_filter.cc) compiles it to BPF, and the tests read the same lists.
#pragma once

#include <sched.h>
#include <sys/prctl.h>

#include <array>
#include <string_view>

namespace sbx::seccomp {

// Refused with EPERM: every way to change the mount or namespace view, and every way to reach
// into another process of the same uid (the supervisor, sibling VMMs): ptrace, the
// process_vm_* copies, pidfd_getfd, kcmp. Names that are not syscalls on the build
// architecture (umount on x86_64) are skipped by the generator.
inline constexpr std::array<std::string_view, 18> kDenied = {
    "mount",     "umount2", "pivot_root",       "unshare",           "setns",       "move_mount",
    "open_tree", "fsopen",  "fsmount",          "fsconfig",          "fspick",      "mount_setattr",
    "umount",    "ptrace",  "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
};

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
