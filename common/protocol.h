// SPDX-License-Identifier: Apache-2.0
// The wire protocol between sbx-supervisor and sbx-nsexec over a SOCK_SEQPACKET socketpair:
// one datagram per message, a versioned header, then tag-length-value fields. The byte layout
// is in docs/protocol.md. Decoding is bounds-checked and refuses anything it does not know.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "common/status.h"
#include "common/unique_fd.h"

namespace sbx::protocol {

inline constexpr uint32_t kMagic = 0x31584253;  // "SBX1" as little-endian bytes
inline constexpr uint16_t kVersion = 1;
inline constexpr size_t kHeaderSize = 16;
inline constexpr size_t kFieldHeaderSize = 6;

// Hard limits. The decoder refuses input beyond them before allocating for it.
inline constexpr size_t kMaxMessageSize = 64 * 1024;
inline constexpr size_t kMaxStringSize = 4096;
inline constexpr size_t kMaxArgs = 64;
inline constexpr size_t kMaxEnv = 64;
inline constexpr size_t kMaxLinks = 16;
inline constexpr size_t kMaxPassedFds = 16;
// Passed fds land at these numbers in the VMM; 0-2 are stdio, 3 is the control socket.
inline constexpr int kMinPassedFdTarget = 4;
inline constexpr int kMaxPassedFdTarget = 255;

enum class MessageType : uint16_t {
  kLaunch = 1,     // supervisor -> helper
  kError = 2,      // helper -> supervisor, then the helper exits
  kPidReport = 3,  // helper -> supervisor, PID-namespace launches only
};

enum class LaunchTag : uint16_t {
  kId = 1,
  kVmm = 2,
  kArg = 3,
  kEnv = 4,
  kSandboxDir = 5,
  kNetns = 6,
  kLink = 7,
  kFlags = 8,
  kPassFd = 9,
};

enum class ErrorTag : uint16_t { kStep = 1, kErrno = 2, kDetail = 3 };
enum class PidTag : uint16_t { kPid = 1 };

inline constexpr uint32_t kFlagPidNamespace = 1u << 0;
inline constexpr uint32_t kFlagPropagationSlave = 1u << 1;
inline constexpr uint32_t kKnownFlags = kFlagPidNamespace | kFlagPropagationSlave;

struct Link {
  std::string name;    // a single path component inside the sandbox dir
  std::string target;  // absolute path the link points to
  bool operator==(const Link&) const = default;
};

struct LaunchRequest {
  std::string id;
  std::string vmm;                // absolute path; argv[0]
  std::vector<std::string> args;  // argv[1..]
  std::vector<std::string> env;   // NAME=VALUE, the VMM's whole environment
  std::string sandbox_dir;
  std::optional<std::string> netns;
  std::vector<Link> links;
  bool pid_namespace = false;
  bool propagation_slave = false;
  // Target fd numbers for the fds sent with the message (SCM_RIGHTS), in the same order.
  std::vector<int> pass_fd_targets;
  bool operator==(const LaunchRequest&) const = default;
};

struct ErrorReport {
  Step step = Step::kCheckInvocation;
  int err = 0;
  std::string detail;
  bool operator==(const ErrorReport&) const = default;
};

struct PidReport {
  pid_t pid = 0;  // the VMM's pid in the supervisor's PID namespace
  bool operator==(const PidReport&) const = default;
};

using Message = std::variant<LaunchRequest, ErrorReport, PidReport>;

// Encoding fails (Step::kReadRequest is not used here: kValidateRequest) when a field is over
// a limit, so a request the helper would refuse is never sent.
Result<std::vector<uint8_t>> encode(const LaunchRequest& request);
std::vector<uint8_t> encode(const ErrorReport& report);  // detail is truncated to the limit
std::vector<uint8_t> encode(const PidReport& report);

// Decodes one whole datagram. Refuses: short or oversize input, bad magic, unknown version or
// type, nonzero reserved bits, length mismatch, unknown tags, duplicate single-valued tags,
// missing required tags, over-limit strings or counts, NUL inside strings, trailing bytes.
// Failures carry `step` so each side names its own step, errno EPROTO/EMSGSIZE/E2BIG.
Result<Message> decode(std::span<const uint8_t> bytes, Step step);

// One received datagram and the fds that came with it (close-on-exec).
struct Datagram {
  std::vector<uint8_t> bytes;
  std::vector<UniqueFd> fds;
  bool eof = false;  // the peer closed its end; bytes and fds are empty
};

// Sends one message with optional fds (SCM_RIGHTS). Retries EINTR.
Status send_datagram(int sock, std::span<const uint8_t> bytes, std::span<const int> fds, Step step);

// Receives one datagram, waiting at most timeout_ms (-1: forever). Refuses truncated data or
// control messages (closing any fds that did arrive) and more than max_fds fds.
Result<Datagram> receive_datagram(int sock, int timeout_ms, size_t max_fds, Step step);

}  // namespace sbx::protocol
