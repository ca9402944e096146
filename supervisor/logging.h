// SPDX-License-Identifier: Apache-2.0
// The supervisor's log: Boost.Log, human lines on stderr by default or one JSON object per
// line (stable keys: ts, level, id, msg) with --log-format json.
#pragma once

#include <string>

namespace sbx::supervisor {

enum class LogFormat { kText, kJson };

void init_logging(LogFormat format);

void log_info(const std::string& id, const std::string& message);
void log_warning(const std::string& id, const std::string& message);
void log_error(const std::string& id, const std::string& message);

}  // namespace sbx::supervisor
