// SPDX-License-Identifier: Apache-2.0
// A DOUBLE of the Firecracker or Cloud Hypervisor API (neither is packaged for Debian, so the
// tests cannot run the real ones). Built twice: as `firecracker-double` (SBX_DOUBLE_FIRECRACKER)
// accepting `--api-sock SOCK`, and as `cloud-hypervisor-double` accepting
// `--api-socket path=SOCK`. It serves one HTTP/1.1 endpoint on that socket: the kind's shutdown
// request (PUT /actions {"action_type":"SendCtrlAltDel"}, or PUT /api/v1/vmm.shutdown), answers
// 204 and exits 0. Every request line and body is appended to the file named by the
// SBX_DOUBLE_RECORD environment variable; its argv goes there first. With
// SBX_DOUBLE_IGNORE_SHUTDOWN=1 it answers the request but keeps running (for the signal
// fallback). SIGTERM ends it with status 143 by the default action.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

#ifdef SBX_DOUBLE_FIRECRACKER
constexpr const char* kName = "firecracker-double";
constexpr const char* kShutdownPath = "/actions";
#else
constexpr const char* kName = "cloud-hypervisor-double";
constexpr const char* kShutdownPath = "/api/v1/vmm.shutdown";
#endif

void record(const std::string& line) {
  const char* path = std::getenv("SBX_DOUBLE_RECORD");
  if (path == nullptr) return;
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return;
  std::string l = line + "\n";
  (void)!write(fd, l.data(), l.size());
  close(fd);
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "%s: %s: %s\n", kName, what, std::strerror(errno));
  std::exit(3);
}

// Reads one request (headers plus Content-Length body); false on EOF or garbage.
bool read_request(int fd, std::string* request_line, std::string* body) {
  std::string buf;
  char chunk[1024];
  size_t header_end;
  while ((header_end = buf.find("\r\n\r\n")) == std::string::npos) {
    ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n <= 0 || buf.size() > 65536) return false;
    buf.append(chunk, static_cast<size_t>(n));
  }
  *request_line = buf.substr(0, buf.find("\r\n"));
  size_t length = 0;
  size_t cl = buf.find("Content-Length:");
  if (cl != std::string::npos && cl < header_end)
    length = std::strtoul(buf.c_str() + cl + 15, nullptr, 10);
  *body = buf.substr(header_end + 4);
  while (body->size() < length && length <= 65536) {
    ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n <= 0) return false;
    body->append(chunk, static_cast<size_t>(n));
  }
  return true;
}

void respond(int fd, const char* status) {
  std::string r = std::string("HTTP/1.1 ") + status + "\r\nContent-Length: 0\r\n\r\n";
  (void)!write(fd, r.data(), r.size());
}

}  // namespace

int main(int argc, char** argv) {
  std::string sock;
  std::string all_args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    all_args += (i > 1 ? " " : "") + a;
#ifdef SBX_DOUBLE_FIRECRACKER
    if (a == "--api-sock" && i + 1 < argc) sock = argv[i + 1];
#else
    if (a == "--api-socket" && i + 1 < argc && std::strncmp(argv[i + 1], "path=", 5) == 0) {
      sock = argv[i + 1] + 5;
    }
#endif
  }
  record("argv " + all_args);
  if (sock.empty()) {
    std::fprintf(stderr, "%s: no API socket flag\n", kName);
    return 2;
  }
  int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) die("socket");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (sock.size() >= sizeof(addr.sun_path)) return 2;
  std::memcpy(addr.sun_path, sock.c_str(), sock.size());
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) die("bind");
  if (listen(listener, 8) != 0) die("listen");
  const bool ignore_shutdown = std::getenv("SBX_DOUBLE_IGNORE_SHUTDOWN") != nullptr;
  while (true) {
    int conn = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn < 0) continue;
    std::string line, body;
    if (read_request(conn, &line, &body)) {
      record("request " + line + " body " + body);
      bool is_shutdown = line == std::string("PUT ") + kShutdownPath + " HTTP/1.1";
#ifdef SBX_DOUBLE_FIRECRACKER
      is_shutdown = is_shutdown && body.find("\"SendCtrlAltDel\"") != std::string::npos;
#endif
      respond(conn, is_shutdown ? "204 No Content" : "400 Bad Request");
      close(conn);
      if (is_shutdown && !ignore_shutdown)
        return 0;  // the socket file stays, as with the real VMMs
      continue;
    }
    close(conn);
  }
}
