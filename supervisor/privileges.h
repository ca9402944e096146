// SPDX-License-Identifier: Apache-2.0
// The supervisor holds no privilege: it drops any capability it was started with and refuses
// to go on when it cannot, and refuses uid 0 unless told --allow-root.
#pragma once

#include <string>

namespace sbx::supervisor {

// Empty string when the process now holds no capability in any set; else why not.
std::string drop_all_capabilities();

}  // namespace sbx::supervisor
