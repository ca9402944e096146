// SPDX-License-Identifier: Apache-2.0
#include "helper/landlock.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <span>
#include <string>

#include "helper/jail.h"
#include "helper/paths.h"

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#endif
#ifndef SYS_landlock_add_rule
#define SYS_landlock_add_rule 445
#endif
#ifndef SYS_landlock_restrict_self
#define SYS_landlock_restrict_self 446
#endif

namespace sbx::landlock {
namespace {

constexpr uint32_t kCreateRulesetVersion = 1U << 0;
constexpr int kRulePathBeneath = 1;

// struct landlock_ruleset_attr as of ABI 6. Older kernels take the larger struct as long as
// the fields they do not know are zero.
struct RulesetAttr {
  uint64_t handled_access_fs;
  uint64_t handled_access_net;
  uint64_t scoped;
};

struct __attribute__((packed)) PathBeneathAttr {
  uint64_t allowed_access;
  int32_t parent_fd;
};

// The filesystem rights an ABI knows.
uint64_t fs_rights(int abi) {
  uint64_t rights = (kMakeSym << 1) - 1;  // ABI 1: EXECUTE .. MAKE_SYM
  if (abi >= 2) rights |= kRefer;
  if (abi >= 3) rights |= kTruncate;
  if (abi >= 5) rights |= kIoctlDev;
  return rights;
}

// Rights that apply to a file (not a directory): the only ones a rule on a file may carry.
constexpr uint64_t kFileRights = kExecute | kWriteFile | kReadFile | kTruncate | kIoctlDev;

}  // namespace

int kernel_abi() {
  long abi = syscall(SYS_landlock_create_ruleset, nullptr, 0, kCreateRulesetVersion);
  return abi < 0 ? 0 : static_cast<int>(abi);
}

Result<int> plan(policy::LandlockMode mode, int kernel) {
  switch (mode) {
    case policy::LandlockMode::kOff:
      return 0;
    case policy::LandlockMode::kRequired:
      if (kernel < kLayerAbi) {
        return Status(Step::kLandlock, EOPNOTSUPP,
                      "the policy has landlock = required and the kernel's Landlock ABI is " +
                          std::to_string(kernel) + " (" + std::to_string(kLayerAbi) +
                          " is needed)");
      }
      return kLayerAbi;
    case policy::LandlockMode::kBestEffort:
      break;
  }
  return kernel < kLayerAbi ? kernel : kLayerAbi;
}

Status add_runtime_paths(std::vector<Rule>& rules, bool jailed) {
  // A jail's /dev holds only the basic nodes and the devices given: one rule covers it (the
  // devices' own rules add their ioctls). The host's /dev holds everything: a rule per node.
  std::vector<std::pair<std::string, uint64_t>> runtime{{"/proc", kProc}};
  if (jailed) {
    runtime.emplace_back("/dev", kReadDir | kBasicDevice);
  } else {
    for (const char* name : jail::kBasicDevices) {
      runtime.emplace_back(std::string("/dev/") + name, kBasicDevice);
    }
  }
  for (const auto& [path, access] : runtime) {
    UniqueFd fd(paths::open_no_symlinks(AT_FDCWD, path, O_PATH, false));
    if (!fd) {
      if (errno == ENOENT) continue;
      return Status(Step::kLandlock, errno, "open " + path + " for its rule");
    }
    rules.push_back({std::move(fd), access});
  }
  return {};
}

Status apply(int abi, bool fs_rules, std::vector<Rule>& rules) {
  std::vector<Rule> taken = std::move(rules);  // closed on return, whatever happens
  rules.clear();
  if (abi <= 0) return {};
  RulesetAttr attr{};
  if (fs_rules) {
    attr.handled_access_fs = fs_rights(abi);
  } else if (abi < 6) {
    attr.handled_access_fs = kMakeChar | kMakeBlock;
  }
  if (abi >= 6) attr.scoped = kScopeSignal | kScopeAbstractUnixSocket;
  UniqueFd ruleset(static_cast<int>(syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0)));
  if (!ruleset) {
    return Status(Step::kLandlock, errno, "landlock_create_ruleset for ABI " + std::to_string(abi));
  }
  if (fs_rules) {
    for (const Rule& rule : taken) {
      struct stat st;
      if (fstat(rule.fd.get(), &st) != 0) return Status(Step::kLandlock, errno, "fstat a rule");
      uint64_t allowed = rule.access & attr.handled_access_fs;
      if (!S_ISDIR(st.st_mode)) allowed &= kFileRights;
      if (!S_ISCHR(st.st_mode)) allowed &= ~kIoctlDev;
      if (allowed == 0) continue;
      PathBeneathAttr beneath{allowed, rule.fd.get()};
      if (syscall(SYS_landlock_add_rule, ruleset.get(), kRulePathBeneath, &beneath, 0) != 0) {
        return Status(Step::kLandlock, errno, "landlock_add_rule");
      }
    }
  }
  if (syscall(SYS_landlock_restrict_self, ruleset.get(), 0) != 0) {
    return Status(Step::kLandlock, errno, "landlock_restrict_self");
  }
  return {};
}

}  // namespace sbx::landlock
