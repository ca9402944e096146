// SPDX-License-Identifier: Apache-2.0
// The helper's policy: which VMMs, sandbox roots, image roots and netns names a caller may use.
// It is read only from a root-owned file at a path fixed at build time; the caller cannot name
// another. Format: docs/policy.md.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace sbx::policy {

// Whether a launch whose audit record the kernel did not take may still exec the VMM.
enum class AuditMode {
  kBestEffort,  // yes: the record goes to syslog instead (the default)
  kRequired,    // no: refused at step write_audit
};

// Whether the helper applies a Landlock layer before exec (docs/policy.md).
enum class LandlockMode {
  kBestEffort,  // what the kernel supports, down to none (the default)
  kRequired,    // refuse a launch on a kernel without the ABI the layer needs
  kOff,         // never
};

// Whether launches may, or must, be jailed.
enum class JailMode {
  kOptional,  // the request decides (the default)
  kRequired,  // a request without a jail is refused
  kOff,       // a request with a jail is refused
};

struct Policy {
  std::vector<std::string> vmms;           // absolute paths the helper may execute
  std::vector<std::string> sandbox_roots;  // a sandbox dir is a direct child of one of these
  std::vector<std::string> image_roots;    // link targets resolve beneath one of these
  std::vector<std::string> netns_globs;    // fnmatch globs over /run/netns names; {uid} expands
  uint64_t tmpfs_size_mb = 16;
  std::optional<uint64_t> rlimit_nofile;
  bool allow_root_vmm = false;
  AuditMode audit = AuditMode::kBestEffort;
  std::vector<std::string> devices;    // character devices under /dev a VMM may be given
  std::vector<std::string> read_only;  // root-owned paths a VMM may be given read-only
  LandlockMode landlock = LandlockMode::kBestEffort;
  JailMode jail = JailMode::kOptional;
};

inline constexpr size_t kMaxPolicyBytes = 64 * 1024;
inline constexpr size_t kMaxEntriesPerKey = 256;
inline constexpr uint64_t kMaxTmpfsSizeMb = 65536;
inline constexpr uint64_t kMaxRlimitNofile = 1 << 20;

// Parses policy text. `filename` is only used in messages ("FILE:LINE: why").
Result<Policy> parse(std::string_view text, std::string_view filename);

// Opens `path` without following symlinks, checks that it and every parent directory are
// root-owned and not writable by group or other, then reads (at most kMaxPolicyBytes) and
// parses it.
Result<Policy> load(const std::string& path);

// True when `name` matches one of the policy's netns globs for caller `uid`.
bool netns_allowed(const Policy& policy, std::string_view name, uid_t uid);

// The parsed policy in the file's own syntax (for --check-policy).
std::string format(const Policy& policy);

}  // namespace sbx::policy
