#include "helper/seccomp.h"

#include <sched.h>
#include <seccomp.h>

#include <array>
#include <cerrno>
#include <string>

namespace sbx::seccomp {
namespace {

constexpr std::array<std::string_view, 13> kDenied = {
    "mount",  "umount2", "pivot_root", "unshare", "setns",         "move_mount", "open_tree",
    "fsopen", "fsmount", "fsconfig",   "fspick",  "mount_setattr", "umount",
};

constexpr std::array<unsigned long, 8> kNamespaceCloneFlags = {
    CLONE_NEWNS,  CLONE_NEWUTS, CLONE_NEWIPC,    CLONE_NEWUSER,
    CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP, CLONE_NEWTIME,
};

class FilterContext {
 public:
  FilterContext() : ctx_(seccomp_init(SCMP_ACT_ALLOW)) {}
  ~FilterContext() {
    if (ctx_ != nullptr) seccomp_release(ctx_);
  }
  FilterContext(const FilterContext&) = delete;
  FilterContext& operator=(const FilterContext&) = delete;
  scmp_filter_ctx get() const { return ctx_; }

 private:
  scmp_filter_ctx ctx_;
};

}  // namespace

std::span<const std::string_view> denied_syscalls() {
  return kDenied;
}

Status install_vmm_filter() {
  FilterContext ctx;
  if (ctx.get() == nullptr) return Status(Step::kInstallSeccomp, ENOMEM, "seccomp_init");
  for (std::string_view name : kDenied) {
    std::string n(name);
    int nr = seccomp_syscall_resolve_name(n.c_str());
    if (nr < 0) continue;  // not a syscall on this architecture (e.g. umount on x86_64)
    int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), nr, 0);
    if (rc != 0) return Status(Step::kInstallSeccomp, -rc, "deny " + n);
  }
  for (unsigned long flag : kNamespaceCloneFlags) {
    int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag));
    if (rc != 0) return Status(Step::kInstallSeccomp, -rc, "deny clone with namespace flags");
  }
  int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
  if (rc != 0) return Status(Step::kInstallSeccomp, -rc, "clone3 to ENOSYS");
  rc = seccomp_load(ctx.get());
  if (rc != 0) return Status(Step::kInstallSeccomp, -rc, "seccomp_load");
  return {};
}

}  // namespace sbx::seccomp
