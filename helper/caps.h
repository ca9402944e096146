// SPDX-License-Identifier: Apache-2.0
// Capabilities: the helper holds cap_sys_admin and cap_audit_write (file capabilities) until the
// VMM's exec, and leaves the VMM with none: effective, permitted, inheritable, ambient, and the
// bounding set (plus locked securebits) whenever the helper holds CAP_SETPCAP, i.e. when root
// called it.
#pragma once

#include "common/status.h"

namespace sbx::caps {

// True if `cap` (a CAP_* number) is in the effective set.
bool has_effective(int cap);

// Empties every capability set it can and verifies the result with capget.
Status drop_all();

// PR_SET_NO_NEW_PRIVS: no exec after this can gain privilege (setuid bits, file caps).
Status set_no_new_privs();

}  // namespace sbx::caps
