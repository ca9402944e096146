// SPDX-License-Identifier: Apache-2.0
#include "supervisor/notify.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace sbx::supervisor {

SystemdNotifier SystemdNotifier::from_environment() {
  SystemdNotifier n;
  const char* env = std::getenv("NOTIFY_SOCKET");
  if (env == nullptr) return n;
  std::string address = env;
  unsetenv("NOTIFY_SOCKET");
  if (address.empty() || address.size() >= sizeof(sockaddr_un::sun_path) ||
      (address[0] != '/' && address[0] != '@')) {
    return n;
  }
  n.address_ = address;
  n.fd_.reset(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  return n;
}

void SystemdNotifier::send(const std::string& text) const {
  if (!fd_) return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, address_.data(), address_.size());
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';
  const socklen_t len =
      static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + address_.size());
  (void)!sendto(fd_.get(), text.data(), text.size(), MSG_NOSIGNAL | MSG_DONTWAIT,
                reinterpret_cast<sockaddr*>(&addr), len);
}

}  // namespace sbx::supervisor
