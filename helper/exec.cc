// SPDX-License-Identifier: Apache-2.0
#include "helper/exec.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "helper/paths.h"
#include "helper/seccomp_rules.h"

namespace sbx::exec {

Result<Vmm> open_vmm(const std::string& path) {
  auto fd = paths::open_root_owned(path, O_PATH, Step::kOpenVmm);
  if (!fd.ok()) return fd.status();
  struct stat st;
  if (fstat(fd.value().get(), &st) != 0) return Status(Step::kOpenVmm, errno, "fstat " + path);
  if (!S_ISREG(st.st_mode)) return Status(Step::kOpenVmm, EACCES, path + " is not a regular file");
  // The helper's capability does not bypass DAC, so this is the caller's own permission.
  if (syscall(SYS_faccessat2, fd.value().get(), "", X_OK, AT_EMPTY_PATH | AT_EACCESS) != 0) {
    return Status(Step::kOpenVmm, errno, path + " is not executable by the caller");
  }
  return Vmm{fd.take(), st.st_dev, st.st_ino};
}

Result<ExecPlan> prepare_exec(const Vmm& vmm, const protocol::LaunchRequest& request) {
  struct stat st;
  if (fstat(vmm.fd.get(), &st) != 0) {
    return Status(Step::kExecVmm, errno, "fstat the VMM fd before execveat");
  }
  if (!S_ISREG(st.st_mode) || st.st_dev != vmm.dev || st.st_ino != vmm.ino) {
    return Status(Step::kExecVmm, EBADF,
                  "the VMM fd no longer names the file checked at open_vmm (" + request.vmm + ")");
  }
  if (vmm.fd.get() != seccomp::kExecFd) {
    return Status(Step::kExecVmm, EBADF,
                  "the VMM fd is not at " + std::to_string(seccomp::kExecFd) +
                      ", the only fd the filter lets execveat use");
  }
  ExecPlan plan;
  plan.fd = vmm.fd.get();
  plan.argv.push_back(const_cast<char*>(request.vmm.c_str()));
  for (const auto& a : request.args) plan.argv.push_back(const_cast<char*>(a.c_str()));
  plan.argv.push_back(nullptr);
  for (const auto& e : request.env) plan.envp.push_back(const_cast<char*>(e.c_str()));
  plan.envp.push_back(nullptr);
  return plan;
}

void exec_prepared(const ExecPlan& plan) {
  // Every argument a full long: the filter compares the fd and the flags on all 64 bits, and
  // a variadic int leaves the upper half of its register undefined.
  syscall(SYS_execveat, static_cast<long>(plan.fd), "", plan.argv.data(), plan.envp.data(),
          static_cast<long>(AT_EMPTY_PATH));
}

Status exec_vmm(const Vmm& vmm, const protocol::LaunchRequest& request) {
  auto plan = prepare_exec(vmm, request);
  if (!plan.ok()) return plan.status();
  exec_prepared(plan.value());
  return Status(Step::kExecVmm, errno, "execveat " + request.vmm);
}

int exit_code_for(const Status& st) {
  if (st.step() == Step::kOpenVmm || st.step() == Step::kExecVmm) {
    if (st.err() == ENOENT) return 127;
    if (st.err() == EACCES || st.err() == ENOEXEC) return 126;
  }
  return 125;
}

}  // namespace sbx::exec
