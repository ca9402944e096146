// SPDX-License-Identifier: Apache-2.0
// The names of the helper's launch steps, shared by the helper (which reports them), the wire
// protocol (which carries them as codes) and the supervisor (which prints them in events).
// Codes are part of the wire format: append only, never renumber.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace sbx {

enum class Step : uint16_t {
  kCheckInvocation = 1,     // argv, fd 3, credentials, capability at entry
  kReadRequest = 2,         // reading and decoding the LAUNCH message
  kLoadPolicy = 3,          // opening, trust-checking and parsing the policy file
  kValidateRequest = 4,     // request checked against the policy
  kOpenVmm = 5,             // O_PATH open of the VMM binary, ownership and mode checks
  kSetsid = 6,              // new session: pid == pgid == sid
  kParentDeathSignal = 7,   // PR_SET_PDEATHSIG re-armed, parent re-checked
  kJoinNetns = 8,           // open /run/netns/NAME, verify nsfs, setns
  kUnshare = 9,             // unshare(CLONE_NEWNS [| CLONE_NEWPID])
  kForkPidNamespace = 10,   // the one fork into the new PID namespace
  kMakeMountsPrivate = 11,  // "/" recursively private (or slave)
  kRemountSys = 12,         // sysfs for the joined netns
  kBindEtcNetns = 13,       // /etc/netns/NAME/* over /etc/*
  kMountProc = 14,          // procfs for the new PID namespace
  kMakeSandboxDir = 15,     // mkdir without symlinks, owned by the caller
  kMountTmpfs = 16,         // tmpfs on the sandbox dir through its fd
  kCreateLinks = 17,        // symlinks inside the tmpfs
  kSetRlimits = 18,         // policy rlimits
  kDropCapabilities = 19,   // every capability set emptied
  kNoNewPrivs = 20,         // PR_SET_NO_NEW_PRIVS
  kInstallSeccomp = 21,     // the VMM's syscall filter
  kChdirSandbox = 22,       // cwd = sandbox dir
  kPrepareFds = 23,         // passed fds placed, every other fd close-on-exec
  kExecVmm = 24,            // execveat of the fd from kOpenVmm
  kWriteAudit = 25,         // the launch's audit records (fatal only with `audit = required`)
  kLandlock = 26,           // the Landlock layer: planned before any mount, applied before exec
  kBuildJail = 27,          // the jail's root: a tmpfs holding binds of what the VMM was given
  kPivotRoot = 28,          // pivot_root into the jail; the old root detached
  kForkVmm = 29,            // the PID-namespace init forks the VMM
};

inline constexpr Step kFirstStep = Step::kCheckInvocation;
inline constexpr Step kLastStep = Step::kForkVmm;

// The step's stable name, as printed in errors, events and audit records.
std::string_view step_name(Step step);

// The step for a wire code; nullopt for codes this build does not know.
std::optional<Step> step_from_code(uint16_t code);

// The step for a name; nullopt for unknown names.
std::optional<Step> step_from_name(std::string_view name);

}  // namespace sbx
