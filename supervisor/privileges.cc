// SPDX-License-Identifier: Apache-2.0
#include "supervisor/privileges.h"

#include <cap-ng.h>
#include <sys/prctl.h>

namespace sbx::supervisor {

std::string drop_all_capabilities() {
  capng_get_caps_process();
  if (capng_have_capabilities(CAPNG_SELECT_CAPS) == CAPNG_NONE &&
      prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, 0, 0, 0) <= 0) {
    return {};
  }
  prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  capng_clear(CAPNG_SELECT_BOTH);
  if (capng_apply(CAPNG_SELECT_CAPS) != 0) return "capset failed";
  capng_get_caps_process();
  if (capng_have_capabilities(CAPNG_SELECT_CAPS) != CAPNG_NONE) {
    return "capabilities remain in the effective or permitted set";
  }
  return {};
}

}  // namespace sbx::supervisor
