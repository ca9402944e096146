// SPDX-License-Identifier: Apache-2.0
// `sbx-supervisor doctor`: whether this host and this user can run sandboxes, one check per
// line, each OK or the problem and the command that fixes it, as text or as one JSON object.
// It reads and probes only: it changes nothing on the host.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace sbx::supervisor {

struct DoctorOptions {
  std::string helper_path;
  std::optional<std::string> cgroup_parent;  // checked when given
};

enum class CheckStatus {
  kOk,
  kWarn,  // works without it, with less (e.g. no on-demand restore, no auditd log)
  kFail,
};

struct DoctorCheck {
  std::string name;  // stable key, e.g. "helper.capabilities", "dev.kvm"
  CheckStatus status = CheckStatus::kOk;
  bool needed = false;  // a launch cannot work without it
  std::string detail;   // what was found
  std::string fix;      // the command that fixes it; empty when OK
};

// Runs every check as the calling user.
std::vector<DoctorCheck> run_doctor_checks(const DoctorOptions& options);

// True when no needed check failed: `doctor` exits 0, else 1.
bool doctor_passed(const std::vector<DoctorCheck>& checks);

// One line per check: "OK    name: detail" or "FAIL  name: detail\n      fix: command".
std::string doctor_text(const std::vector<DoctorCheck>& checks);

// {"ok": bool, "checks": [{"name", "status": "ok|warn|fail", "needed", "detail", "fix"}]}
std::string doctor_json(const std::vector<DoctorCheck>& checks);

}  // namespace sbx::supervisor
