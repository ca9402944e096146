// SPDX-License-Identifier: Apache-2.0
// The graceful stop requests of the VMM kinds, over the VMM's API unix socket: HTTP/1.1 for
// Firecracker and Cloud Hypervisor, QMP for QEMU. Every call has a hard deadline, handles short
// reads and writes, and never blocks past it: the stop ladder's budget is never overrun.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "supervisor/spec.h"

namespace sbx::supervisor {

struct ApiResult {
  bool ok = false;
  std::string detail;    // what the VMM answered, or why the request failed
  bool refused = false;  // the socket is not the sandbox's: nothing was sent
};

// Every call reaches the VMM's API socket only as a socket (no symlink anywhere in its path)
// served by a process in the sandbox's session `session` (the VMM's pid, or with a PID
// namespace its init's: every process of the sandbox has it): a VMM can swap its socket for
// a symlink to a sibling's, or bind a socket of its own elsewhere, and neither readiness nor
// a stop request may land outside its sandbox. A refused socket gets nothing sent; `detail`
// says why.

// Firecracker: PUT /actions {"action_type":"SendCtrlAltDel"}.
// Cloud Hypervisor: PUT /api/v1/vmm.shutdown.
// QEMU: the QMP greeting, qmp_capabilities, then `quit` or `system_powerdown`.
// Generic: nothing to send (ok = false, "no graceful request for generic").
ApiResult send_graceful_stop(const Spec& spec, pid_t session, int timeout_ms);

// Readiness: the socket accepts a connection and is served from inside the sandbox.
bool api_socket_accepts(const std::string& socket_path, pid_t session, int timeout_ms,
                        std::string* why);

// One HTTP/1.1 request over a unix socket; ok when the status is 2xx. Exposed for tests.
ApiResult http_request(const std::string& socket_path, pid_t session, const std::string& method,
                       const std::string& path, const std::string& body, int timeout_ms);

// The QMP exchange; ok when `command` got a "return". Exposed for tests.
ApiResult qmp_command(const std::string& socket_path, pid_t session, const std::string& command,
                      int timeout_ms);

}  // namespace sbx::supervisor
