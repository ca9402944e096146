// SPDX-License-Identifier: Apache-2.0
// The timing stub VMM: records CLOCK_MONOTONIC at the top of main, writes it (nanoseconds) to
// the file named by --stamp, then exits, or with --serve SOCK binds an API socket and waits for
// SIGTERM (exit 0), or ignores SIGTERM with --ignore-term. Linked statically, so the floor is
// exec itself, not the dynamic loader.
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

namespace {
void on_term(int) {
  _exit(0);
}
}  // namespace

int main(int argc, char** argv) {
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  const char* stamp = nullptr;
  const char* serve = nullptr;
  bool ignore_term = false;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--stamp") == 0 && i + 1 < argc)
      stamp = argv[++i];
    else if (strcmp(argv[i], "--serve") == 0 && i + 1 < argc)
      serve = argv[++i];
    else if (strcmp(argv[i], "--ignore-term") == 0)
      ignore_term = true;
  }
  if (stamp != nullptr) {
    int fd = open(stamp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return 3;
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%lld\n",
                     static_cast<long long>(now.tv_sec) * 1000000000LL + now.tv_nsec);
    if (write(fd, buf, static_cast<size_t>(n)) != n) return 3;
    close(fd);
  }
  if (serve == nullptr) return 0;
  signal(SIGTERM, ignore_term ? SIG_IGN : on_term);
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (strlen(serve) >= sizeof(addr.sun_path)) return 3;
  strcpy(addr.sun_path, serve);
  if (s < 0 || bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(s, 64) != 0) {
    return 3;
  }
  while (true) {
    int c = accept4(s, nullptr, nullptr, SOCK_CLOEXEC);
    if (c >= 0) close(c);
  }
}
