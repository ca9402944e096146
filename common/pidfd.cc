// SPDX-License-Identifier: Apache-2.0
#include "common/pidfd.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <string>
#include <string_view>

#include "common/unique_fd.h"

namespace sbx {

pid_t pid_of_pidfd(int pidfd) {
  const std::string path = "/proc/self/fdinfo/" + std::to_string(pidfd);
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return -1;
  char buf[1024];
  size_t len = 0;
  while (len < sizeof(buf)) {
    ssize_t n = read(fd.get(), buf + len, sizeof(buf) - len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    len += static_cast<size_t>(n);
  }
  std::string_view text(buf, len);
  while (!text.empty()) {
    const size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view() : text.substr(eol + 1);
    if (!line.starts_with("Pid:")) continue;
    line.remove_prefix(4);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    long pid = -1;
    auto [ptr, ec] = std::from_chars(line.data(), line.data() + line.size(), pid);
    return ec == std::errc() ? static_cast<pid_t>(pid) : -1;
  }
  return -1;
}

}  // namespace sbx
