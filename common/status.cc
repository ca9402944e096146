// SPDX-License-Identifier: Apache-2.0
#include "common/status.h"

#include <cstring>

namespace sbx {

std::string Status::message() const {
  if (ok()) return "ok";
  std::string out(step_name(step_));
  if (!detail_.empty()) {
    out += ": ";
    out += detail_;
  }
  if (err_ != 0) {
    out += ": ";
    out += std::strerror(err_);
  }
  return out;
}

}  // namespace sbx
