// SPDX-License-Identifier: Apache-2.0
// systemd's readiness protocol (sd_notify(3)) without libsystemd: when NOTIFY_SOCKET names a
// datagram socket, `run` sends READY=1 and MAINPID= at `ready`, STATUS= lines as the sandbox
// moves on, and STOPPING=1 when the stop ladder starts.
#pragma once

#include <string>

#include "common/unique_fd.h"

namespace sbx::supervisor {

class SystemdNotifier {
 public:
  // Takes NOTIFY_SOCKET from the environment (and removes it there, so that nothing the
  // supervisor spawns inherits it). Inactive when it is unset or unusable.
  static SystemdNotifier from_environment();

  bool active() const { return fd_.valid(); }
  // One datagram of "KEY=VALUE" lines; failures are ignored, as sd_notify's are.
  void send(const std::string& text) const;

 private:
  UniqueFd fd_;
  std::string address_;  // sun_path; a leading '@' stands for the abstract namespace's NUL
};

}  // namespace sbx::supervisor
