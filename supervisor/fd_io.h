// SPDX-License-Identifier: Apache-2.0
// Whole reads and writes on an fd, through EINTR and short counts: the one loop the
// supervisor's file and pipe code shares.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace sbx::supervisor {

// Everything up to EOF; nullopt on an error (errno set) or past `limit` bytes.
std::optional<std::string> read_all(int fd, size_t limit);

// All of `text`, or false (errno set; EIO for a write that took nothing).
bool write_all(int fd, std::string_view text);

}  // namespace sbx::supervisor
