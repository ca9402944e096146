// SPDX-License-Identifier: Apache-2.0
// Runs a command as if the kernel lacked one syscall: a seccomp filter that answers it with
// ENOSYS, inherited across the exec (the caller is root, so no no_new_privs is needed and the
// helper keeps its file capabilities). The tests of an older kernel's refusals use it.
//   sbx-without-syscall NAME -- CMD ARGS...
#include <seccomp.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  if (argc < 4 || std::strcmp(argv[2], "--") != 0) {
    std::fprintf(stderr, "usage: sbx-without-syscall NAME -- CMD ARGS...\n");
    return 2;
  }
  const int nr = seccomp_syscall_resolve_name(argv[1]);
  if (nr < 0) {
    std::fprintf(stderr, "sbx-without-syscall: unknown syscall %s\n", argv[1]);
    return 2;
  }
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (ctx == nullptr || seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0) != 0 ||
      seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), nr, 0) != 0 || seccomp_load(ctx) != 0) {
    std::fprintf(stderr, "sbx-without-syscall: cannot install the filter (run as root)\n");
    return 2;
  }
  seccomp_release(ctx);
  execv(argv[3], argv + 3);
  std::fprintf(stderr, "sbx-without-syscall: exec %s: %s\n", argv[3], std::strerror(errno));
  return 127;
}
