// SPDX-License-Identifier: Apache-2.0
// The Landlock layer of the VMM, applied by the helper right before exec (after no_new_privs
// and the syscall filter): signals and abstract unix sockets scoped to the VMM's own domain
// (ABI >= 6), and, when the request declares `files`, filesystem access only to what it was
// given, with device ioctls only on its devices (ABI >= 5). Being in a domain also keeps the
// VMM from ptracing (or opening /proc/PID/mem of) any process outside it.
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "common/unique_fd.h"
#include "helper/policy.h"

namespace sbx::landlock {

// The newest ABI the layer uses (scopes); older kernels get what they support.
inline constexpr int kLayerAbi = 6;

// Access rights (include/uapi/linux/landlock.h), defined here so the build does not depend
// on the installed kernel headers' age.
inline constexpr uint64_t kExecute = 1ULL << 0;
inline constexpr uint64_t kWriteFile = 1ULL << 1;
inline constexpr uint64_t kReadFile = 1ULL << 2;
inline constexpr uint64_t kReadDir = 1ULL << 3;
inline constexpr uint64_t kRemoveDir = 1ULL << 4;
inline constexpr uint64_t kRemoveFile = 1ULL << 5;
inline constexpr uint64_t kMakeChar = 1ULL << 6;
inline constexpr uint64_t kMakeDir = 1ULL << 7;
inline constexpr uint64_t kMakeReg = 1ULL << 8;
inline constexpr uint64_t kMakeSock = 1ULL << 9;
inline constexpr uint64_t kMakeFifo = 1ULL << 10;
inline constexpr uint64_t kMakeBlock = 1ULL << 11;
inline constexpr uint64_t kMakeSym = 1ULL << 12;
inline constexpr uint64_t kRefer = 1ULL << 13;                   // ABI 2
inline constexpr uint64_t kTruncate = 1ULL << 14;                // ABI 3
inline constexpr uint64_t kIoctlDev = 1ULL << 15;                // ABI 5
inline constexpr uint64_t kScopeAbstractUnixSocket = 1ULL << 0;  // ABI 6
inline constexpr uint64_t kScopeSignal = 1ULL << 1;              // ABI 6

// What each kind of path grants. Nothing grants kMakeChar or kMakeBlock; only the VMM binary
// and the root-owned read_only paths grant kExecute (the dynamic loader is opened for exec).
inline constexpr uint64_t kReadWriteDir = kReadFile | kWriteFile | kReadDir | kRemoveDir |
                                          kRemoveFile | kMakeDir | kMakeReg | kMakeSock |
                                          kMakeFifo | kMakeSym | kRefer | kTruncate;
inline constexpr uint64_t kReadOnlyTree = kReadFile | kReadDir | kExecute;
inline constexpr uint64_t kImageReadOnly = kReadFile;
inline constexpr uint64_t kImageReadWrite = kReadFile | kWriteFile | kTruncate;
inline constexpr uint64_t kVmmBinary = kExecute | kReadFile;
inline constexpr uint64_t kDevice = kReadFile | kWriteFile | kIoctlDev;
inline constexpr uint64_t kBasicDevice = kReadFile | kWriteFile;
inline constexpr uint64_t kProc = kReadFile | kReadDir;

// The kernel's Landlock ABI version; 0 when Landlock is not built in or not enabled.
int kernel_abi();

// The ABI the layer will be built for (0: no layer), decided before the audit record is
// written: `off` gives 0; `required` refuses (step landlock, EOPNOTSUPP) a kernel below
// kLayerAbi; `best_effort` uses what the kernel has, up to kLayerAbi.
Result<int> plan(policy::LandlockMode mode, int kernel);

struct Rule {
  UniqueFd fd;  // O_PATH
  uint64_t access;
};

// The paths every VMM with filesystem rules may use besides its declared files: /proc (read)
// and /dev/{null,zero,full,random,urandom} (read and write, no ioctl); in a jail also the
// listing of its /dev, which holds only those and its devices. Opened without following
// symlinks; a missing one is left out.
Status add_runtime_paths(std::vector<Rule>& rules, bool jailed);

// Builds the ruleset for `abi` and restricts this thread (and what it executes) to it.
// `fs_rules`: handle every filesystem right the ABI knows and allow only `rules`; without
// them, below ABI 6 the layer handles only device-node creation (which the VMM cannot do
// anyway), so the VMM still gets a domain of its own and with it the ptrace boundary.
// Preconditions: single-threaded, no_new_privs set. The rule fds are closed on return.
Status apply(int abi, bool fs_rules, std::vector<Rule>& rules);

}  // namespace sbx::landlock
