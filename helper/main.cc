// SPDX-License-Identifier: Apache-2.0
// sbx-nsexec: the capability-scoped launch helper. Started by sbx-supervisor with a
// SOCK_SEQPACKET socket at fd 3; everything it does is in helper/launch.cc.
#include <linux/capability.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "common/kernel_features.h"
#include "helper/caps.h"
#include "helper/fds.h"
#include "helper/launch.h"
#include "helper/policy.h"

#ifndef SBX_POLICY_PATH
#error "SBX_POLICY_PATH must be set by the build"
#endif
#ifndef SBX_VERSION
#define SBX_VERSION "0.0.0"
#endif

namespace {

constexpr const char* kPolicyPath = SBX_POLICY_PATH;

void print_usage(FILE* out) {
  std::fprintf(out,
               "usage: sbx-nsexec --version | --check-policy | --help\n"
               "\n"
               "sbx-nsexec is the privileged launch helper of sbx. It is started by\n"
               "sbx-supervisor with a SOCK_SEQPACKET socket at fd 3 and reads one launch\n"
               "request from it; it takes no other arguments.\n"
               "  --version       print the version and the policy path\n"
               "  --check-policy  parse %s and print it, or the error\n",
               kPolicyPath);
}

// Signal dispositions and the mask survive exec: the VMM must start with defaults, whatever
// the caller had.
void reset_signals() {
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    signal(sig, SIG_DFL);
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
}

int check_policy() {
  auto policy = sbx::policy::load(kPolicyPath);
  if (!policy.ok()) {
    std::fprintf(stderr, "sbx-nsexec: %s\n", policy.status().message().c_str());
    return 1;
  }
  std::printf("# %s\n%s", kPolicyPath, sbx::policy::format(policy.value()).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const pid_t parent_at_entry = getppid();
  if (argc == 2) {
    std::string_view arg = argv[1];
    if (arg == "--version") {
      std::printf("sbx-nsexec %s (policy %s)\n", SBX_VERSION, kPolicyPath);
      return 0;
    }
    if (arg == "--help") {
      print_usage(stdout);
      return 0;
    }
    if (arg == "--check-policy") return check_policy();
  }
  if (argc != 1) {
    print_usage(stderr);
    return 2;
  }
  if (getuid() != geteuid() || getgid() != getegid()) {
    std::fprintf(stderr, "sbx-nsexec: refusing to run setuid or setgid\n");
    return 2;
  }
  if (sbx::Status st = sbx::fds::ensure_stdio_open(); !st.ok()) return 2;
  if (sbx::Status st = sbx::fds::check_control_socket(sbx::fds::kControlFd); !st.ok()) {
    std::fprintf(stderr,
                 "sbx-nsexec: %s\n"
                 "sbx-nsexec is started by sbx-supervisor with its control socket at fd 3;\n"
                 "run 'sbx-nsexec --help' for what it accepts on the command line.\n",
                 st.message().c_str());
    return 2;
  }
  // From here fd 3 is the control socket: every failure is reported on it. First, on an older
  // kernel, the feature it lacks and the version that has it, before anything uses one.
  if (auto missing = sbx::kernel::first_missing()) {
    sbx::launch::fail(sbx::Status(sbx::Step::kCheckInvocation, ENOSYS,
                                  "this kernel lacks " + std::string(missing->name) + " (Linux " +
                                      std::string(missing->version) + "); sbx needs Linux " +
                                      std::string(sbx::kernel::kMinimumVersion) + " or newer"));
  }
  if (sbx::Status st = sbx::fds::close_inherited_fds(); !st.ok()) sbx::launch::fail(st);
  // Not ptrace-attachable or dumpable while privileged (the exec of the VMM resets this).
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    sbx::launch::fail(sbx::Status(sbx::Step::kCheckInvocation, errno, "PR_SET_DUMPABLE"));
  }
  reset_signals();
  clearenv();
  umask(077);
  if (chdir("/") != 0) {
    sbx::launch::fail(sbx::Status(sbx::Step::kCheckInvocation, errno, "chdir /"));
  }
  // CAP_AUDIT_WRITE is not checked here: without it the audit records go to syslog, and
  // only a policy with `audit = required` refuses the launch (step write_audit).
  if (!sbx::caps::has_effective(CAP_SYS_ADMIN)) {
    sbx::launch::fail(sbx::Status(sbx::Step::kCheckInvocation, EPERM,
                                  "no cap_sys_admin: the helper needs "
                                  "'setcap cap_sys_admin,cap_audit_write+ep' on its binary"));
  }
  sbx::launch::run(kPolicyPath, parent_at_entry);
}
