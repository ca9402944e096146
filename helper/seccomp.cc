// SPDX-License-Identifier: Apache-2.0
#include "helper/seccomp.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <iterator>

#include "helper/seccomp_rules.h"

namespace sbx::seccomp {
namespace {

// The program libseccomp compiled from seccomp_rules.h at build time, architecture check
// included (a foreign-architecture syscall kills the process).
const sock_filter kVmmFilter[] = {
#include "vmm_seccomp_filter.inc"
};

constexpr char kDigest[] =
#include "vmm_seccomp_digest.inc"
    ;

}  // namespace

std::span<const std::string_view> denied_syscalls() {
  return kDenied;
}

std::string_view filter_digest() {
  return kDigest;
}

Status install_vmm_filter() {
  sock_fprog prog{static_cast<unsigned short>(std::size(kVmmFilter)),
                  const_cast<sock_filter*>(kVmmFilter)};
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
    return Status(Step::kInstallSeccomp, errno, "seccomp(SECCOMP_SET_MODE_FILTER)");
  }
  return {};
}

}  // namespace sbx::seccomp
