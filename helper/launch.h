// SPDX-License-Identifier: Apache-2.0
// The helper's launch: read one request from the control socket, run the containment
// sequence, exec the VMM. The one function that lists the whole sequence lives here.
#pragma once

#include <sys/types.h>

#include <string>

#include "common/status.h"

namespace sbx::launch {

// Preconditions: single-threaded; fd 3 checked by fds::check_control_socket; every other fd
// above 3 closed. Never returns: execs the VMM, or reports an ERROR on fd 3 and exits with
// 127 (VMM not found), 126 (VMM not executable) or 125 (any other failure).
[[noreturn]] void run(const std::string& policy_path, pid_t parent_at_entry);

// Reports `st` as an ERROR on fd 3 and on stderr, then exits with the code above.
[[noreturn]] void fail(const Status& st);

}  // namespace sbx::launch
