// SPDX-License-Identifier: Apache-2.0
// Reading a pidfd, for the helper's callers (the supervisor and the test driver); the helper
// itself never needs it.
#pragma once

#include <sys/types.h>

namespace sbx {

// The pid a pidfd (VMM_STARTED's) refers to, in the calling process's PID namespace: the
// "Pid:" line of /proc/self/fdinfo/FD. -1 when it cannot be read or the process is gone.
pid_t pid_of_pidfd(int pidfd);

}  // namespace sbx
