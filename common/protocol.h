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
inline constexpr size_t kMaxDevices = 16;
inline constexpr size_t kMaxReadOnly = 32;
inline constexpr size_t kMaxReadWrite = 16;
// Passed fds land at these numbers in the VMM; 0-2 are stdio, 3 is the control socket.
inline constexpr int kMinPassedFdTarget = 4;
inline constexpr int kMaxPassedFdTarget = 255;
// The helper executes the VMM from this fd number, and the VMM's hard RLIMIT_NOFILE is at most
// this (helper/seccomp_rules.h says why). The caller's own hard limit must be above it:
// `doctor` checks it.
inline constexpr int kVmmExecFd = 4095;

enum class MessageType : uint16_t {
  kLaunch = 1,       // supervisor -> helper
  kError = 2,        // helper -> supervisor, then the helper exits
  kPidReport = 3,    // helper -> supervisor, PID-namespace launches only
  kConfinement = 4,  // helper -> supervisor, just before exec: the layers applied
  kVmmStarted = 5,   // PID-namespace init -> supervisor: the VMM was executed (its pidfd)
  kVmmExit = 6,      // PID-namespace init -> supervisor: the VMM's own wait status
  kStartedAck = 7,   // supervisor -> PID-namespace init: VMM_STARTED's pidfd was read
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
  kDevice = 10,        // files.devices
  kReadOnly = 11,      // files.read_only
  kReadWrite = 12,     // files.read_write
  kApiSocketDir = 13,  // the directory of the VMM's API socket (with files)
};

enum class ErrorTag : uint16_t { kStep = 1, kErrno = 2, kDetail = 3 };
enum class PidTag : uint16_t { kPid = 1 };
enum class ConfinementTag : uint16_t { kLandlockAbi = 1 };
enum class VmmExitTag : uint16_t { kStatus = 1 };

inline constexpr uint32_t kFlagPidNamespace = 1u << 0;
inline constexpr uint32_t kFlagPropagationSlave = 1u << 1;
// The request declares `files` (possibly all empty): the VMM gets filesystem access only to
// them, the sandbox dir, the images and the API socket's directory.
inline constexpr uint32_t kFlagFiles = 1u << 2;
// The VMM sees only its jail: `files`, the sandbox dir, the images, the API socket's dir, /dev
// basics and /proc, at their host paths, after pivot_root. Implies kFlagFiles.
inline constexpr uint32_t kFlagJail = 1u << 3;
inline constexpr uint32_t kKnownFlags =
    kFlagPidNamespace | kFlagPropagationSlave | kFlagFiles | kFlagJail;

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
  // `files`: what the VMM may use beyond the sandbox dir, the images and the API socket's dir.
  bool files = false;
  bool jail = false;
  std::vector<std::string> devices;     // character devices directly under /dev
  std::vector<std::string> read_only;   // root-owned paths the policy lists
  std::vector<std::string> read_write;  // caller-owned dirs directly under a sandbox root
  std::optional<std::string> api_socket_dir;
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

struct ConfinementReport {
  uint32_t landlock_abi = 0;  // the Landlock ABI the layer was built for; 0: no layer
  bool operator==(const ConfinementReport&) const = default;
};

// Sent by the namespace init once the VMM's exec succeeded, with one fd: a pidfd of the VMM.
struct VmmStarted {
  bool operator==(const VmmStarted&) const = default;
};

// Sent by the namespace init when the VMM exits, before the init itself exits.
struct VmmExit {
  uint32_t status = 0;  // waitpid() status of the VMM
  bool operator==(const VmmExit&) const = default;
};

// Sent by the supervisor once it has read the VMM's pid from VMM_STARTED's pidfd: until then
// the init does not reap the VMM, whose pid would otherwise be gone (a VMM that exits at once).
struct StartedAck {
  bool operator==(const StartedAck&) const = default;
};

using Message = std::variant<LaunchRequest, ErrorReport, PidReport, ConfinementReport, VmmStarted,
                             VmmExit, StartedAck>;

// Where a value sits in an encoded message, so a message encoded before a fork can be
// completed after it without allocating: VMM_EXIT's status, ERROR's errno.
inline constexpr size_t kVmmExitStatusOffset = kHeaderSize + kFieldHeaderSize;
inline constexpr size_t kErrorErrnoOffset = kHeaderSize + kFieldHeaderSize + 2 + kFieldHeaderSize;
// Writes `value` little-endian at `offset` (bounds-checked: nothing is written past the end).
void patch_u32(std::span<uint8_t> bytes, size_t offset, uint32_t value);

// Encoding fails (Step::kReadRequest is not used here: kValidateRequest) when a field is over
// a limit, so a request the helper would refuse is never sent.
Result<std::vector<uint8_t>> encode(const LaunchRequest& request);
std::vector<uint8_t> encode(const ErrorReport& report);  // detail is truncated to the limit
std::vector<uint8_t> encode(const PidReport& report);
std::vector<uint8_t> encode(const ConfinementReport& report);
std::vector<uint8_t> encode(const VmmStarted& report);
std::vector<uint8_t> encode(const VmmExit& report);
std::vector<uint8_t> encode(const StartedAck& ack);

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
