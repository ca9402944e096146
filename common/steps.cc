// SPDX-License-Identifier: Apache-2.0
#include "common/steps.h"

#include <array>
#include <utility>

namespace sbx {
namespace {

constexpr std::array<std::pair<Step, std::string_view>, 29> kStepNames = {{
    {Step::kCheckInvocation, "check_invocation"},
    {Step::kReadRequest, "read_request"},
    {Step::kLoadPolicy, "load_policy"},
    {Step::kValidateRequest, "validate_request"},
    {Step::kOpenVmm, "open_vmm"},
    {Step::kSetsid, "setsid"},
    {Step::kParentDeathSignal, "parent_death_signal"},
    {Step::kJoinNetns, "join_netns"},
    {Step::kUnshare, "unshare"},
    {Step::kForkPidNamespace, "fork_pid_namespace"},
    {Step::kMakeMountsPrivate, "make_mounts_private"},
    {Step::kRemountSys, "remount_sys"},
    {Step::kBindEtcNetns, "bind_etc_netns"},
    {Step::kMountProc, "mount_proc"},
    {Step::kMakeSandboxDir, "make_sandbox_dir"},
    {Step::kMountTmpfs, "mount_sandbox_tmpfs"},
    {Step::kCreateLinks, "create_links"},
    {Step::kSetRlimits, "set_rlimits"},
    {Step::kDropCapabilities, "drop_capabilities"},
    {Step::kNoNewPrivs, "no_new_privs"},
    {Step::kInstallSeccomp, "install_seccomp"},
    {Step::kChdirSandbox, "chdir_sandbox"},
    {Step::kPrepareFds, "prepare_fds"},
    {Step::kExecVmm, "exec_vmm"},
    {Step::kWriteAudit, "write_audit"},
    {Step::kLandlock, "landlock"},
    {Step::kBuildJail, "build_jail"},
    {Step::kPivotRoot, "pivot_root"},
    {Step::kForkVmm, "fork_vmm"},
}};

}  // namespace

std::string_view step_name(Step step) {
  for (const auto& [s, name] : kStepNames) {
    if (s == step) return name;
  }
  return "unknown_step";
}

std::optional<Step> step_from_code(uint16_t code) {
  for (const auto& [s, name] : kStepNames) {
    if (static_cast<uint16_t>(s) == code) return s;
  }
  return std::nullopt;
}

std::optional<Step> step_from_name(std::string_view wanted) {
  for (const auto& [s, name] : kStepNames) {
    if (name == wanted) return s;
  }
  return std::nullopt;
}

}  // namespace sbx
